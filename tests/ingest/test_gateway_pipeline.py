"""A stereo call replayed through the gateway's ``/twilio`` and ``/audiohook`` endpoints (real
WebSocket clients speaking each protocol's message shapes), on real Apache Kafka with a real
worker: both speakers' stored trajectories equal those of ``callsense ingest`` of the same
audio after the telephone channel's 8 kHz mu-law round trip."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from callsense.ingest.gateway_cli import audiohook_client, replay, twilio_frames
from callsense.models.g711 import mulaw_decode, mulaw_encode
from support.gateway import gateway
from support.streaming import (
    Worker,
    assert_same_windows,
    base_env,
    build_call,
    db_scalar,
    db_windows,
    ingest_call,
    wait_for,
)

pytestmark = pytest.mark.slow


def telephone_copy(src: Path, out: Path) -> Path:
    """Each channel at 8 kHz through G.711 mu-law and back: what a telephone leg carries."""
    import soundfile as sf
    from callsense.models.audio import resample
    from callsense.processors.stages import to_pcm16

    x, sr = sf.read(str(src), dtype="float32", always_2d=True)
    chans = [mulaw_decode(mulaw_encode(to_pcm16(resample(c, sr, 8000)))) for c in x.T]
    sf.write(str(out), np.stack(chans, axis=1), 8000, subtype="PCM_16")
    return out


def test_twilio_and_audiohook_calls_equal_the_ingested_file(
    kafka: Any, shared_data: Path, tmp_path: Path
) -> None:
    import soundfile as sf

    call = build_call(shared_data, tmp_path / "call.wav", left=("ravdess_04", "neutral", ""),
                      right=("ravdess_03", "angry", "strong"), clips=3)  # fmt: skip
    tel = telephone_copy(call, tmp_path / "tel.wav")
    audio, sr = sf.read(str(tel), dtype="float32", always_2d=True)
    audio = audio.T
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    from callsense.storage.db import upgrade

    upgrade(url)
    # agent emotion opted in so that both speakers' trajectories are compared
    env = base_env(kafka.bootstrap, url, tmp_path / "data", CALLSENSE_BROKER_KIND="kafka",
                   CALLSENSE_EMOTION_ROLES="customer,agent")  # fmt: skip
    ids = {"ingest": "gw-ingest", "twilio": "gw-twilio", "audiohook": str(uuid.uuid4())}
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        wait_for(lambda: "Worker ready" in worker.log(), 120, "worker ready", worker)
        ing = ingest_call(env, tel, ids["ingest"], speed="max")
        _, err = ing.communicate(timeout=120)
        assert ing.returncode == 0, err
        with gateway(kafka.bootstrap, audiohook_api_key="k3y") as base:
            frames = twilio_frames(audio, sr, "CA" + "2" * 32, {"call_id": ids["twilio"]}, 0)
            asyncio.run(replay(frames, base + "/twilio", None, {}))
            said = asyncio.run(audiohook_client(audio, sr, base + "/audiohook", ids["audiohook"],
                                                0, api_key="k3y", speed=None))  # fmt: skip
        assert said["disconnect"] is None
        assert said["server_messages"][0] == "opened" and said["server_messages"][-1] == "closed"
        assert "pong" in said["server_messages"]  # a ping every 5 s of audio

        def ended() -> int:
            q = "SELECT count(*) FROM call_summaries WHERE call_id IN (:a, :b, :c)"
            return db_scalar(url, q, a=ids["ingest"], b=ids["twilio"], c=ids["audiohook"])

        wait_for(lambda: ended() == 3, 240, "three call summaries", worker)
    finally:
        worker.stop()

    want = db_windows(url, ids["ingest"])
    roles = {r["role"] for r in want}
    assert roles == {"agent", "customer"}, roles
    for name in ("twilio", "audiohook"):
        got = db_windows(url, ids[name])
        assert_same_windows(got, want, [tmp_path / "worker.log"])
