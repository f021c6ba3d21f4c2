"""The gateway configuration: the example file loads, every mistake is one error naming its field, and
the head-end's CONFIG costs only the meters it gets wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from openami.edge.config import GatewayConfigError, load_config, parse_config, remote_meters
from openami.edge.meters import ENCRYPTED_P1_SKIPPED, build_targets
from openami.protocols.edge import Compression

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "gateway.toml"
KEY_HEX = "0f" * 32

BASE = f"""
id = "gw-1"
tenant = "acme"
archive = "data/archive.db"

[uplink]
url = "mqtt://127.0.0.1:1883"
key = "{KEY_HEX}"

[[meters]]
serial = "MB-1"
protocol = "mbus"
address = "mbus+tcp://127.0.0.1:10001?primary=1"

[[meters]]
serial = "SDM-1"
protocol = "modbus"
model = "eastron-sdm630"
address = "modbus+tcp://127.0.0.1:502?unit=1"
"""


def test_the_example_file_loads(tmp_path: Path) -> None:
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "link.key").write_text(KEY_HEX + "\n")
    path = tmp_path / "gateway.toml"
    path.write_text(EXAMPLE.read_text().replace("/etc/openami-gateway/", f"{tmp_path}/"))
    config = load_config(path)
    assert (config.id, config.tenant, config.retention_days, config.poll_interval_s) == (
        "gw-0042",
        "acme",
        45,
        900,
    )
    assert config.compression_code is Compression.ZSTD
    uplink = config.uplink
    assert uplink.tls and (uplink.host, uplink.port) == ("broker.example.net", 8883)
    assert uplink.link_key == bytes.fromhex(KEY_HEX) and uplink.mqtt_password == "s3cret"
    assert "s3cret" not in repr(config) and KEY_HEX not in repr(config)
    protocols = [m.protocol for m in config.meters]
    assert protocols.count("mbus") == 3 and {"modbus", "iec62056-21", "dsmr", "sml", "pulse"} <= set(
        protocols
    )
    targets = build_targets(config.meters, config.tenant)
    counts = [len(targets.mbus), len(targets.modbus), len(targets.iec), len(targets.p1), len(targets.pulse)]
    assert counts == [3, 1, 2, 2, 1]
    assert targets.mbus[2].path == "/dev/ttyUSB0" and targets.iec[0].address == "62056001"
    assert targets.pulse[0].input.weight == 0.001 and targets.skipped == []
    assert config.remote_config_path == Path("/var/lib/openami-gateway/archive.db.config.json")


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "link.key").write_text(KEY_HEX)
    path = tmp_path / "gw.toml"
    path.write_text(BASE.replace(f'key = "{KEY_HEX}"', 'key_file = "keys/link.key"'))
    config = load_config(path)
    assert config.archive == tmp_path / "data" / "archive.db"
    assert config.uplink.key_file == tmp_path / "keys" / "link.key"


@pytest.mark.parametrize(
    ("old", "new", "field", "reason"),
    [
        ('id = "gw-1"', 'id = "gw 1"', "id", "pattern"),
        ('tenant = "acme"', "", "tenant", "required"),
        (
            'archive = "data/archive.db"',
            'archive = "a.db"\npoll_interval = 60',
            "poll_interval",
            "unknown setting",
        ),
        ('archive = "data/archive.db"', 'archive = "a.db"\ncompression = "lz4"', "compression", "'zstd'"),
        ("mqtt://127.0.0.1:1883", "http://127.0.0.1", "uplink.url", "expected mqtt://"),
        ("mqtt://127.0.0.1:1883", "mqtt://gw:pw@127.0.0.1", "uplink.url", "not in the URL"),
        (f'key = "{KEY_HEX}"', 'key = "00"', "uplink.key", "64 hex digits"),
        (f'key = "{KEY_HEX}"', 'key_file = "missing.key"', "uplink.key_file", "no such file"),
        (f'key = "{KEY_HEX}"', "", "uplink.key", "exactly one of"),
        (f'key = "{KEY_HEX}"', f'key = "{KEY_HEX}"\npassword = "x"', "uplink.password", "needs a username"),
        (f'key = "{KEY_HEX}"', f'key = "{KEY_HEX}"\nca_file = "ca.pem"', "uplink.ca_file", "mqtts://"),
        ("primary=1", "primary=251", "meters[0].address", "primary must be 1..250"),
        ("primary=1", "primary=1&secondary=12345678", "meters[0].address", "exactly one of"),
        ('model = "eastron-sdm630"', 'model = "acme-9000"', "meters[1].model", "no Modbus register map"),
        ("?unit=1", "?unit=300", "meters[1].address", "unit must be 0..247"),
        ('protocol = "mbus"', 'protocol = "bacnet"', "meters[0].protocol", "'mbus'"),
        ('serial = "SDM-1"', 'serial = "MB-1"', "meters[1].serial", "already meters[0]"),
    ],
)
def test_each_mistake_names_its_field(tmp_path: Path, old: str, new: str, field: str, reason: str) -> None:
    assert old in BASE
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(GatewayConfigError) as caught:
        parse_config(BASE.replace(old, new, 1), base=tmp_path, source="gw.toml")
    error = caught.value
    assert error.field == field, str(error)
    assert reason in error.reason
    assert str(error).startswith(f"gw.toml: {field}: ") and "\n" not in str(error)
    assert KEY_HEX not in str(error)
    assert isinstance(error, ValueError)


def test_meters_of_every_protocol_are_checked(tmp_path: Path) -> None:
    extra = {
        'protocol = "iec62056-21"\naddress = "iec+tcp://h:4001?baud=1234"': "baud must be one of",
        'protocol = "dsmr"\naddress = "dsmr+tcp://h"': "expected dsmr+tcp://host:port",
        'protocol = "sml"\naddress = "sml+tcp://h:1?encrypted=1"': "unknown option encrypted",
        'protocol = "pulse"\naddress = "pulse+file:///c"': "needs its pulse table",
        'protocol = "pulse"\naddress = "pulse+file://c"\npulse = {channel = "v", weight = 1}': "pulse+file:///",
        'protocol = "mbus"\naddress = "x"\npulse = {channel = "v", weight = 1}': "only pulse meters",
    }
    for body, reason in extra.items():
        text = BASE + f'\n[[meters]]\nserial = "X-1"\n{body}\n'
        with pytest.raises(GatewayConfigError, match="meters\\[2\\]") as caught:
            parse_config(text, base=tmp_path)
        assert reason in caught.value.reason, body


def test_iec_meters_sharing_a_converter_need_device_addresses(tmp_path: Path) -> None:
    text = BASE + "".join(
        f'\n[[meters]]\nserial = "IEC-{i}"\nprotocol = "iec62056-21"\naddress = "iec+tcp://h:4001{q}"\n'
        for i, q in ((1, "?address=1"), (2, ""))
    )
    with pytest.raises(GatewayConfigError) as caught:
        parse_config(text, base=tmp_path)
    assert caught.value.field == "meters[3].address" and "each needs ?address=" in caught.value.reason


def test_bad_toml_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(GatewayConfigError, match="not valid TOML"):
        parse_config("id = ", base=tmp_path)
    with pytest.raises(GatewayConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_a_remote_meter_list_costs_only_its_bad_entries() -> None:
    entries = [
        {"serial": "MB-1", "protocol": "mbus", "address": "mbus+tcp://h:1?primary=1", "medium": "heat"},
        {"serial": "MB-2", "protocol": "mbus", "address": "mbus+tcp://h:1?primary=0"},
        {"serial": "MB-1", "protocol": "mbus", "address": "mbus+tcp://h:1?primary=3"},
        {"serial": "E-1", "protocol": "dsmr", "address": "dsmr+tcp://h:2?encrypted=1"},
        {"protocol": "modbus"},
    ]
    usable, refused = remote_meters(entries)
    assert [m.serial for m in usable] == ["MB-1", "E-1"]  # unknown fields ("medium") are ignored
    assert [serial for serial, _ in refused] == ["MB-2", "MB-1", "meters[4]"]
    assert "primary must be 1..250" in refused[0][1] and refused[1][1] == "serial listed twice"
    targets = build_targets(usable, "acme")
    assert targets.count == 1 and targets.skipped == [("E-1", ENCRYPTED_P1_SKIPPED)]
