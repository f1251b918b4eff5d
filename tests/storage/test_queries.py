"""``callsense calls list|show`` and ``db upgrade`` on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from callsense.storage.cli import calls_group, db_group
from callsense.storage.db import make_engine, session_factory
from callsense.storage.queries import get_call, list_calls, parse_since
from callsense.storage.schema import Call, CallSummary, EmotionWindow, Speaker

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _probs(angry: float) -> dict[str, float]:
    return {"angry": angry, "neutral": 1.0 - angry}


@pytest.fixture
def filled(database_url: str) -> str:
    """Three calls: c-old (yesterday 09:00), c-mid (+2 h, ended, summary), c-new (+5 h)."""
    engine = make_engine(database_url)
    with session_factory(engine).begin() as s:
        for i, (cid, hours) in enumerate([("c-old", 0), ("c-mid", 2), ("c-new", 5)]):
            s.add(
                Call(
                    call_id=cid,
                    started_at=T0 + timedelta(hours=hours),
                    channels=2,
                    agent_id=f"a{i}",
                    customer_id=f"u{i}",
                    queue="billing",
                )
            )
        s.flush()
        s.add_all(
            [
                Speaker(call_id="c-mid", speaker="ch0", role="agent", channel=0),
                Speaker(call_id="c-mid", speaker="ch1", role="customer", channel=1),
            ]
        )
        # inserted out of order on purpose: trajectories come back sorted by start
        for spk, role, start, label, angry in [
            ("ch1", "customer", 4000, "angry", 0.9),
            ("ch1", "customer", 1000, "neutral", 0.2),
            ("ch0", "agent", 2000, "neutral", 0.1),
            ("ch1", "customer", 2500, "uncertain", 0.5),
        ]:
            s.add(
                EmotionWindow(
                    call_id="c-mid",
                    speaker=spk,
                    role=role,
                    start_ms=start,
                    end_ms=start + 3000,
                    label=label,
                    raw_label="angry" if angry >= 0.5 else "neutral",
                    confidence=max(angry, 1 - angry),
                    uncertain=label == "uncertain",
                    probabilities=_probs(angry),
                    smoothed_label="neutral",
                    smoothed_probabilities=_probs(angry / 2),
                )
            )
        s.add(
            CallSummary(
                call_id="c-mid",
                duration_s=12.5,
                anger_share=1 / 3,
                peak_anger=0.9,
                summary={
                    "duration_s": 12.5,
                    "anger_share": 1 / 3,
                    "peak_anger": 0.9,
                    "speakers": {},
                },
            )
        )
        s.get(Call, "c-mid").status = "ended"
    engine.dispose()
    return database_url


def test_list_calls_since_and_limit(filled: str) -> None:
    engine = make_engine(filled)
    with session_factory(engine)() as s:
        assert [r["call_id"] for r in list_calls(s)] == ["c-new", "c-mid", "c-old"]
        since = list_calls(s, since=T0 + timedelta(hours=1))
        assert [r["call_id"] for r in since] == ["c-new", "c-mid"]
        assert [r["call_id"] for r in list_calls(s, limit=1)] == ["c-new"]
        mid = since[1]
        assert mid["duration_s"] == 12.5 and mid["anger_share"] == pytest.approx(0.333, abs=1e-3)
        assert mid["status"] == "ended" and mid["agent_id"] == "a1"
        assert list_calls(s, since=T0 + timedelta(days=1)) == []
        with pytest.raises(ValueError):
            list_calls(s, limit=0)
    engine.dispose()


def test_get_call_groups_trajectories(filled: str) -> None:
    engine = make_engine(filled)
    with session_factory(engine)() as s:
        d = get_call(s, "c-mid")
        assert get_call(s, "nope") is None
    engine.dispose()
    assert d is not None and d["call"]["call_id"] == "c-mid"
    spk = {x["speaker"]: x for x in d["speakers"]}
    assert spk["ch1"]["role"] == "customer" and spk["ch1"]["channel"] == 1
    traj = spk["ch1"]["trajectory"]
    assert [w["start_ms"] for w in traj] == [1000, 2500, 4000]
    assert [w["label"] for w in traj] == ["neutral", "uncertain", "angry"]
    assert traj[1]["uncertain"] is True and traj[1]["raw_label"] == "angry"
    assert traj[2]["probabilities"] == pytest.approx(_probs(0.9))
    assert traj[2]["end_ms"] == 7000 and traj[2]["confidence"] == pytest.approx(0.9)
    assert [w["start_ms"] for w in spk["ch0"]["trajectory"]] == [2000]
    assert d["summary"]["peak_anger"] == 0.9


def test_calls_cli_list_and_show(filled: str) -> None:
    runner = CliRunner()
    res = runner.invoke(
        calls_group, ["--database-url", filled, "list", "--json", "--since", "2026-11-20T10:00"]
    )
    assert res.exit_code == 0, res.output
    assert [r["call_id"] for r in json.loads(res.output)] == ["c-new", "c-mid"]
    res = runner.invoke(calls_group, ["--database-url", filled, "list"])
    assert res.exit_code == 0 and res.output.count("billing") == 3
    res = runner.invoke(calls_group, ["--database-url", filled, "show", "c-mid", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    ch1 = next(s for s in doc["speakers"] if s["speaker"] == "ch1")
    assert [w["label"] for w in ch1["trajectory"]] == ["neutral", "uncertain", "angry"]
    res = runner.invoke(calls_group, ["--database-url", filled, "show", "c-mid"])
    assert res.exit_code == 0 and "ch1 (customer): 3 windows" in res.output
    assert "peak anger 0.90" in res.output
    res = runner.invoke(calls_group, ["--database-url", filled, "show", "missing"])
    assert res.exit_code == 1 and "not found" in res.output
    res = runner.invoke(calls_group, ["--database-url", filled, "list", "--since", "yesterday"])
    assert res.exit_code == 2 and "ISO 8601" in res.output


def test_parse_since() -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert parse_since("30m", now) == datetime(2026, 11, 21, 11, 30, tzinfo=UTC)
    assert parse_since("2026-11-21") == datetime(2026, 11, 21, tzinfo=UTC)
    assert parse_since("2026-11-21T10:00+01:00") == datetime(2026, 11, 21, 9, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_since("last week")


def test_db_upgrade_cli_on_fresh_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'fresh.db'}"
    runner = CliRunner()
    res = runner.invoke(calls_group, ["--database-url", url, "list"])
    assert res.exit_code == 1 and "db upgrade" in res.output  # no schema yet: clear error
    for _ in range(2):  # idempotent
        res = runner.invoke(db_group, ["--database-url", url, "upgrade"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(calls_group, ["--database-url", url, "list"])
    assert res.exit_code == 0 and "no calls" in res.output
