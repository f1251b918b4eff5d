"""The windows writer on real SQLite and PostgreSQL: a diarized mono call's speakers are created
from their first windows (its ``call_started`` lists none), idempotently under replay, and
``call_ended`` lists every speaker; the API and dashboard queries then show them."""

from __future__ import annotations

from typing import Any

from callsense.storage.db import make_engine, session_factory
from callsense.storage.queries import get_call
from callsense.storage.schema import Speaker
from callsense.storage.writer import Writer


def _window(call_id: str, speaker: str, role: str, start_ms: int) -> dict[str, Any]:
    probs = {"angry": 0.7 if speaker == "spk1" else 0.1, "neutral": 0.3}
    return {
        "kind": "window", "call_id": call_id, "speaker": speaker, "role": role,
        "start_ms": start_ms, "end_ms": start_ms + 2990, "label": "neutral",
        "raw_label": "neutral", "confidence": 0.8, "uncertain": False, "probabilities": probs,
        "smoothed_label": "neutral", "smoothed_probabilities": probs,
    }  # fmt: skip


def _events(call_id: str) -> list[list[dict[str, Any]]]:
    started = {
        "kind": "call_started", "call_id": call_id, "sample_rate": 8000, "channels": 1,
        "agent_channel": 0, "ts": 1.0, "speakers": [],
    }  # fmt: skip
    ended = {
        "kind": "call_ended", "call_id": call_id, "duration_s": 20.0, "ts": 21.0,
        "talk_time_s": {"spk0": 6.0, "spk1": 5.0, "spk2": 0.0},
        "speakers": [
            {"speaker": "spk0", "role": "agent", "channel": None},
            {"speaker": "spk1", "role": "customer", "channel": None},
            # a speaker the diarizer opened whose speech never made a window
            {"speaker": "spk2", "role": "customer", "channel": None},
        ],
    }  # fmt: skip
    return [
        [started, _window(call_id, "spk0", "agent", 0), _window(call_id, "spk0", "agent", 1000)],
        [_window(call_id, "spk1", "customer", 4000), _window(call_id, "spk0", "agent", 9000)],
        [_window(call_id, "spk1", "customer", 12000), ended],
    ]


def _speakers(url: str, call_id: str) -> list[tuple]:
    with session_factory(make_engine(url)).begin() as s:
        rows = s.query(Speaker).filter(Speaker.call_id == call_id).order_by(Speaker.speaker)
        return [(r.speaker, r.role, r.channel) for r in rows]


def test_diarized_speakers_come_from_their_first_windows(database_url: str) -> None:
    writer = Writer(database_url)
    try:
        batches = _events("mono-1")
        writer.write(batches[0])
        assert _speakers(database_url, "mono-1") == [("spk0", "agent", None)]
        writer.write(batches[1])
        assert _speakers(database_url, "mono-1") == [
            ("spk0", "agent", None),
            ("spk1", "customer", None),
        ]
        with session_factory(make_engine(database_url)).begin() as s:  # dashboard, live
            from callsense.dashboard.data import live_overview

            live = {c["call_id"]: c for c in live_overview(s)}
        roles = {sp["speaker"]: sp["role"] for sp in live["mono-1"]["speakers"]}
        assert roles == {"spk0": "agent", "spk1": "customer"}
        # a replay of everything (at-least-once upstream) changes nothing
        writer.write(batches[0] + batches[1])
        writer.write(batches[2])
        writer.write(batches[2])
        # a window in a batch of its own for a call never started: call and speaker created
        writer.write([_window("orphan", "spk1", "customer", 0)])
    finally:
        writer.close()
    assert _speakers(database_url, "mono-1") == [
        ("spk0", "agent", None),
        ("spk1", "customer", None),
        ("spk2", "customer", None),
    ]
    assert _speakers(database_url, "orphan") == [("spk1", "customer", None)]

    with session_factory(make_engine(database_url)).begin() as s:
        call = get_call(s, "mono-1")
    assert call is not None and call["call"]["status"] == "ended"
    by = {sp["speaker"]: sp for sp in call["speakers"]}
    assert sorted(by) == ["spk0", "spk1", "spk2"]
    assert [w["start_ms"] for w in by["spk0"]["trajectory"]] == [0, 1000, 9000]
    assert [w["start_ms"] for w in by["spk1"]["trajectory"]] == [4000, 12000]  # each once
    assert by["spk1"]["role"] == "customer" and by["spk0"]["role"] == "agent"
    assert call["summary"] is not None


def test_stereo_speakers_keep_their_channels(database_url: str) -> None:
    """Windows of speakers the call_started listed leave those rows as they are."""
    writer = Writer(database_url)
    try:
        started = {
            "kind": "call_started", "call_id": "st", "sample_rate": 8000, "channels": 2,
            "ts": 1.0, "speakers": [{"speaker": "ch0", "role": "agent", "channel": 0},
                                    {"speaker": "ch1", "role": "customer", "channel": 1}],
        }  # fmt: skip
        writer.write([started, _window("st", "ch1", "customer", 0)])
        writer.write([_window("st", "ch0", "agent", 0)])
    finally:
        writer.close()
    assert _speakers(database_url, "st") == [("ch0", "agent", 0), ("ch1", "customer", 1)]


def test_an_abandoned_call_is_stored_as_abandoned_with_its_summary(database_url: str) -> None:
    writer = Writer(database_url)
    try:
        batches = _events("gone-1")
        batches[2][-1] = {**batches[2][-1], "status": "abandoned"}
        for b in batches:
            writer.write(b)
        writer.write([{**batches[2][-1], "status": "bogus", "call_id": "gone-2"}])
    finally:
        writer.close()
    with session_factory(make_engine(database_url)).begin() as s:
        gone = get_call(s, "gone-1")
        other = get_call(s, "gone-2")
    assert gone is not None and gone["call"]["status"] == "abandoned"
    assert gone["summary"] is not None
    assert other is not None and other["call"]["status"] == "ended"  # unknown status: ended


def test_live_conversation_keeps_the_newest_snapshot_until_the_call_ends(
    database_url: str,
) -> None:
    from callsense.storage.schema import Call

    def conv(at_ms: int) -> dict[str, Any]:
        return {"kind": "conversation", "call_id": "lv", "at_ms": at_ms,
                "conversation": {"duration_s": at_ms / 1000, "silence_s": 1.0}}  # fmt: skip

    def held() -> Any:
        with session_factory(make_engine(database_url)).begin() as s:
            return (s.get(Call, "lv").extra or {}).get("conversation_live")

    started = {"kind": "call_started", "call_id": "lv", "sample_rate": 8000, "channels": 2,
               "agent_channel": 1, "ts": 1.0, "speakers": []}  # fmt: skip
    writer = Writer(database_url)
    try:
        writer.write([started, conv(10_000)])
        writer.write([conv(20_000), conv(10_000)])  # an older one (a replay) changes nothing
        assert held() == {"at_ms": 20_000, "metrics": conv(20_000)["conversation"]}
        writer.write([started])  # a replayed call_started keeps it, and the agent channel
        assert held()["at_ms"] == 20_000
        with session_factory(make_engine(database_url)).begin() as s:
            assert s.get(Call, "lv").extra["agent_channel"] == 1
        writer.write([{"kind": "call_ended", "call_id": "lv", "duration_s": 25.0,
                       "talk_time_s": {}, "ts": 26.0}, conv(30_000)])  # fmt: skip
        assert held()["at_ms"] == 20_000  # an ended call takes no more live snapshots
    finally:
        writer.close()
