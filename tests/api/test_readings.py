"""GET /channels/{id}/readings: time range, keyset pagination by timestamp, versions, and input rules."""

from __future__ import annotations

from datetime import timedelta

from openami.store.readings import NewReading, ReadingWriter

from .support import T0, World, assert_problem


def _write(world: World, count: int, value: float = 1.0) -> None:
    rows = [NewReading(world.ids["chA1"], T0 + timedelta(minutes=15 * i), value + i) for i in range(count)]
    ReadingWriter(world.context.engine).write("interval", rows)


def _url(world: World, query: str) -> str:
    return f"/channels/{world.ids['chA1']}/readings?{query}"


def test_pages_cover_the_range_in_order(world: World) -> None:
    _write(world, 25)
    query = "start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z&limit=10"
    items: list[dict] = []
    url = _url(world, query)
    while True:
        page = world.get(url).json()
        items += page["items"]
        if page["next_cursor"] is None:
            break
        url = _url(world, f"{query}&cursor={page['next_cursor']}")
    assert [r["value"] for r in items] == [1.0 + i for i in range(25)]
    assert items[0]["ts"] == "2026-03-01T00:00:00Z"
    assert {r["version"] for r in items} == {1}
    assert set(items[0]) == {"channel_id", "ts", "value", "quality", "version", "source", "received_at"}


def test_range_is_half_open_and_offsets_are_honoured(world: World) -> None:
    _write(world, 8)  # 00:00 .. 01:45 UTC
    # 01:00+01:00 is 00:00Z (included); 01:30+01:00 is 00:30Z (excluded).
    page = world.get(_url(world, "start=2026-03-01T01:00:00%2B01:00&end=2026-03-01T01:30:00%2B01:00")).json()
    assert [r["ts"] for r in page["items"]] == ["2026-03-01T00:00:00Z", "2026-03-01T00:15:00Z"]


def test_all_versions(world: World) -> None:
    _write(world, 3)
    _write(world, 3, value=100.0)  # every value changed: a second version each
    query = "start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z"
    latest = world.get(_url(world, query)).json()["items"]
    assert [(r["value"], r["version"]) for r in latest] == [(100.0, 2), (101.0, 2), (102.0, 2)]
    every = world.get(_url(world, query + "&all_versions=true&limit=2")).json()
    assert [(r["value"], r["version"]) for r in every["items"]] == [
        (1.0, 1),
        (100.0, 2),
        (2.0, 1),
        (101.0, 2),
    ]
    assert every["next_cursor"] is not None


def test_bad_ranges_and_cursors_are_422(world: World) -> None:
    for query in (
        "start=2026-03-01T00:00:00&end=2026-03-02T00:00:00Z",  # naive start
        "start=2026-03-01T00:00:00Z&end=2026-03-02",  # a date is not an instant
        "start=2026-03-02T00:00:00Z&end=2026-03-01T00:00:00Z",  # end before start
        "start=2026-03-01T00:00:00Z&end=2026-03-01T00:00:00Z",  # empty range
        "start=yesterday&end=today",
        "end=2026-03-02T00:00:00Z",  # start missing
        "start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z&cursor=%%%",
        "start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z&cursor=aWQ6MTI",  # an id cursor
        "start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z&limit=0",
        "start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z&kind=register",  # kind comes from the channel
    ):
        body = assert_problem(world.get(_url(world, query)), 422)
        assert body["detail"], query
    naive = assert_problem(world.get(_url(world, "start=2026-03-01T00:00:00&end=2026-03-02T00:00:00Z")), 422)
    assert naive["errors"][0]["loc"] == ["query", "start"]
    assert "timezone" in naive["errors"][0]["msg"]


def test_unknown_channel_is_404(world: World) -> None:
    assert_problem(
        world.get("/channels/999999/readings?start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z"), 404
    )
