"""OpenAMI drivers package."""
