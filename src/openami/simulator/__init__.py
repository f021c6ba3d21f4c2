"""OpenAMI simulator package."""
