"""Fault suite (``make test-faults``; minutes, so not part of ``make test``). Each test prints
what it expected and what it counted.

SIGKILL loop: the worker is SIGKILLed ten times at random moments while three stereo calls
stream in slowly through Apache Kafka (KRaft, one node; checkpoints every 500 ms); a new worker
starts after each kill. Every call must end with exactly the windows offline analysis computes
for its audio: none lost, none written twice, same labels and probabilities.

Webhook outage: alerts go to a healthy, a hanging and a down endpoint for ten minutes, with a
worker SIGKILL in the middle; each alert event reaches every answering endpoint once by id, the
healthy one within 2 s.
"""

from __future__ import annotations

import os
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from callsense.processors.events import ALERTS_TOPIC, WINDOWS_TOPIC, dumps
from support.streaming import (
    Worker,
    assert_same_windows,
    base_env,
    build_call,
    db_scalar,
    db_windows,
    ingest_call,
    produce,
    read_topic,
    wait_for,
)
from support.webhooks import SECRET, Receiver, angry_call

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


OUTAGE_S = float(os.environ.get("FAULTS_WEBHOOK_OUTAGE_S", "600"))  # the Must show: 10 minutes
HOOK_CALLS = 6  # three raised before the worker SIGKILL, three after; each raises and resolves


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_alerts_reach_a_receiver_down_ten_minutes_once_and_a_hanging_one_delays_nobody(
    database_url: str, kafka: Any, tmp_path: Path
) -> None:
    """Three webhook endpoints behind the real worker and Apache Kafka: one healthy, one that
    never answers (every attempt times out), one down (connection refused) for ``OUTAGE_S``;
    the worker is SIGKILLed half-way through the outage. Every alert event must reach the
    healthy endpoint within 2 s of being raised, and the endpoint that was down exactly once
    by id after it came back."""
    healthy = Receiver().__enter__()
    hanging = Receiver(hang_s=3600).__enter__()
    with Receiver() as gone:  # reserve a port, then close it: connection refused
        down_port, down_url = gone.port, gone.url
    env = base_env(
        kafka.bootstrap, database_url, tmp_path / "data", CALLSENSE_BROKER_KIND="kafka",
        CALLSENSE_WEBHOOK_URL=f"{healthy.url},{hanging.url},{down_url}",
        CALLSENSE_WEBHOOK_SECRET=SECRET, CALLSENSE_WEBHOOK_TIMEOUT_S="5",
    )  # fmt: skip
    calls = [f"hook-outage-{i}" for i in range(HOOK_CALLS)]
    began = time.time()
    worker = Worker(env, tmp_path / "worker0.log").start()
    down = None
    story = []
    try:
        wait_for(lambda: "Worker ready" in worker.log(), 120, "worker ready", worker)
        for half, batch in enumerate((calls[:3], calls[3:])):
            for cid in batch:
                produce(kafka.bootstrap, [(cid.encode(), dumps(e)) for e in angry_call(cid)],
                        WINDOWS_TOPIC)  # fmt: skip
            n = 2 * len(calls[: 3 * (half + 1)])
            wait_for(lambda n=n: len(healthy.accepted) == n, 120, f"{n} at healthy", worker)
            story.append(f"{time.time() - began:5.0f} s: {n} alert events at the healthy endpoint")
            if half == 0:  # SIGKILL half-way through the outage, then a new worker
                time.sleep(max(0.0, began + OUTAGE_S / 2 - time.time()))
                worker.kill()
                story.append(f"{time.time() - began:5.0f} s: worker SIGKILLed")
                worker = Worker(env, tmp_path / "worker1.log").start()
                wait_for(lambda w=worker: "Worker ready" in w.log(), 120, "worker 2 ready", worker)
        time.sleep(max(0.0, began + OUTAGE_S - time.time()))
        down = Receiver(port=down_port).__enter__()
        back = time.time()
        story.append(f"{back - began:5.0f} s: the endpoint that was down listens again")
        wait_for(lambda: len(down.accepted) == 2 * HOOK_CALLS, 300, "every event after", worker)
        time.sleep(5)  # anything sent twice would arrive now
        alerts = read_topic(kafka.bootstrap, ALERTS_TOPIC)
    finally:
        worker.stop()
        for r in (healthy, hanging, down):
            if r is not None:
                r.__exit__()
    raised = {a["event_id"]: datetime.fromisoformat(a["occurred_at"]).timestamp() for a in alerts}
    delays = [healthy.accepted_at[i] - raised[i] for i in raised]
    print("\n".join(story))
    print(
        f"alert events: expected {2 * HOOK_CALLS}, on the topic {len(raised)}; healthy endpoint "
        f"{len(healthy.accepted)} ids, each {sorted(set(healthy.accepted.values()))} time(s), "
        f"delay after raise max {max(delays):.2f} s, median {sorted(delays)[len(delays) // 2]:.2f}"
        f" s; hanging endpoint {hanging.arrived} attempts, none answered; down for "
        f"{back - began:.0f} s: {len(down.accepted)} ids, each "
        f"{sorted(set(down.accepted.values()))} time(s), the last "
        f"{max(down.accepted_at.values()) - back:.1f} s after it came back"
    )
    assert len(raised) == 2 * HOOK_CALLS
    assert healthy.accepted == {i: 1 for i in raised} == down.accepted
    assert max(delays) < 2.0
    assert back - began >= OUTAGE_S
    assert all(r["valid"] for r in down.requests + healthy.requests)
    assert hanging.arrived >= 2 * HOOK_CALLS // 2 and not hanging.requests  # tried, never answered
