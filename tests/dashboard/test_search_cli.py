"""``callsense calls search`` on SQLite and PostgreSQL: filters, formats, bad input."""

from __future__ import annotations

import csv
import io
import json

from click.testing import CliRunner
from support.dash import seed  # noqa: E402


def run(url: str, *args: str):
    from callsense.cli import main

    return CliRunner().invoke(main, ["calls", "--database-url", url, "search", *args])


def test_calls_search_cli(database_url: str) -> None:
    from callsense.storage.db import make_engine, session_factory

    engine = make_engine(database_url)
    seed(session_factory(engine))
    engine.dispose()

    r = run(database_url, "--agent", "A1", "--format", "json")
    assert r.exit_code == 0, r.output
    assert sorted(c["call_id"] for c in json.loads(r.output)["items"]) == ["c-angry", "c-live"]

    r = run(database_url, "--alerted")
    assert r.exit_code == 0 and r.output.startswith("1 calls") and "c-angry" in r.output

    r = run(
        database_url, "--min-duration", "100", "--sort", "duration_s", "--asc", "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert [row["call_id"] for row in rows] == ["c-angry", "c-old"]

    r = run(database_url, "--from", "2026-13-01")
    assert r.exit_code == 2 and "--from" in r.output
    r = run(database_url, "--sort", "password")
    assert r.exit_code == 2
    r = run(database_url, "--agent", "x' OR 1=1")
    assert r.exit_code == 2
