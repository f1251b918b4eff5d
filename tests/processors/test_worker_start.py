"""Any number of ``callsense worker`` processes may start at the same instant on a database
nothing has migrated yet: the migration lock lets one migrate while the others wait, so all
three come up and share the audio partitions. Apache Kafka; SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.streaming import Worker, audio_partitions, base_env, wait_for

from callsense.kafka_broker import KafkaCluster
from callsense.settings import Settings

pytestmark = pytest.mark.slow


def test_three_workers_started_at_once_on_a_new_database_all_hold_partitions(
    empty_database_url: str, kafka: KafkaCluster, tmp_path: Path
) -> None:
    partitions = Settings().topic_partitions
    assert partitions >= 3
    env = base_env(kafka.bootstrap, empty_database_url, tmp_path / "data",
                   CALLSENSE_BROKER_KIND=kafka.kind)  # fmt: skip
    workers = [
        Worker({**env, "CALLSENSE_DATA_DIR": str(tmp_path / f"data-{i}")},
               tmp_path / f"worker-{i}.log")
        for i in range(3)
    ]  # fmt: skip
    try:
        for w in workers:  # at once: no worker waits for another to be ready
            w.start()

        def shared() -> list[set[int]] | None:
            dead = [i for i, w in enumerate(workers) if not w.alive()]
            if dead:
                raise AssertionError(f"worker {dead[0]} died:\n{workers[dead[0]].log()[-4000:]}")
            owned = [audio_partitions(w.log()) for w in workers]
            if any(not o for o in owned) or set().union(*owned) != set(range(partitions)):
                return None
            return owned  # type: ignore[return-value]

        owned = wait_for(shared, 240, "three workers sharing the audio partitions")
        time.sleep(30)  # and still there 30 s later
        assert all(w.alive() for w in workers), [w.log()[-2000:] for w in workers]
        owned = wait_for(shared, 60, "the partitions still shared")
        assert sum(len(o) for o in owned) == partitions, owned  # each partition once
        for w in workers:
            assert "OperationalError" not in w.log() and "ProgrammingError" not in w.log()
    finally:
        for w in workers:
            w.stop()
