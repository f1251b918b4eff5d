"""The live view's ranking: every active call (no cap), the ones that need a supervisor first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from callsense.dashboard.data import attention, live_overview

from callsense.storage.db import make_engine, session_factory, upgrade
from callsense.storage.writer import Writer


def _call(call_id: str, anger: list[float]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{
        "kind": "call_started", "call_id": call_id, "sample_rate": 16000, "channels": 2,
        "agent_channel": 0, "ts": 1_700_000_000.0,
        "speakers": [{"speaker": "ch0", "role": "agent", "channel": 0},
                     {"speaker": "ch1", "role": "customer", "channel": 1}],
    }]  # fmt: skip
    for i, a in enumerate(anger):
        probs = {"angry": a, "neutral": 1 - a}
        label = "angry" if a > 0.5 else "neutral"
        out.append({
            "kind": "window", "call_id": call_id, "speaker": "ch1", "role": "customer",
            "start_ms": 1000 * i, "end_ms": 1000 * i + 3000, "label": label, "raw_label": label,
            "confidence": max(a, 1 - a), "uncertain": False, "probabilities": probs,
            "smoothed_label": label, "smoothed_probabilities": probs,
        })  # fmt: skip
    return out


def test_every_active_call_is_listed_and_anger_ranks_first(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    upgrade(url)
    writer = Writer(url)
    try:
        for i in range(40):  # more than the old cap of 30, started in order
            writer.write(_call(f"calm-{i:02d}", [0.05, 0.05, 0.05]))
        writer.write(_call("rising", [0.1, 0.5, 0.9]))
        writer.write(_call("angry-flat", [0.8, 0.8, 0.8]))
    finally:
        writer.close()
    with session_factory(make_engine(url)).begin() as s:
        calls = live_overview(s)
    assert len(calls) == 42
    assert [c["call_id"] for c in calls[:2]] == ["rising", "angry-flat"]
    assert calls[0]["attention"] > calls[1]["attention"] > calls[2]["attention"]
    assert [c["attention"] for c in calls] == sorted((c["attention"] for c in calls), reverse=True)


def test_attention_weighs_alerts_then_anger_and_ended_calls_last() -> None:
    def call(alerts: list[str], anger: list[float], status: str = "active") -> dict[str, Any]:
        return {"alerts": [{"severity": a} for a in alerts], "call_time_s": 60.0,
                "status": status, "speakers": [{"role": "customer", "anger": anger},
                                               {"role": "agent", "anger": [1.0]}]}  # fmt: skip

    critical = attention(call(["critical"], [0.1]))
    warning = attention(call(["warning"], [0.9, 0.9]))
    angry = attention(call([], [0.9, 0.9]))
    assert critical > warning > angry > attention(call([], [0.1]))
    assert attention(call([], [0.2, 0.9])) > attention(call([], [0.9, 0.9]))  # rising
    assert attention(call(["critical"], [0.9], status="ended")) < attention(call([], []))
    assert attention(call([], [0.0])) == attention(call([], []))  # the agent's anger: ignored
