"""Broker failover on a three-node Apache Kafka cluster (KRaft, replication 3, min ISR 2).

A stereo call streams in at real-time pace; once its first windows are stored, the broker that
leads the call's ``callsense.audio`` partition is SIGKILLed. Leadership moves to a surviving
replica, the ingest producer and the worker follow it, and the call finishes with exactly the
windows ``analyze_file`` computes offline: none lost, none written twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from callsense.processors.events import AUDIO_TOPIC  # noqa: E402
from support.streaming import (  # noqa: E402  # noqa: E402
    Worker,
    assert_same_windows,
    base_env,
    build_call,
    db_scalar,
    db_windows,
    ingest_call,
    partition_of,  # noqa: E402
    wait_for,
)

from callsense.kafka_broker import KafkaCluster  # noqa: E402
from callsense.settings import Settings  # noqa: E402

pytestmark = pytest.mark.slow

AGENT = ("ravdess_04", "neutral", "")
CUSTOMER = ("ravdess_03", "angry", "strong")


def leader_of(bootstrap: str, topic: str, partition: int) -> int | None:
    """Node id of the partition's leader as the cluster reports it now (None: no answer, e.g.
    the request went to a node that just died)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    async def ask() -> int | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            (described,) = await admin.describe_topics([topic])
            leaders = {p["partition"]: p["leader"] for p in described["partitions"]}
            return leaders.get(partition)
        except KafkaError:
            return None
        finally:
            await admin.close()

    return asyncio.run(ask())


@pytest.mark.fault_suite  # also run by make test-faults
def test_call_survives_sigkill_of_its_partition_leader(
    database_url: str, kafka3: KafkaCluster, shared_data: Path, tmp_path: Path
) -> None:
    from callsense.processors.offline import analyze_file

    call = build_call(shared_data, tmp_path / "call.wav", left=AGENT, right=CUSTOMER, clips=4)
    offline = sorted(
        (r.to_row("x") for r in analyze_file(call, Settings(), call_id="x", agent_channel=0)),
        key=lambda r: (r["speaker"], r["start_ms"]),
    )
    call_id = "failover-1"
    partition = partition_of(call_id, Settings().topic_partitions)
    env = base_env(
        kafka3.bootstrap, database_url, tmp_path / "data",
        CALLSENSE_BROKER_KIND="kafka", CALLSENSE_TOPIC_REPLICATION="3",
        CALLSENSE_STATE_CHECKPOINT_MS="500",
    )  # fmt: skip
    count = f"SELECT count(*) FROM emotion_windows WHERE call_id = '{call_id}'"
    ended = f"SELECT count(*) FROM call_summaries WHERE call_id = '{call_id}'"

    worker = Worker(env, tmp_path / "worker.log").start()
    ingest = None
    try:
        wait_for(lambda: "Worker ready" in worker.log(), 180, "worker ready", worker)
        ingest = ingest_call(env, call, call_id, speed="1")
        wait_for(lambda: db_scalar(database_url, count) >= 3, 120, "first windows", worker)
        leader = leader_of(kafka3.bootstrap, AUDIO_TOPIC, partition)
        assert leader in kafka3.node_ids
        kafka3.kill(leader)  # mid-call: the partition's leader dies without a word
        at_kill = db_scalar(database_url, count)
        assert db_scalar(database_url, ended) == 0, "the call must still be in flight"
        survivors = ",".join(
            f"127.0.0.1:{p}" for n, (p, _) in zip(kafka3.node_ids, kafka3.ports, strict=True)
            if n != leader
        )  # fmt: skip

        def moved() -> int | None:
            now = leader_of(survivors, AUDIO_TOPIC, partition)
            return now if now not in (None, -1, leader) else None

        new_leader = wait_for(moved, 60, "a new leader of the call's partition")
        _out, err = ingest.communicate(timeout=180)
        assert ingest.returncode == 0, err
        wait_for(lambda: db_scalar(database_url, ended) == 1, 240, "call summary", worker)
        stored = db_windows(database_url, call_id)
    finally:
        if ingest is not None and ingest.poll() is None:
            ingest.kill()
        worker.stop()

    print(f"killed node {leader} (leader of partition {partition}) with {at_kill} windows "
          f"stored; new leader {new_leader}")  # fmt: skip
    assert 0 < at_kill < len(offline), "the kill must interrupt the call"
    assert_same_windows(stored, offline, [tmp_path / "worker.log"])
    status = db_scalar(database_url, f"SELECT status FROM calls WHERE call_id = '{call_id}'")
    assert status == "ended"
