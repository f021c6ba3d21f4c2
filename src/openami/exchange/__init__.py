"""OpenAMI exchange package."""
