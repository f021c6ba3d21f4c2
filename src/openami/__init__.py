"""OpenAMI: open-source Advanced Metering Infrastructure."""

__version__ = "0.1.0"
