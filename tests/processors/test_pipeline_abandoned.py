"""Calls that never end: one whose audio stops without a call end (a dropped line, a crashed
telephony fork) ends as ``abandoned`` within the idle timeout plus 5 s; one whose audio goes on
past ``CALLSENSE_MAX_CALL_S`` (a line left open) ends as ``truncated`` and its later audio is
dead-lettered. Real Apache Kafka, a real worker, SQLite."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from callsense.processors.events import AUDIO_TOPIC, DEADLETTER_TOPIC, AudioChunk, CallStart
from support.streaming import Worker, base_env, db_scalar, produce, read_topic, wait_for

pytestmark = pytest.mark.slow

TIMEOUT_S = 5
MAX_CALL_S = 3


@pytest.mark.fault_suite  # also run by make test-faults
def test_a_call_that_goes_silent_ends_abandoned_within_timeout_plus_5_s(
    kafka: Any, tmp_path: Path
) -> None:
    from callsense.storage.db import upgrade

    url = f"sqlite:///{tmp_path / 'calls.db'}"
    upgrade(url)
    env = base_env(kafka.bootstrap, url, tmp_path / "data", CALLSENSE_BROKER_KIND="kafka",
                   CALLSENSE_CALL_IDLE_TIMEOUT_S=str(TIMEOUT_S),
                   CALLSENSE_MAX_CALL_S=str(MAX_CALL_S))  # fmt: skip
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
        # a line left open: 5 s of audio at once, past the 3 s maximum, and no call_end
        msgs.append((b"endless", CallStart("endless", sr, 2, 0, queue="q").encode()))
        for i in range(20):
            pcm = (0.05 * rng.standard_normal((2, sr // 4))).astype(np.float32)
            msgs.append((b"endless", AudioChunk.from_array("endless", i, i * sr // 4, sr,
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
        endless = "SELECT status FROM calls WHERE call_id = 'endless'"
        wait_for(lambda: db_scalar(url, endless) == "truncated", 30, "truncated", worker)
        ended = db_scalar(url, "SELECT duration_s FROM call_summaries WHERE call_id = 'endless'")
    finally:
        worker.stop()
    dead = [d for d in read_topic(kafka.bootstrap, DEADLETTER_TOPIC) if d["call_id"] == "endless"]
    print(f"abandoned {took:.1f} s after the last audio (timeout {TIMEOUT_S} s); the endless "
          f"call ended 'truncated' at {ended} s with {len(dead)} of 20 chunks dead-lettered "
          f"(expected 8: those starting at or past {MAX_CALL_S} s)")  # fmt: skip
    assert ended == MAX_CALL_S and len(dead) == 8
    assert all("CALLSENSE_MAX_CALL_S" in d["reason"] for d in dead), [d["reason"] for d in dead]
    assert took <= TIMEOUT_S + 5, f"abandoned only {took:.1f} s after the last audio"
