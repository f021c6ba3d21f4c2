"""OpenAMI observability package."""
