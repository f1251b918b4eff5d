"""A call whose audio stops without a call end (a dropped line, a crashed telephony fork) ends
as ``abandoned`` within the idle timeout plus 5 s: real Apache Kafka, a real worker, SQLite."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from callsense.processors.events import AUDIO_TOPIC, AudioChunk, CallStart
from support.streaming import Worker, base_env, db_scalar, produce, wait_for

pytestmark = pytest.mark.slow

TIMEOUT_S = 5


def test_a_call_that_goes_silent_ends_abandoned_within_timeout_plus_5_s(
    kafka: Any, tmp_path: Path
) -> None:
    from callsense.storage.db import upgrade

    url = f"sqlite:///{tmp_path / 'calls.db'}"
    upgrade(url)
    env = base_env(kafka.bootstrap, url, tmp_path / "data", CALLSENSE_BROKER_KIND="kafka",
                   CALLSENSE_CALL_IDLE_TIMEOUT_S=str(TIMEOUT_S))  # fmt: skip
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        wait_for(lambda: "Worker ready" in worker.log(), 120, "worker ready", worker)
        sr = 16000
        rng = np.random.default_rng(0)
        msgs = [(b"dropped", CallStart("dropped", sr, 2, 0, queue="q").encode())]
        for i in range(8):  # 2 s of audio, then nothing: no call_end ever comes
            pcm = (0.05 * rng.standard_normal((2, sr // 4))).astype(np.float32)
            msgs.append((b"dropped", AudioChunk.from_array("dropped", i, i * sr // 4, sr,
                                                           pcm).encode()))  # fmt: skip
        produce(kafka.bootstrap, msgs, AUDIO_TOPIC)
        last_audio = time.monotonic()
        status = "SELECT status FROM calls WHERE call_id = 'dropped'"
        wait_for(lambda: db_scalar(url, status) == "active", 60, "call stored as active", worker)
        wait_for(lambda: db_scalar(url, status) == "abandoned", TIMEOUT_S + 30, "abandoned",
                 worker)  # fmt: skip
        took = time.monotonic() - last_audio
        summary = "SELECT count(*) FROM call_summaries WHERE call_id = 'dropped'"
        assert db_scalar(url, summary) == 1
    finally:
        worker.stop()
    print(f"abandoned {took:.1f} s after the last audio (timeout {TIMEOUT_S} s)")
    assert took <= TIMEOUT_S + 5, f"abandoned only {took:.1f} s after the last audio"
