"""Settings: embedded defaults, environment, TOML file, precedence and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from openami.config import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("OPENAMI_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_embedded_defaults_need_nothing_installed() -> None:
    settings = load_settings()
    assert settings.effective_database_url == "sqlite:///var/openami.sqlite3"
    assert (settings.bus_url, settings.mqtt_url) == ("memory", "embedded")
    assert settings.mqtt_embedded_port != 1883  # Mosquitto's port is often taken on servers


def test_environment_overrides_toml_and_arguments_override_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "openami.toml").write_text(
        'web_port = 9001\nbus_url = "nats://10.0.0.1:4222"\nlog_format = "text"\n'
    )
    monkeypatch.setenv("OPENAMI_WEB_PORT", "9002")
    settings = load_settings()
    assert settings.web_port == 9002  # env beats the file
    assert settings.bus_url == "nats://10.0.0.1:4222"  # from the file
    assert settings.log_format == "text"
    assert load_settings(web_port=9003).web_port == 9003  # explicit beats env
    assert load_settings(web_port=None).web_port == 9002  # None means "not given"


def test_config_file_location_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text('database_url = "postgresql+psycopg://db/openami"\n')
    monkeypatch.setenv("OPENAMI_CONFIG", str(other))
    assert Settings().effective_database_url == "postgresql+psycopg://db/openami"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bus_url", "kafka://broker:9092"),
        ("mqtt_url", "http://broker"),
        ("web_port", 70000),
        ("bus_namespace", "Has.Dots"),
        ("log_format", "xml"),
        ("ingest_batch_rows", 0),
    ],
)
def test_bad_values_are_refused_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**{field: value})
    assert caught.value.errors()[0]["loc"] == (field,)


def test_secrets_directory_supplies_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "openami_database_url").write_text("postgresql+psycopg://openami:s3cret@db/openami\n")
    monkeypatch.setenv("OPENAMI_SECRETS_DIR", str(secrets))
    assert load_settings().database_url == "postgresql+psycopg://openami:s3cret@db/openami"
    monkeypatch.setenv("OPENAMI_DATABASE_URL", "sqlite:///x.sqlite3")
    assert load_settings().database_url == "sqlite:///x.sqlite3"  # the environment still wins
