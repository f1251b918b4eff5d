"""Horizontal scaling: two ``callsense worker`` processes in one consumer group.

Runs on Apache Kafka (KRaft, single node; the three-node failover is in
``test_kafka_failover.py``). Four calls, one per partition of ``callsense.audio``, stream in
while both workers run, so each worker owns two calls. One worker is SIGKILLed while its calls
are mid-stream; the group rebalances, the survivor restores those calls' state from the
``call-state`` changelog, replays the audio events after the last committed offsets, and
finishes them. Every call must end up with exactly the windows ``analyze_file`` computes for its
audio offline (same keys, labels and probabilities): none lost, none written twice. Runs on
SQLite and PostgreSQL through the ``database_url`` fixture.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from callsense.processors.events import WINDOWS_TOPIC  # noqa: E402
from support.streaming import (  # noqa: E402
    REPO_ROOT,
    Worker,
    audio_partitions,
    base_env,
    build_call,
    db_scalar,
    db_windows,
    partition_of,
    read_topic,
    wait_for,
)

from callsense.kafka_broker import KafkaCluster  # noqa: E402
from callsense.settings import Settings  # noqa: E402

pytestmark = pytest.mark.slow

PARTITIONS = 4
# two different calls (agent on channel 0, customer on channel 1), reused under several call ids
AUDIO = {
    "a": (("ravdess_04", "neutral", ""), ("ravdess_03", "angry", "strong")),
    "b": (("ravdess_06", "happy", "normal"), ("ravdess_05", "sad", "normal")),
}



def call_ids_one_per_partition(prefix: str) -> list[str]:
    found: dict[int, str] = {}
    i = 0
    while len(found) < PARTITIONS:
        cid = f"{prefix}-{i}"
        found.setdefault(partition_of(cid), cid)
        i += 1
    return [found[p] for p in range(PARTITIONS)]


@pytest.fixture(scope="module")
def calls_audio(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two stereo calls built from RAVDESS and the windows ``analyze_file`` computes for them."""
    from callsense.processors.offline import analyze_file

    out: dict[str, Any] = {}
    folder = tmp_path_factory.mktemp("calls")
    for name, (left, right) in AUDIO.items():
        path = build_call(shared_data, folder / f"{name}.wav", left=left, right=right, clips=4)
        rows = [r.to_row("x") for r in analyze_file(path, Settings(), call_id="x")]
        out[name] = (path, sorted(rows, key=lambda r: (r["speaker"], r["start_ms"])))
    return out


def _key(rows: list[dict[str, Any]]) -> list[tuple]:
    return [
        (r["speaker"], r["start_ms"], r["end_ms"], r["label"], r["smoothed_label"]) for r in rows
    ]


def _ingest(env: dict[str, str], path: Path, call_id: str, speed: str = "1.5") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "callsense.cli", "ingest", str(path), "--call-id", call_id,
         "--speed", speed, "--agent-channel", "0", "--quiet"],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@dataclass
class Cluster:
    """A broker with the topics, the worker environment and two (not yet started)
    workers ``a`` and ``b`` in one group; ingest processes started through it are killed at
    exit."""

    broker: KafkaCluster
    env: dict[str, str]
    database_url: str
    workers: dict[str, Worker]
    ingests: list[subprocess.Popen] = field(default_factory=list)

    def ingest(self, path: Path, call_id: str, speed: str = "1.5") -> None:
        self.ingests.append(_ingest(self.env, path, call_id, speed))

    def finish_ingests(self) -> None:
        for proc in self.ingests:
            _out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err

    def windows(self, call_id: str) -> int:
        q = "SELECT count(*) FROM emotion_windows WHERE call_id = :c"
        return int(db_scalar(self.database_url, q, c=call_id) or 0)

    def ended(self, call_ids: list[str]) -> int:
        q = "SELECT count(*) FROM call_summaries WHERE call_id IN ({})".format(
            ", ".join(f"'{c}'" for c in call_ids)
        )
        return int(db_scalar(self.database_url, q) or 0)


@contextmanager
def cluster(broker: KafkaCluster, tmp_path: Path, database_url: str) -> Iterator[Cluster]:
    # the ``kafka`` fixture created the topics with the default partition count
    assert Settings().topic_partitions == PARTITIONS
    env = base_env(
        broker.bootstrap,
        database_url,
        tmp_path / "data",
        CALLSENSE_BROKER_KIND=broker.kind,
        CALLSENSE_TOPIC_PARTITIONS=str(PARTITIONS),
        CALLSENSE_STATE_CHECKPOINT_MS="500",
    )
    workers = {
        name: Worker(
            {**env, "CALLSENSE_DATA_DIR": str(tmp_path / f"data-{name}")},
            tmp_path / f"worker-{name}.log",
        )
        for name in ("a", "b")
    }
    c = Cluster(broker, env, database_url, workers)
    try:
        yield c
    finally:
        for proc in c.ingests:
            if proc.poll() is None:
                proc.kill()
        for w in workers.values():
            w.stop()


def test_two_workers_share_calls_and_survive_a_sigkill(
    database_url: str, kafka: KafkaCluster, calls_audio: dict[str, Any], tmp_path: Path
) -> None:
    with cluster(kafka, tmp_path, database_url) as c:
        workers = c.workers
        workers["a"].start()
        wait_for(lambda: "Worker ready" in workers["a"].log(), 120, "worker a", workers["a"])
        workers["b"].start()

        def split() -> dict[str, set[int]] | None:
            got = {n: audio_partitions(w.log()) for n, w in workers.items()}
            if any(not p for p in got.values()):
                return None
            if set().union(*got.values()) != set(range(PARTITIONS)):
                return None
            return got  # type: ignore[return-value]

        owned = wait_for(split, 120, "both workers sharing the audio partitions")
        assert not owned["a"] & owned["b"], owned

        call_ids = call_ids_one_per_partition("scale")
        audio_of = {cid: "ab"[i % 2] for i, cid in enumerate(call_ids)}
        for cid in call_ids:
            c.ingest(calls_audio[audio_of[cid]][0], cid)
        victim, survivor = "a", "b"
        victim_calls = [x for x in call_ids if partition_of(x) in owned[victim]]
        survivor_calls = [x for x in call_ids if partition_of(x) in owned[survivor]]
        assert len(victim_calls) == len(survivor_calls) == 2

        # calls are spread over both workers: each worker writes windows for its own calls
        wait_for(lambda: all(c.windows(x) >= 2 for x in call_ids), 180, "windows of all calls")
        workers[victim].kill()  # mid-stream: no shutdown code runs
        killed_at = time.monotonic()
        at_kill = {x: c.windows(x) for x in victim_calls}
        assert c.ended(victim_calls) == 0, "the victim's calls must still be in flight when it dies"
        c.finish_ingests()
        wait_for(
            lambda: c.ended(call_ids) == len(call_ids), 240, "every call ended", workers[survivor]
        )
        recovered_s = time.monotonic() - killed_at
        took_over = audio_partitions(workers[survivor].log())
        stored = {cid: db_windows(database_url, cid) for cid in call_ids}
        status_q = "SELECT status FROM calls WHERE call_id = :c"
        statuses = {cid: db_scalar(database_url, status_q, c=cid) for cid in call_ids}
        topic = read_topic(c.broker.bootstrap, WINDOWS_TOPIC)
    window_events = [e for e in topic if e.get("kind") == "window"]

    # the survivor took over every partition, including the dead worker's
    assert took_over == set(range(PARTITIONS)), took_over
    print(f"calls finished {recovered_s:.1f} s after the kill; windows at kill: {at_kill}")
    for cid in call_ids:
        expected = calls_audio[audio_of[cid]][1]
        got = stored[cid]
        # exactly the offline windows: none lost, none duplicated, same labels/probabilities
        assert _key(got) == _key(expected), cid
        for s, o in zip(got, expected, strict=True):
            for label, p in o["probabilities"].items():
                assert s["probabilities"][label] == pytest.approx(p, abs=1e-4)
        assert statuses[cid] == "ended"
    for cid in victim_calls:
        assert 0 < at_kill[cid] < len(stored[cid]), "the kill must interrupt the victim's calls"
    # the windows topic shows the replay (at-least-once); the database holds each window once
    per_call = {cid: sum(e["call_id"] == cid for e in window_events) for cid in call_ids}
    assert all(per_call[c] >= len(stored[c]) for c in call_ids), per_call


def test_calls_move_to_a_worker_that_joins_mid_stream(
    kafka: KafkaCluster, calls_audio: dict[str, Any], tmp_path: Path
) -> None:
    """Scale-up and back: a second worker joins while calls are in flight on the first; half of
    the partitions (and their calls' state) move to it; it is SIGKILLed mid-call and they move
    back to the first worker. Every call still ends with exactly the offline windows."""
    database_url = f"sqlite:///{tmp_path / 'join.db'}"
    call_ids = call_ids_one_per_partition("join")
    audio_of = {cid: "ab"[i % 2] for i, cid in enumerate(call_ids)}
    with cluster(kafka, tmp_path, database_url) as c:
        workers = c.workers
        workers["a"].start()
        wait_for(lambda: "Worker ready" in workers["a"].log(), 120, "worker a", workers["a"])
        for cid in call_ids:
            # slower than real time: the calls must outlast a join and a failover
            c.ingest(calls_audio[audio_of[cid]][0], cid, speed="0.6")
        wait_for(lambda: all(c.windows(x) >= 1 for x in call_ids), 180, "first windows")
        workers["b"].start()

        def split() -> dict[str, set[int]] | None:
            got = {n: audio_partitions(w.log()) for n, w in workers.items()}
            return got if all(got.values()) else None  # type: ignore[return-value]

        owned = wait_for(split, 120, "the partitions split over both workers", workers["b"])
        moved = [x for x in call_ids if partition_of(x) in owned["b"]]
        at_join = {x: c.windows(x) for x in moved}
        # the newcomer works on the moved calls, then dies: they move back to the first
        # worker, whose memory still holds what it knew about them before the join
        wait_for(
            lambda: any(c.windows(x) > at_join[x] for x in moved),
            120,
            "windows from the newcomer",
            workers["b"],
        )
        workers["b"].kill()
        back_at = {x: c.windows(x) for x in moved}
        c.finish_ingests()
        wait_for(lambda: c.ended(call_ids) == len(call_ids), 240, "calls ended")
        stored = {cid: db_windows(database_url, cid) for cid in call_ids}
        final = audio_partitions(workers["a"].log())

    assert moved, owned
    assert final == set(range(PARTITIONS)), final
    print(f"after the join: {owned}; moved calls' windows at join {at_join}, at kill {back_at}")
    for cid in call_ids:
        expected = calls_audio[audio_of[cid]][1]
        assert _key(stored[cid]) == _key(expected), cid
    assert any(back_at[c] < len(stored[c]) for c in moved), "a moved call must still be running"
