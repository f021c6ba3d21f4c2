"""``openami gateway``: the gateway / data-concentrator agent."""

from __future__ import annotations

import asyncio
import contextlib
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from openami.cli.base import (
    CliError,
    _run,
    app,
)


class LogFormatOption(StrEnum):
    text = "text"
    json = "json"


@app.command()
def gateway(
    config: Annotated[Path, typer.Option("--config", "-c", help="The gateway's TOML configuration file.")],
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    log_format: Annotated[
        LogFormatOption, typer.Option(help="Log lines as text or JSON.")
    ] = LogFormatOption.text,
) -> None:
    """Run the gateway / data-concentrator agent: poll local meters, archive, forward to the head-end."""

    def go() -> None:
        import sqlite3

        from openami.edge.agent import run_gateway
        from openami.edge.config import GatewayConfigError, load_config
        from openami.observability.logs import configure_logging

        try:
            settings = load_config(config)
        except GatewayConfigError as exc:
            raise CliError(f"bad gateway configuration: {exc}", 2) from None
        if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise CliError(f"--log-level: {log_level!r} is not DEBUG, INFO, WARNING or ERROR", 2)
        configure_logging(log_level, log_format.value)
        try:
            asyncio.run(run_gateway(settings))
        except sqlite3.Error as exc:
            raise CliError(f"gateway archive {settings.archive}: {exc}", 1) from None

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)
