"""OpenAMI protocols package."""
