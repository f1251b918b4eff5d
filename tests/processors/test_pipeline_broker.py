"""``callsense broker``: an embedded Kafka-protocol broker in the foreground with the callsense
topics pre-created (explicit partitions, audio retention); SIGTERM stops it and frees the port.
Also: ``EmbeddedBroker`` for both kinds, and noida-db keeping its log across a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from callsense.processors.events import ALL_TOPICS, AUDIO_TOPIC, ensure_topics

from callsense.broker import BrokerError, EmbeddedBroker, free_port, wait_for_port
from callsense.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


async def _partitions(bootstrap: str) -> dict[str, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(ALL_TOPICS))
        return {t["topic"]: len(t["partitions"]) for t in described}
    finally:
        await admin.close()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_broker_command_creates_topics_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "CALLSENSE_TOPIC_PARTITIONS": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "callsense.cli", "broker", "--port", str(port),
         "--data-dir", str(tmp_path / "b")],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, 30, proc)
        for _ in range(50):  # the "ready" line comes after the topics are created
            if "ready" in proc.stderr.readline():
                break
        parts = asyncio.run(_partitions(f"127.0.0.1:{port}"))
        assert parts == {t: 3 for t in ALL_TOPICS}
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0
    assert not _port_open(port)


@pytest.mark.parametrize("kind", ["noida", "tansu"])
def test_embedded_broker_start_stop(kind: str, tmp_path: Path) -> None:
    with EmbeddedBroker(kind=kind, data_dir=tmp_path) as broker:
        assert _port_open(broker.port)
        created = ensure_topics(broker.bootstrap, Settings())
        assert AUDIO_TOPIC in created
        assert ensure_topics(broker.bootstrap, Settings()) == []  # idempotent
        pid = broker.pid
    assert not _port_open(broker.port)
    assert pid is not None and _gone(pid)


def _gone(pid: int) -> bool:
    """Exited (no /proc entry, or a zombie not yet reaped)."""
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] == "Z"


def test_noida_keeps_topics_across_restart_and_rejects_partition_mismatch(tmp_path: Path) -> None:
    port = free_port()
    with EmbeddedBroker(kind="noida", port=port, data_dir=tmp_path) as b:
        ensure_topics(b.bootstrap, Settings())
    with EmbeddedBroker(kind="noida", port=port, data_dir=tmp_path) as b:
        assert ensure_topics(b.bootstrap, Settings()) == []  # still there after the restart
        with pytest.raises(RuntimeError, match="partitions"):
            ensure_topics(b.bootstrap, Settings(topic_partitions=7))


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(BrokerError, match="unknown embedded broker kind"):
        EmbeddedBroker(kind="kafka")
