"""OpenAMI analytics package."""
