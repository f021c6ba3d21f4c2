"""OpenAMI edge package."""
