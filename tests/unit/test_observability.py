"""JSON logs and the Prometheus registry."""

from __future__ import annotations

import json
import logging

from openami.observability.logs import JsonFormatter
from openami.observability.metrics import Metrics


def test_json_log_line_carries_extra_fields_and_exceptions() -> None:
    record = logging.LogRecord("openami.test", logging.WARNING, __file__, 1, "stored %d rows", (5,), None)
    record.tenant = "demo"
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["msg"], line["tenant"]) == (
        "warning",
        "openami.test",
        "stored 5 rows",
        "demo",
    )
    assert line["ts"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exc"]


def test_metrics_exposition_reads_callbacks_at_scrape_time() -> None:
    metrics = Metrics()
    depth = {"value": 3.0}
    totals = {"accepted": 1.0}
    metrics.track_queue("ingest_buffer", lambda: depth["value"])
    metrics.track_counters("openami_test_uplinks", "Test.", "outcome", lambda: totals)
    metrics.readings.labels(kind="interval", outcome="inserted").inc(7)
    depth["value"], totals["accepted"] = 5.0, 4.0
    text, content_type = metrics.exposition()
    body = text.decode()
    assert content_type.startswith("text/plain")
    assert 'openami_queue_depth{queue="ingest_buffer"} 5.0' in body
    assert 'openami_test_uplinks_total{outcome="accepted"} 4.0' in body
    assert 'openami_readings_ingested_total{kind="interval",outcome="inserted"} 7.0' in body


def test_each_platform_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.events.inc(2)
    assert b"openami_events_ingested_total 0.0" in second.exposition()[0]
