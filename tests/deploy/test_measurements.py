"""The sizing measurements in deploy/ run and report consistent numbers (SQLite, PostgreSQL)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "deploy" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_db_growth_measurement(backend: str, tmp_path: Path, postgres_url: str | None) -> None:
    growth = _load("measure_db_growth")
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'growth.db'}"
    else:
        url = postgres_url
        if not url:
            pytest.skip("CALLSENSE_TEST_POSTGRES_URL set to empty: PostgreSQL tests opted out")
    labels = ["angry", "happy", "neutral", "sad"]
    res = growth.measure(url, hours=1, speech=0.25, labels=labels, hop_s=2.0, window_s=3.0)
    # 1800 hops per hour, a quarter of them per speaker, two speakers
    assert res["windows"] == 2 * 450
    assert res["backend"] == backend
    # a window row with two 4-class JSON maps, indexes included: a few hundred bytes
    assert 100 < res["bytes_per_window"] < 2000, res
    if backend == "postgresql":  # the throw-away schema is gone again
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'growth_%'")
            ).scalar()
        engine.dispose()
        assert left == 0
