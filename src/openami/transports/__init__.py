"""OpenAMI transports package."""
