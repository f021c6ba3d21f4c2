"""The demo: a seeded utility, simulated gateways and the platform, in one command."""
