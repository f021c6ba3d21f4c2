"""OpenAMI mdm package."""
