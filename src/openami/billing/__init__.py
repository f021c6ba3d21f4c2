"""OpenAMI billing package."""
