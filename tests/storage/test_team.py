"""Team views on real SQLite and PostgreSQL: per queue and agent over a shift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from callsense.storage.alerts import apply_alert_event
from callsense.storage.db import make_engine, session_factory
from callsense.storage.schema import Call, CallSummary, EmotionWindow
from callsense.storage.team import shift_calls, team_overview

NOW = datetime.now(UTC)


def _window(call_id: str, i: int, label: str) -> EmotionWindow:
    probs = {"angry": 0.9 if label == "angry" else 0.05, "neutral": 0.1}
    return EmotionWindow(call_id=call_id, speaker="ch1", role="customer", start_ms=i * 1000,
                         end_ms=i * 1000 + 3000, label=label, raw_label=label, confidence=0.9,
                         uncertain=False, smoothed_label=label,
                         probabilities=probs, smoothed_probabilities=probs)  # fmt: skip


@pytest.fixture
def sf(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    factory = session_factory(engine)
    calls = [  # id, queue, agent, status, started hours ago, duration s, summary anger share
        ("b-live", "billing", "A1", "active", 0.2, None, None),
        ("b-done", "billing", "A1", "ended", 2, 600, 0.05),
        ("s-done", "support", "A2", "ended", 1, 300, 0.3),
        ("s-live", "support", "A2", "active", 20, None, None),  # long: still counts
        ("s-old", "support", "A2", "ended", 30, 100, 0.9),  # before the shift
        ("x-done", None, None, "abandoned", 3, 60, None),
    ]
    with factory.begin() as s:
        for cid, queue, agent, status, hours, _dur, _anger in calls:
            s.add(Call(call_id=cid, queue=queue, agent_id=agent, status=status, channels=2,
                       started_at=NOW - timedelta(hours=hours)))  # fmt: skip
        s.flush()
        for cid, *_, dur, anger in calls:
            if dur is not None:
                s.add(CallSummary(call_id=cid, duration_s=dur, anger_share=anger, summary={}))
        s.add_all([_window("b-live", 0, "angry"), _window("b-live", 1, "neutral")])
        apply_alert_event(s, "alert.raised", {
            "id": "al_t1", "call_id": "s-live", "rule": "customer_anger", "status": "raised",
            "severity": "warning", "message": "m", "raised_at": NOW.isoformat()})  # fmt: skip
    yield factory
    engine.dispose()


def test_queues_over_the_shift(sf) -> None:  # type: ignore[no-untyped-def]
    with sf() as s:
        rows = team_overview(shift_calls(s, NOW - timedelta(hours=8)), "queue")
    assert [r["key"] for r in rows] == ["support", "billing", None]  # open alerts first
    support, billing, none = rows
    assert (support["active"], support["calls"], support["open_alerts"]) == (1, 2, 1)
    assert support["angry_share"] == 1.0  # s-done 30 % angry, s-live alerted
    assert support["aht_s"] == 300  # the ended call only; s-old is before the shift
    assert (billing["active"], billing["calls"], billing["angry_share"]) == (1, 2, 0.5)
    assert billing["aht_s"] == 600
    assert (none["calls"], none["angry_share"], none["aht_s"]) == (1, 0.0, 60)


def test_agents_and_one_agents_calls(sf) -> None:  # type: ignore[no-untyped-def]
    since = NOW - timedelta(hours=8)
    with sf() as s:
        agents = {r["key"]: r for r in team_overview(shift_calls(s, since), "agent_id")}
        mine = shift_calls(s, since, "A2")
        wider = shift_calls(s, NOW - timedelta(hours=48), "A2")
    assert agents["A1"]["calls"] == 2 and agents["A2"]["open_alerts"] == 1
    assert [c["call_id"] for c in mine] == ["s-done", "s-live"]  # newest first
    assert [c["call_id"] for c in wider] == ["s-done", "s-live", "s-old"]
