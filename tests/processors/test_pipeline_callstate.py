"""The per-call state machine without Kafka: event validation, dead-letter reasons, and recovery
from a stored state (what a restarted worker does) giving exactly the uninterrupted windows."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pytest
from callsense.models.g711 import mulaw_decode  # noqa: E402
from callsense.processors.callstate import (  # noqa: E402
    CallProcessor,
    Incoming,
    encode_state,
)
from callsense.processors.events import (  # noqa: E402
    CHUNK_TAG,
    AudioChunk,
    BadEvent,
    CallEnd,
    CallStart,
    parse_audio_event,
)
from callsense.processors.inference import BatchClassifier  # noqa: E402
from callsense.processors.stages import to_pcm16  # noqa: E402
from support.poison import POISON
from support.streaming import build_call  # noqa: E402

from callsense.settings import Settings  # noqa: E402


def test_chunks_round_trip_binary_and_json_and_corruption() -> None:
    x = np.array([[0.0, 0.5, -1.0], [1.0, -0.25, 0.1]], np.float32)
    ev = AudioChunk.from_array("c", 0, 0, 16000, x)
    wire = ev.encode()
    assert wire.startswith(CHUNK_TAG) and len(wire) < 2 * 2 * 3 + 200  # samples + header
    for value in (wire, ev.to_json()):  # binary, and the text form of the same chunk
        back = parse_audio_event(value, b"c")
        y = back.samples()
        assert y.shape == (2, 3) and np.max(np.abs(x - y)) <= 1 / 32768
    # the one PCM16 convention: the Kafka path gives the pipeline the very same int16 samples
    z = np.random.default_rng(3).uniform(-1.1, 1.1, (2, 4000)).astype(np.float32)
    z_wire = AudioChunk.from_array("c", 1, 3, 16000, z).encode()
    assert np.array_equal(to_pcm16(parse_audio_event(z_wire).samples()), to_pcm16(z))
    # telephone audio stays mu-law on the wire: one byte per sample, decoded exactly
    tel = mulaw_decode(bytes(range(256)) * 8).reshape(2, -1)
    mu = AudioChunk.from_array("c", 2, 0, 8000, tel, codec="mulaw")
    assert len(mu.data) == tel.size and parse_audio_event(mu.encode()).codec == "mulaw"
    assert np.array_equal(to_pcm16(parse_audio_event(mu.encode()).samples()), tel)
    assert np.array_equal(to_pcm16(parse_audio_event(mu.to_json()).samples()), tel)

    def corrupt(value: bytes, reason: str) -> None:
        with pytest.raises(BadEvent, match=reason):
            parse_audio_event(value)

    text = json.loads(ev.to_json())
    corrupt(json.dumps({**text, "pcm": "@@@"}).encode(), "not valid base64")
    corrupt(json.dumps({**text, "pcm": "AAAA"}).encode(), "whole number")
    corrupt(json.dumps({**text, "pcm": ""}).encode(), "empty audio")
    corrupt(wire[:7], "cut short")
    corrupt(wire + b"\x00", "whole number")
    head = wire[6 : 6 + int.from_bytes(wire[4:6], "big")]
    corrupt(wire.replace(head, head.replace(b'"pcm16"', b'"opus1"')), "unknown codec")
    corrupt(wire.replace(head, head.replace(b'"chunk"', b'"call_"')), "only chunks are binary")


@pytest.mark.parametrize(("value", "reason"), POISON)
def test_parse_rejects_bad_events(value: bytes, reason: str) -> None:
    with pytest.raises(BadEvent, match=reason):
        parse_audio_event(value)


def test_key_must_match_call_id() -> None:
    ev = CallEnd("c1", 0, 0).encode()
    assert parse_audio_event(ev, b"c1").call_id == "c1"
    with pytest.raises(BadEvent, match="differs from call_id"):
        parse_audio_event(ev, b"c2")


@pytest.fixture(scope="module")
def classifier() -> BatchClassifier:
    c = BatchClassifier(Settings())
    yield c
    c.close()


def _messages(path: Path, call_id: str) -> list[Incoming]:
    import soundfile as sf
    from callsense.processors.stages import chunk_audio

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.T
    out = [CallStart(call_id, sr, 2, 0, ts=1_700_000_000.0).encode()]
    out += [AudioChunk.from_array(call_id, s, st, sr, c).encode()
            for s, st, c in chunk_audio(audio, sr, 250)]  # fmt: skip
    out.append(CallEnd(call_id, len(out) - 2, audio.shape[1]).encode())
    return [Incoming(v, call_id.encode(), "callsense.audio", 0, i) for i, v in enumerate(out)]


def _windows(outputs: list[dict]) -> list[tuple]:
    return sorted(
        (o["speaker"], o["start_ms"], o["end_ms"], o["label"], o["smoothed_label"],
         round(o["confidence"], 5))
        for o in outputs if o["kind"] == "window"
    )  # fmt: skip


@pytest.fixture
def neutral_angry(shared_data: Path, tmp_path: Path) -> Path:
    """A stereo call: a neutral agent (left), a strongly angry customer (right), 2 clips each."""
    return build_call(shared_data, tmp_path / "c.wav", left=("ravdess_05", "neutral", ""),
                      right=("ravdess_06", "angry", "strong"), clips=2)  # fmt: skip


def test_restart_from_stored_state_replays_to_identical_windows(
    neutral_angry: Path, classifier: BatchClassifier
) -> None:
    msgs = _messages(neutral_angry, "c1")
    settings = Settings()

    # uninterrupted run, batches of 7 messages
    p = CallProcessor(settings, classifier)
    states: dict = {}
    straight: list[dict] = []
    for i in range(0, len(msgs), 7):
        res = p.process(msgs[i : i + 7], dict(states))
        states.update(res.states)
        straight += res.outputs
    assert straight[0]["kind"] == "call_started" and straight[-1]["kind"] == "call_ended"
    assert not any(o["kind"] == "call_ended" for o in straight[:-1])

    # crash after message 20 with the state checkpointed at message 14: a fresh processor
    # (empty cache) restores from the stored state and replays messages 14.. (some twice)
    p1 = CallProcessor(settings, classifier)
    first = p1.process(msgs[:14], {})
    saved = {k: encode_state(v) for k, v in first.states.items()}  # what the changelog holds
    lost = p1.process(msgs[14:20], dict(first.states))  # processed, never checkpointed
    p2 = CallProcessor(settings, classifier)
    replay = p2.process(msgs[14:20], dict(saved))
    rest = p2.process(msgs[20:], dict(replay.states))
    again = p2.process(msgs[10:16], dict(rest.states))  # stale redelivery after the end
    assert again.stats["duplicates"] == 6 and not again.outputs and not again.deadletters
    recovered = first.outputs + replay.outputs + rest.outputs
    assert _windows(recovered) == _windows(straight)
    assert _windows(replay.outputs) == _windows(lost.outputs)
    # conversation metrics from both channels' VAD survive the checkpoint (speech segments)
    ended = [o for o in recovered if o["kind"] == "call_ended"]
    assert ended[0]["conversation"] == straight[-1]["conversation"]
    conv = straight[-1]["conversation"]
    for spk, talk in straight[-1]["talk_time_s"].items():
        assert conv["speakers"][spk]["talk_time_s"] == pytest.approx(talk, abs=0.03)
    assert conv["speakers"]["ch0"]["turns"] >= 1 and conv["speakers"]["ch1"]["turns"] >= 1
    assert 0 < conv["silence_s"] < conv["duration_s"]


def test_dead_letters_and_other_calls(classifier: BatchClassifier) -> None:
    p = CallProcessor(Settings(), classifier)
    tone = (0.1 * np.random.default_rng(0).standard_normal((1, 4000))).astype(np.float32)
    good = AudioChunk.from_array("a", 0, 0, 16000, tone)
    msgs = [
        CallStart("a", 16000, 1).encode(),
        good.encode(),
        AudioChunk.from_array("a", 1, 4000, 8000, tone).encode(),  # rate change
        AudioChunk.from_array("ghost", 0, 0, 16000, tone).encode(),  # unknown call
        AudioChunk.from_array("a", 0, 0, 16000, tone).encode(),  # replay of seq 0
        CallEnd("a", 1, 8000).encode(),
        AudioChunk.from_array("a", 5, 20000, 16000, tone).encode(),  # after the end
        CallStart("a", 16000, 1, ts=time.time() - 60).encode(),  # reuse of an ended call id
        CallEnd("a", 1, 8000).encode(),  # without a key
    ]
    keys = [parse_audio_event(m).call_id.encode() for m in msgs[:-1]] + [None]
    pairs = enumerate(zip(msgs, keys, strict=True))
    res = p.process([Incoming(m, k, "t", 0, i) for i, (m, k) in pairs], {})
    reasons = [d["reason"] for d in res.deadletters]
    assert len(reasons) == 5, reasons
    assert "sample rate changed mid-call" in reasons[0]
    assert "unknown call 'ghost'" in reasons[1]
    assert "after call_end" in reasons[2]
    assert "already in use" in reasons[3]
    assert "no key" in reasons[4]
    assert res.stats["duplicates"] == 1 and res.stats["calls_ended"] == 1
    assert [d["offset"] for d in res.deadletters] == [2, 3, 6, 7, 8]
    ghost = res.deadletters[1]  # a binary chunk: kept whole, as base64
    assert ghost["original_encoding"] == "base64"
    assert parse_audio_event(base64.b64decode(ghost["original"])).call_id == "ghost"


def test_out_of_order_redelivery_gives_the_same_windows(
    shared_data: Path, tmp_path: Path, classifier: BatchClassifier
) -> None:
    """After a recovery a broker may hand the tail of a call over before the chunks that
    precede it (seen with Tansu under load): the reorder buffer must restore seq order."""
    path = build_call(shared_data, tmp_path / "c.wav", left=("ravdess_07", "neutral", ""),
                      right=("ravdess_08", "angry", "strong"), clips=2)  # fmt: skip
    msgs = _messages(path, "c2")
    settings = Settings()
    straight = CallProcessor(settings, classifier).process(msgs, {})
    start, chunks, end = msgs[0], msgs[1:-1], msgs[-1]
    scrambled = [start] + chunks[-5:] + [end] + chunks[:-5]  # tail and end first
    p = CallProcessor(settings, classifier)
    states: dict = {}
    outputs: list[dict] = []
    for i in range(0, len(scrambled), 9):
        res = p.process(scrambled[i : i + 9], dict(states))
        states.update({k: encode_state(v) for k, v in res.states.items()})  # as checkpointed
        p.live.clear()  # and through a restore, every batch
        outputs += res.outputs
        assert res.stats["duplicates"] == 0
    assert _windows(outputs) == _windows(straight.outputs)
    assert [o["kind"] for o in outputs].count("call_ended") == 1
    assert outputs[-1]["kind"] == "call_ended"


def test_reorder_buffer_is_bounded_in_bytes(
    shared_data: Path, tmp_path: Path, classifier: BatchClassifier, monkeypatch
) -> None:
    """The reorder buffer is part of the call's checkpoint, which must stay below the largest
    message the worker may produce: past MAX_REORDER_BYTES the missing chunk is given up (a
    gap of silence, counted) instead of growing the checkpoint."""
    from callsense.processors import callstate

    limit = callstate.CHECKPOINT_LIMIT_BYTES
    assert callstate.MAX_REORDER_BYTES <= limit // 2  # room for the pipelines
    path = build_call(shared_data, tmp_path / "c.wav", left=("ravdess_07", "neutral", ""),
                      right=("ravdess_08", "angry", "strong"), clips=1)  # fmt: skip
    msgs = _messages(path, "c3")
    chunk_bytes = len(msgs[2].value)
    monkeypatch.setattr(callstate, "MAX_REORDER_BYTES", 3 * chunk_bytes)
    p = CallProcessor(Settings(), classifier)
    res = p.process([msgs[0], *msgs[2:7]], {})  # chunk seq 0 never arrives
    state = res.states["c3"].to_state()
    assert res.stats["missing_chunks"] == 1
    assert state["next_seq"] == 6 and not state["waiting"]
    assert len(encode_state(res.states["c3"])) < limit


def test_a_call_without_audio_ends_as_abandoned_also_after_a_restart(
    classifier: BatchClassifier,
) -> None:
    settings = Settings(call_idle_timeout_s=5)
    tone = (0.1 * np.random.default_rng(1).standard_normal((2, 4000))).astype(np.float32)
    msgs = [CallStart("gone", 16000, 2).encode(),
            AudioChunk.from_array("gone", 0, 0, 16000, tone).encode()]  # fmt: skip
    p = CallProcessor(settings, classifier)
    res = p.process([Incoming(m, b"gone", "t", 0, i) for i, m in enumerate(msgs)], {})
    assert p.process([], {}).outputs == []  # not idle yet
    state = p.live["gone"].to_state()  # as checkpointed before a restart

    # another call's chunks, 6 s of producer time later: "gone" has been quiet for longer
    # than the timeout while input went on (a worker catching up would see the same)
    later = AudioChunk.from_array("live", 0, 0, 16000, tone)
    later.ts += 6
    other = [CallStart("live", 16000, 2).encode(), later.encode()]
    res = p.process([Incoming(m, b"live", "t", 0, 9 + i) for i, m in enumerate(other)], {})
    ended = [o for o in res.outputs if o["kind"] == "call_ended"]
    assert [(o["call_id"], o["status"]) for o in ended] == [("gone", "abandoned")]
    assert set(ended[0]["talk_time_s"]) == {"ch0", "ch1"}

    # a restarted worker adopts the stored state; with no input at all for the timeout, the
    # call ends too (no backlog can hold its chunks then)
    fresh = CallProcessor(settings, classifier)
    assert fresh.process([], {"gone": state}).outputs == []  # just restarted: not yet
    fresh.last_input_at -= 6
    fresh.live["gone"].last_audio_ts -= 6
    res = fresh.process([], {})
    assert [o["status"] for o in res.outputs if o["kind"] == "call_ended"] == ["abandoned"]
    assert res.states["gone"].ended and res.stats["calls_abandoned"] == 1


def _tone(channels: int, n: int, seed: int = 2) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((channels, n))).astype(np.float32)


def test_an_oversize_chunk_is_refused_and_never_costs_the_chunks_before_it(
    classifier: BatchClassifier,
) -> None:
    """An oversize chunk arriving before seq 0 used to fill the reorder buffer on its own and
    make the call give seq 0 up. It is dead-lettered instead; seq 0 is used, seq 1 is a gap."""
    p = CallProcessor(Settings(max_chunk_bytes=64 * 1024), classifier)
    big = AudioChunk.from_array("big", 1, 4000, 16000, _tone(2, 16000 * 2))  # 128 kB
    msgs = [CallStart("big", 16000, 2).encode(), big.encode(),
            AudioChunk.from_array("big", 0, 0, 16000, _tone(2, 4000)).encode(),
            AudioChunk.from_array("big", 2, 36000, 16000, _tone(2, 4000)).encode()]  # fmt: skip
    res = p.process([Incoming(m, b"big", "t", 0, i) for i, m in enumerate(msgs)], {})
    assert [d["offset"] for d in res.deadletters] == [1]
    assert "more than this call takes (65536; CALLSENSE_MAX_CHUNK_BYTES=65536)" in (
        res.deadletters[0]["reason"]
    )
    assert res.stats["chunks"] == 2 and res.stats.get("missing_chunks", 0) == 0
    assert res.states["big"].next_seq == 3


def test_a_diarized_call_takes_only_chunks_its_reorder_buffer_holds(
    classifier: BatchClassifier,
) -> None:
    settings = Settings(diarization_mono=True)
    p = CallProcessor(settings, classifier)
    start = CallStart("mono", 16000, 1)
    ctx = p._new_context(start)
    assert p.max_chunk(ctx) == p.reorder_bytes(ctx) * 3 // 4 < settings.max_chunk_bytes
    assert p.max_chunk(ctx) > len(AudioChunk.from_array("mono", 0, 0, 16000,
                                                        _tone(1, 16000)).encode())  # 1 s fits


def test_a_call_past_the_maximum_length_ends_as_truncated(classifier: BatchClassifier) -> None:
    p = CallProcessor(Settings(max_call_s=1.0), classifier)
    msgs = [CallStart("long", 16000, 2).encode()]
    msgs += [AudioChunk.from_array("long", s, s * 4000, 16000, _tone(2, 4000, s)).encode()
             for s in range(6)]  # fmt: skip  # 1.5 s: seqs 4 and 5 start at or past 1 s
    res = p.process([Incoming(m, b"long", "t", 0, i) for i, m in enumerate(msgs)], {})
    ended = [o for o in res.outputs if o["kind"] == "call_ended"]
    assert [o["status"] for o in ended] == ["truncated"] and ended[0]["duration_s"] == 1.0
    reasons = [d["reason"] for d in res.deadletters]
    assert len(reasons) == 2 and "CALLSENSE_MAX_CALL_S (1 s): chunk seq 4" in reasons[0]
    later = AudioChunk.from_array("long", 6, 24000, 16000, _tone(2, 4000)).encode()
    res = p.process([Incoming(later, b"long", "t", 0, 7)], dict(res.states))  # as checkpointed
    assert "after call_end" in res.deadletters[0]["reason"]


def test_calls_beyond_the_worker_cap_are_dead_lettered_whole(classifier: BatchClassifier) -> None:
    p = CallProcessor(Settings(max_calls_per_worker=2), classifier)
    msgs = []
    for cid in ("one", "two", "three"):
        chunk = AudioChunk.from_array(cid, 0, 0, 16000, _tone(2, 4000))
        msgs += [(cid, CallStart(cid, 16000, 2).encode()), (cid, chunk.encode())]
    msgs.append(("three", CallEnd("three", 0, 4000).encode()))
    res = p.process([Incoming(m, c.encode(), "t", 0, i) for i, (c, m) in enumerate(msgs)], {})
    reasons = [(d["call_id"], d["reason"]) for d in res.deadletters]
    assert reasons == [
        ("three", "worker at capacity: 2 live calls (CALLSENSE_MAX_CALLS_PER_WORKER=2)"),
        ("three", "chunk of call 'three', refused at capacity"),
        ("three", "call_end of call 'three', refused at capacity"),
    ]
    assert sorted(p.live) == ["one", "two"]
    # once a call ends, a new one is taken
    batch = [Incoming(CallEnd("one", 0, 4000).encode(), b"one", "t", 0, 20),
             Incoming(CallStart("four", 16000, 2).encode(), b"four", "t", 0, 21)]  # fmt: skip
    res = p.process(batch, {"one": res.states["one"]})
    assert res.deadletters == [] and p.live_calls() == 2


def test_live_conversation_metrics_go_out_during_the_call(
    neutral_angry: Path, classifier: BatchClassifier
) -> None:
    msgs = _messages(neutral_angry, "lc1")
    outputs: list[dict] = []
    p = CallProcessor(Settings(live_conversation_s=2.0), classifier)
    states: dict = {}
    for i in range(0, len(msgs), 5):
        res = p.process(msgs[i : i + 5], dict(states))
        states.update(res.states)
        outputs += res.outputs
    live = [o for o in outputs if o["kind"] == "conversation"]
    final = next(o for o in outputs if o["kind"] == "call_ended")["conversation"]
    ats = [o["at_ms"] for o in live]
    assert len(live) >= 3 and ats == sorted(ats)
    assert all(b - a >= 2000 for a, b in zip(ats, ats[1:], strict=False))
    assert outputs.index(live[-1]) < outputs.index(next(o for o in outputs
                                                         if o["kind"] == "call_ended"))
    for o in live:  # so far never more than in the end, and it grows
        assert o["conversation"]["duration_s"] == pytest.approx(o["at_ms"] / 1000, abs=0.01)
        for spk, s in o["conversation"]["speakers"].items():
            assert s["talk_time_s"] <= final["speakers"][spk]["talk_time_s"] + 1e-6
    talk = [sum(s["talk_time_s"] for s in o["conversation"]["speakers"].values()) for o in live]
    assert talk == sorted(talk) and talk[-1] > talk[0]
    off = CallProcessor(Settings(live_conversation_s=0), classifier).process(msgs, {})
    assert not [o for o in off.outputs if o["kind"] == "conversation"]


def test_recordings_are_the_calls_input_once_also_after_a_replay(
    neutral_angry: Path, classifier: BatchClassifier, tmp_path: Path
) -> None:
    import soundfile as sf

    msgs = _messages(neutral_angry, "rec1")
    settings = Settings(recording_retention_days=7, data_dir=tmp_path / "data")
    p = CallProcessor(settings, classifier)
    first = p.process(msgs[:20], {})
    p.process(msgs[10:], dict(first.states))  # chunks 10..19 come twice
    wav = tmp_path / "data" / "recordings" / "rec1.wav"
    got, rate = sf.read(wav, dtype="int16", always_2d=True)
    want, want_rate = sf.read(neutral_angry, dtype="float32", always_2d=True)
    assert rate == want_rate and got.shape == want.shape
    assert np.abs(got.astype(int) - np.round(want * 32767).astype(int)).max() <= 1
    off = tmp_path / "off"
    CallProcessor(Settings(data_dir=off), classifier).process(msgs, {})
    assert not (off / "recordings").exists()  # retention 0: nothing kept
