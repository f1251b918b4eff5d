"""summarize_call on hand-computed cases."""

from __future__ import annotations

import pytest

from callsense.storage.summary import summarize_call


def row(spk: str, role: str, start: int, end: int, label: str, angry: float) -> dict:
    rest = 1.0 - angry  # split 1/4 happy, 1/2 neutral, 1/4 sad
    probs = {"angry": angry, "happy": rest / 4, "neutral": rest / 2, "sad": rest / 4}
    return {
        "speaker": spk,
        "role": role,
        "start_ms": start,
        "end_ms": end,
        "label": label,
        "probabilities": probs,
    }


def test_hand_computed_escalating_customer() -> None:
    # 30 s call; thirds: [0, 10 s), [10, 20 s), [20, 30 s] by window midpoint
    rows = [
        row("ch1", "customer", 0, 3000, "neutral", 0.1),  # mid 1.5 s: first third
        row("ch1", "customer", 4000, 7000, "uncertain", 0.4),  # mid 5.5 s: first third
        row("ch1", "customer", 12000, 15000, "angry", 0.6),  # middle
        row("ch1", "customer", 21000, 24000, "angry", 0.8),  # last third
        row("ch1", "customer", 26000, 29000, "angry", 0.9),  # last third
        row("ch0", "agent", 1000, 4000, "neutral", 0.05),
        row("ch0", "agent", 22000, 25000, "neutral", 0.05),
    ]
    out = summarize_call(30.0, rows, {"ch0": 6.0, "ch1": 12.0})
    assert out["duration_s"] == 30.0
    assert out["anger_share"] == pytest.approx(3 / 5)  # the customer's share
    assert out["peak_anger"] == pytest.approx(0.9)
    s = out["summary"]
    assert s["windows"] == 7 and s["talk_time_s"] == {"ch0": 6.0, "ch1": 12.0}
    cust = s["speakers"]["ch1"]
    assert cust["role"] == "customer" and cust["windows"] == 5
    assert cust["talk_share"] == pytest.approx(12 / 30)
    assert cust["shares"] == pytest.approx({"angry": 0.6, "neutral": 0.2, "uncertain": 0.2})
    assert cust["uncertain_windows"] == 1
    assert cust["peak_anger_ms"] == 26000
    assert cust["first_third"]["windows"] == 2 and cust["last_third"]["windows"] == 2
    # mean angry prob: first (0.1 + 0.4) / 2 = 0.25, last (0.8 + 0.9) / 2 = 0.85 -> +0.6
    assert cust["shift"]["angry"] == pytest.approx(0.6)
    # neutral is half the rest: first (0.9 + 0.6) / 4 = 0.375, last (0.2 + 0.1) / 4 = 0.075
    assert cust["shift"]["neutral"] == pytest.approx(0.075 - 0.375)
    assert cust["first_third"]["dominant"] == "neutral"
    assert cust["last_third"]["dominant"] == "angry"
    assert cust["mean_probabilities"]["angry"] == pytest.approx((0.1 + 0.4 + 0.6 + 0.8 + 0.9) / 5)
    agent = s["speakers"]["ch0"]
    assert agent["shares"] == {"neutral": 1.0} and agent["peak_anger"] == pytest.approx(0.05)
    assert agent["shift"]["angry"] == pytest.approx(0.0)


def test_no_customer_uses_largest_share_and_empty_thirds() -> None:
    rows = [
        row("spk0", "unknown", 0, 3000, "angry", 0.7),
        row("spk0", "unknown", 1000, 4000, "sad", 0.2),
    ]
    out = summarize_call(9.0, rows, {"spk0": 4.0, "spk1": 0.0})
    assert out["anger_share"] == pytest.approx(0.5)
    spk0 = out["summary"]["speakers"]["spk0"]
    # midpoints 1.5 s and 2.5 s both lie in the first third (< 3 s): no last-third windows
    assert spk0["first_third"]["windows"] == 2 and spk0["last_third"]["windows"] == 0
    assert spk0["shift"] is None
    silent = out["summary"]["speakers"]["spk1"]  # spoke too little for any window
    assert silent["windows"] == 0 and silent["shares"] == {} and silent["peak_anger"] == 0.0


def test_empty_call_and_bad_duration() -> None:
    out = summarize_call(0.0, [], {})
    assert out["anger_share"] == 0.0 and out["peak_anger"] == 0.0
    assert out["summary"]["speakers"] == {}
    with pytest.raises(ValueError, match="duration"):
        summarize_call(float("nan"), [], {})
    with pytest.raises(ValueError, match="duration"):
        summarize_call(-1.0, [], {})
