"""OpenAMI notify package."""
