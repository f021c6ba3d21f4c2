"""OpenAMI api package."""
