"""The state machine with mono diarization on: a two-speaker mono call streamed through
``CallProcessor.process`` in micro-batches, with every state through JSON and a restore after
every batch, gives exactly the windows of offline analysis (``diarized_windows``), at 16 kHz and
8 kHz; and the call's checkpoint stays within its byte budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from callsense.processors import callstate  # noqa: E402
from callsense.processors.callstate import (  # noqa: E402
    CallProcessor,
    Incoming,
    decode_state,
    encode_state,
)
from callsense.processors.events import AudioChunk, CallEnd, CallStart  # noqa: E402
from callsense.processors.inference import BatchClassifier  # noqa: E402
from support.streaming import at_rate, mono_two_speaker_call  # noqa: E402

from callsense.settings import Settings  # noqa: E402

SR = 16000



def messages(audio: np.ndarray, sr: int, call_id: str, chunk_ms: int = 250) -> list[Incoming]:
    from callsense.processors.stages import chunk_audio

    out = [CallStart(call_id, sr, 1, 0, ts=1_700_000_000.0).encode()]
    out += [AudioChunk.from_array(call_id, s, st, sr, c).encode()
            for s, st, c in chunk_audio(audio[None], sr, chunk_ms)]  # fmt: skip
    out.append(CallEnd(call_id, len(out) - 2, len(audio), ts=1_700_000_001.0).encode())
    return [Incoming(v, call_id.encode(), "callsense.audio", 0, i) for i, v in enumerate(out)]


def _key(rows: list[dict]) -> list[tuple]:
    return sorted(
        (r["speaker"], r["role"], r["start_ms"], r["end_ms"], r["label"], r["smoothed_label"])
        for r in rows
    )


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(diarization_mono=True)


@pytest.fixture(scope="module")
def classifier(settings: Settings) -> BatchClassifier:
    c = BatchClassifier(settings)
    yield c
    c.close()


@pytest.fixture(scope="module")
def call(shared_data: Path) -> np.ndarray:
    return mono_two_speaker_call(shared_data)


def _stream(settings, classifier, msgs, batch: int, sizes: list | None = None) -> list[dict]:
    p = CallProcessor(settings, classifier)
    states: dict = {}
    outputs: list[dict] = []
    for i in range(0, len(msgs), batch):
        res = p.process(msgs[i : i + batch], dict(states))
        text = {k: encode_state(v) for k, v in res.states.items()}  # what the changelog holds
        if sizes is not None:
            sizes.extend((len(t), decode_state(t)) for t in text.values())
        states.update(text)
        p.live.clear()  # and through a restore, every batch
        outputs += res.outputs
        assert not res.deadletters, res.deadletters
    return outputs


@pytest.mark.parametrize("sr", [16000, 8000])
def test_diarized_mono_stream_matches_offline(
    settings: Settings, classifier: BatchClassifier, call: np.ndarray, sr: int
) -> None:
    from callsense.processors.offline import analyze_audio

    audio = at_rate(call, sr)
    offline = analyze_audio(audio[None], sr, settings, call_id="off", model=classifier.model)
    expected = [r.to_row("c") for r in offline.results]
    assert [(s["speaker"], s["role"]) for s in offline.speakers] == [
        ("spk0", "agent"),
        ("spk1", "customer"),
    ]

    outputs = _stream(settings, classifier, messages(audio, sr, "c"), batch=5)
    windows = [o for o in outputs if o["kind"] == "window"]
    assert _key(windows) == _key(expected)
    for w, e in zip(sorted(windows, key=lambda r: (r["speaker"], r["start_ms"])),
                    sorted(expected, key=lambda r: (r["speaker"], r["start_ms"])),
                    strict=True):  # fmt: skip
        for label, prob in e["probabilities"].items():
            assert w["probabilities"][label] == pytest.approx(prob, abs=1e-6)
    assert {w["speaker"] for w in windows} == {"spk1"}  # the customer's emotion only (default)

    started = [o for o in outputs if o["kind"] == "call_started"]
    ended = [o for o in outputs if o["kind"] == "call_ended"]
    assert len(started) == 1 and started[0]["speakers"] == []
    assert len(ended) == 1 and outputs[-1] is ended[0]
    assert ended[0]["speakers"] == [
        {"speaker": "spk0", "role": "agent", "channel": None},
        {"speaker": "spk1", "role": "customer", "channel": None},
    ]
    assert set(ended[0]["talk_time_s"]) == {"spk0", "spk1"}
    conv = ended[0]["conversation"]["speakers"]
    assert {s: conv[s]["role"] for s in conv} == {"spk0": "agent", "spk1": "customer"}
    assert all(conv[s]["talk_time_s"] > 0 and conv[s]["turns"] >= 1 for s in conv)
    assert ended[0]["duration_s"] == pytest.approx(len(audio) / sr)


def test_diarized_chunking_does_not_matter(
    settings: Settings, classifier: BatchClassifier, call: np.ndarray
) -> None:
    """Producers may chunk differently: 100 ms chunks give the 250 ms chunks' windows."""
    audio = call[: 12 * SR]
    a = _stream(settings, classifier, messages(audio, SR, "a", chunk_ms=250), batch=50)
    b = _stream(settings, classifier, messages(audio, SR, "a", chunk_ms=100), batch=13)
    wa = [o for o in a if o["kind"] == "window"]
    assert wa and _key(wa) == _key([o for o in b if o["kind"] == "window"])


def test_diarized_checkpoint_stays_within_its_budget(
    settings: Settings, classifier: BatchClassifier, call: np.ndarray
) -> None:
    """Measured states stay under the bounds the start-up budget uses, and a full reorder
    buffer (a chunk that never comes) keeps the whole checkpoint under the limit."""
    from callsense.processors.diarization.route import state_bound_bytes
    from callsense.processors.diarization.streaming import DiarizerConfig
    from callsense.processors.stages import StageConfig

    cfg = StageConfig.from_settings(settings)
    budget = callstate.check_checkpoint_budget(settings, cfg)
    assert budget["reorder"] >= callstate.MIN_REORDER_BYTES
    for sr in (8000, 16000, 48000):
        audio = at_rate(call, sr)
        sizes: list = []
        _stream(settings, classifier, messages(audio, sr, f"s{sr}"), batch=4, sizes=sizes)
        bound = state_bound_bytes(DiarizerConfig.from_settings(settings), sr)
        diar = max(len(json.dumps(s["diar"])) for _n, s in sizes if "diar" in s)
        pipes = max(
            len(json.dumps(p)) + len(json.dumps(s["smoothers"].get(k)))
            + len(json.dumps(s["speaker_states"].get(k)))
            for _n, s in sizes for k, p in s.get("pipelines", {}).items()
        )  # fmt: skip
        assert diar <= bound, (sr, diar, bound)
        model_state = callstate.model_state_bound_bytes(settings)
        assert pipes <= callstate.speaker_bound_bytes(cfg, model_state), (sr, pipes)
        assert max(n for n, _s in sizes) < callstate.CHECKPOINT_LIMIT_BYTES
        print(f"{sr} Hz: diarizer state {diar} B (bound {bound}), speaker {pipes} B, "
              f"checkpoint max {max(n for n, _s in sizes)} B")  # fmt: skip

    # chunks that never arrive: the chunks after each wait in the buffer until it is full
    for sr in (8000, 48000):
        audio = at_rate(call, sr)
        msgs = messages(audio, sr, f"r{sr}")
        lost = {31, 101, 171}
        p = CallProcessor(settings, classifier)
        states: dict = {}
        biggest = held = 0
        gave_up = 0
        for i, m in enumerate(msgs[:-1]):
            if i in lost:
                continue
            res = p.process([m], dict(states))
            states.update(res.states)
            state = res.states[f"r{sr}"].to_state()
            biggest = max(biggest, len(encode_state(res.states[f"r{sr}"])))
            held = max(held, sum(len(v) for v in (state.get("waiting") or {}).values() if v))
            gave_up += res.stats["missing_chunks"]
        assert gave_up == len(lost)
        one = callstate._b64_len(msgs[2].value)  # a chunk as held (base64), as budgeted
        assert held > p.reorder_bytes(p.live[f"r{sr}"]) - one  # it was full
        assert biggest < callstate.CHECKPOINT_LIMIT_BYTES, biggest
        print(f"{sr} Hz with a full reorder buffer ({held} B): checkpoint max {biggest} B")
    print(f"budget at 48 kHz: {budget}")


def test_a_configuration_that_cannot_fit_is_refused(classifier: BatchClassifier) -> None:
    s = Settings(diarization_mono=True, diarization_max_speakers=8)
    with pytest.raises(callstate.CheckpointBudgetError, match="cannot fit"):
        CallProcessor(s, classifier)
    CallProcessor(Settings(diarization_mono=False, diarization_max_speakers=8), classifier)
