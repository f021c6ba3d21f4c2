"""OpenAMI web package."""
