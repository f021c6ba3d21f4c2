"""``openami decode``: captured meter messages decoded offline, no database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from openami.cli.base import (
    CliError,
    _run,
    app,
    err,
)
from openami.protocols.decoders import DECODERS

decode_app = typer.Typer(no_args_is_help=True, help="Decode captured meter messages (offline, no database).")
app.add_typer(decode_app, name="decode")


def _hex_option(value: str | None, name: str) -> bytes | None:
    if value is None:
        return None
    from openami.protocols.dlms.errors import DecodeError
    from openami.protocols.dlms.stream import parse_hex_text

    try:
        return parse_hex_text(value)
    except DecodeError as exc:
        raise CliError(f"{name} is not hex: {exc}", 2) from None


def _capture_bytes(file: Path | None, hex_text: str | None) -> bytes:
    """The capture from FILE (hex text or raw binary, whichever it is) or from --hex."""
    from openami.protocols.dlms.errors import DecodeError
    from openami.protocols.dlms.stream import parse_hex_text

    if (file is None) == (hex_text is None):
        raise CliError("give exactly one of FILE or --hex", 2)
    if hex_text is not None:
        data = _hex_option(hex_text, "--hex")
        return data or b""
    assert file is not None
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}", 2) from None
    try:
        return parse_hex_text(raw.decode("ascii"))
    except (UnicodeDecodeError, DecodeError):
        return raw  # not hex text: a binary capture


def _capture_parts(file: Path | None, hex_text: str | None) -> list[bytes]:
    """Several captures from one input: the lines of a hex FILE, or --hex parts separated by commas
    (``full,compact`` as receivers log a meter's telegrams); binary input is one capture."""
    if file is not None and hex_text is None:
        try:
            text = file.read_bytes().decode("ascii")
        except UnicodeDecodeError:
            return [_capture_bytes(file, None)]
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror or exc}", 2) from None
    elif hex_text is not None and file is None:
        text = hex_text
    else:
        raise CliError("give exactly one of FILE or --hex", 2)
    parts = [p for line in text.splitlines() for p in line.split(",") if p.strip() and p.lstrip()[:1] != "#"]
    if not parts:
        raise CliError("no telegram in the input", 2)
    return [_capture_bytes(None, part) for part in parts]


@decode_app.command("dlms")
def decode_dlms(
    file: Annotated[
        Path | None, typer.Argument(help="Capture: hex text or raw bytes (HDLC, wrapper or APDU).")
    ] = None,
    hex_text: Annotated[str | None, typer.Option("--hex", help="The capture as hex instead of FILE.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Block cipher (encryption) key, hex.")] = None,
    auth_key: Annotated[
        str | None,
        typer.Option("--auth-key", help="Authentication key, hex (without it tags are not checked)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print compact JSON on one line.")] = False,
) -> None:
    """Decode DLMS/COSEM push notifications and print them as a JSON list."""

    def go() -> None:
        from openami.protocols.dlms.stream import decode_stream

        data = _capture_bytes(file, hex_text)
        result = decode_stream(
            data,
            encryption_key=_hex_option(key, "--key"),
            authentication_key=_hex_option(auth_key, "--auth-key"),
        )
        if not result.notifications:
            reason = result.errors[0] if result.errors else "no DLMS notification in the input"
            raise CliError(f"undecodable: {reason}", 2)
        for error in result.errors:
            err.print(f"[yellow]warning:[/yellow] {escape(error)}", soft_wrap=True)
        rendered = [n.to_dict() for n in result.notifications]
        if as_json:
            print(json.dumps(rendered, ensure_ascii=False))
        else:
            print(json.dumps(rendered, ensure_ascii=False, indent=1))

    _run(go)


def _decode_command(name: str) -> None:
    """``openami decode <name>``: one command per offline decoder of :mod:`openami.protocols.decoders`."""

    def command(
        file: Annotated[
            Path | None, typer.Argument(help="Capture: hex text, a text telegram or raw bytes.")
        ] = None,
        hex_text: Annotated[
            str | None, typer.Option("--hex", help="The capture as hex instead of FILE.")
        ] = None,
        key: Annotated[
            str | None, typer.Option("--key", help="Decryption key, hex (where it applies).")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print compact JSON on one line.")] = False,
    ) -> None:
        def go() -> None:
            from openami.protocols.decoders import UndecodableInput, decoder

            found = decoder(name)
            try:
                if found.sequence is None:
                    results = [found.decode(_capture_bytes(file, hex_text), _hex_option(key, "--key"))]
                else:
                    results = found.decode_sequence(_capture_parts(file, hex_text), _hex_option(key, "--key"))
            except UndecodableInput as exc:
                raise CliError(f"undecodable: {exc}", 2) from None
            for result in results:  # several telegrams: one JSON document each, in input order
                print(json.dumps(result, ensure_ascii=False, indent=None if as_json else 1))

        _run(go)

    command.__doc__ = f"Decode a {name} capture and print it as JSON."
    decode_app.command(name)(command)


for _name in DECODERS:
    _decode_command(_name)
