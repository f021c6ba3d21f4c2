"""OpenAMI hes package."""
