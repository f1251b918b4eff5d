"""Fault suite (``make test-faults``; minutes, so not part of ``make test``).

The worker is SIGKILLed ten times at random moments while three stereo calls stream in slowly
through Apache Kafka (KRaft, one node; checkpoints every 500 ms); a new worker starts after each
kill. Every call must end with exactly the windows offline analysis computes for its audio: none
lost, none written twice, same labels and probabilities. The test prints what it expected and
what it counted.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
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

from callsense.settings import Settings

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(1500)]

AGENT = ("ravdess_04", "neutral", "")  # channel 0
CUSTOMER = ("ravdess_03", "angry", "strong")  # channel 1
KILLS = 10
CALLS = 3


@pytest.fixture(scope="module")
def stereo_call(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("call") / "angry_customer.wav"
    return build_call(shared_data, out, left=AGENT, right=CUSTOMER, clips=4)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_ten_worker_sigkills_lose_and_duplicate_no_window(
    database_url: str, kafka: Any, stereo_call: Path, tmp_path: Path
) -> None:
    from callsense.processors.offline import analyze_file

    offline = sorted(
        (r.to_row("offline") for r in analyze_file(stereo_call, Settings(), call_id="offline")),
        key=lambda r: (r["speaker"], r["start_ms"]),
    )
    env = base_env(
        kafka.bootstrap, database_url, tmp_path / "data",
        CALLSENSE_STATE_CHECKPOINT_MS="500", CALLSENSE_BROKER_KIND="kafka",
    )  # fmt: skip
    ids = [f"kill-loop-{i}" for i in range(CALLS)]
    stored_sql = "SELECT count(*) FROM emotion_windows"
    ended_sql = "SELECT count(*) FROM call_summaries"
    rng = random.Random(7)
    worker = Worker(env, tmp_path / "worker00.log").start()
    wait_for(lambda: "Worker ready" in worker.log(), 120, "first worker ready", worker)
    ingests = [ingest_call(env, stereo_call, cid, speed="0.15") for cid in ids]
    story = []
    try:
        for k in range(1, KILLS + 1):
            time.sleep(rng.uniform(1.0, 5.0))
            worker.kill()  # no shutdown code runs
            story.append(
                f"kill {k}: {db_scalar(database_url, stored_sql)} windows stored, "
                f"{db_scalar(database_url, ended_sql)} of {CALLS} calls ended"
            )
            worker = Worker(env, tmp_path / f"worker{k:02d}.log").start()
            wait_for(lambda w=worker: "Worker ready" in w.log(), 120, f"worker {k} ready", worker)
        for p in ingests:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err
        wait_for(lambda: db_scalar(database_url, ended_sql) == CALLS, 300, "every summary", worker)
        stored = {cid: db_windows(database_url, cid) for cid in ids}
    finally:
        worker.stop()
        for p in ingests:
            if p.poll() is None:
                p.kill()
    print("\n".join(story))
    print(
        f"expected {len(offline)} windows per call ({CALLS * len(offline)} in all), counted "
        + ", ".join(f"{cid}: {len(rows)}" for cid, rows in stored.items())
    )
    assert "0 of 3 calls ended" in story[KILLS // 2], "half the kills must hit calls in flight"
    logs = sorted(tmp_path.glob("worker*.log"))
    for rows in stored.values():
        assert_same_windows(rows, offline, logs)
