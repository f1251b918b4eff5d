"""Shared fixtures: locations of shared data, database URLs (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CALLSENSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real labelled speech beside the repository; tests that need it skip with a reason."""
    if not (SHARED_DATA / "ravdess" / "MANIFEST.csv").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set CALLSENSE_SHARED_DATA)")
    return SHARED_DATA


DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_url() -> str | None:
    """PostgreSQL for the storage tests; set CALLSENSE_TEST_POSTGRES_URL="" to opt out."""
    return os.environ.get("CALLSENSE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database on each backend (PostgreSQL: a throw-away schema)."""
    from callsense.storage.db import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        upgrade(url)
        yield url
        return
    base = _postgres_url()
    if not base:
        pytest.skip("CALLSENSE_TEST_POSTGRES_URL not set")
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL not reachable in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}options=-csearch_path%3D{schema}"
    upgrade(url)
    yield url
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
