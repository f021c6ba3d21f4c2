"""`openami`: the command line (Typer + Rich). One module per group of commands; importing them
registers their commands on :data:`app`."""

from openami.cli import (  # noqa: F401 - they register commands
    admin,
    bench,
    command,
    decode,
    gateway,
    gateways,
    jobs,
    simulate,
    simulate_gateways,
    worker,
)
from openami.cli.base import app

__all__ = ["app", "main"]


def main() -> None:
    app()
