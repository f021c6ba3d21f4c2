"""OpenAMI security package."""
