"""OpenAMI store package."""
