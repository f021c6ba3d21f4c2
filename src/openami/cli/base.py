"""The command line's shared parts: the Typer apps, the consoles, and how errors become one line.

Commands stay thin: parse, call a service, render. Every OpenAMI error is turned into one clear red line
on stderr and an exit code (2 for bad input or configuration, 1 for a failure while running), never a
traceback, because operators script these commands."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from openami.config import Settings, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="OpenAMI: open-source AMI platform.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
users_app = typer.Typer(no_args_is_help=True, help="Users of a tenant.")
meters_app = typer.Typer(no_args_is_help=True, help="Meters of a tenant.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (JSON output).")
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(meters_app, name="meters")
app.add_typer(bench_app, name="bench")
simulate_app = typer.Typer(no_args_is_help=True, help="Simulated meters speaking the real protocols.")
app.add_typer(simulate_app, name="simulate")

console = Console()
err = Console(stderr=True)
T = TypeVar("T")

DatabaseOption = Annotated[str | None, typer.Option("--database-url", help="Overrides OPENAMI_DATABASE_URL.")]
TenantOption = Annotated[str, typer.Option("--tenant", "-t", help="Tenant slug.")]


class CliError(Exception):
    """A user-facing failure with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _error_code(exc: BaseException) -> int | None:
    """Exit code for an error we know how to explain, None for a bug (which keeps its traceback)."""
    from openami.bus.base import BusError
    from openami.drivers.errors import DriverError
    from openami.security.errors import SecurityError
    from openami.store.engine import StoreError
    from openami.transports.errors import TransportError

    if isinstance(exc, ValidationError | ValueError):
        return 2
    if isinstance(exc, StoreError | BusError | TransportError | SecurityError | DriverError | OSError):
        return 1
    from sqlalchemy.exc import OperationalError

    if isinstance(exc, OperationalError):
        return 1
    return None


@contextlib.contextmanager
def _clean_errors() -> Iterator[None]:
    try:
        yield
    except CliError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(exc.code) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        code = _error_code(exc)
        if code is None:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        err.print(f"[red]error:[/red] {type(exc).__name__}: {escape(message)}", soft_wrap=True)
        raise typer.Exit(code) from None


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"bad setting {'.'.join(map(str, first['loc']))}: {first['msg']}", 2) from None
    from openami.observability.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return settings


def _engine(settings: Settings) -> Any:
    from openami.store.engine import make_engine

    return make_engine(settings.effective_database_url)


def _run(fn: Callable[[], T]) -> T:
    with _clean_errors():
        return fn()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
