"""``callsense broker --kind kafka``: real Apache Kafka (KRaft) from its Maven jars.

The storage is formatted on first start and reused on the next; SIGTERM stops every node
cleanly; ``--nodes 3`` gives a three-node quorum whose topics are replicated three times with
``min.insync.replicas=2``; a missing ``java`` is a clear error. The broker configuration is the
one ``docker-compose.yml`` runs (same version, same settings).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from callsense.processors.events import ALL_TOPICS, AUDIO_TOPIC

from callsense.broker import BrokerError, free_port
from callsense.broker_cli import open_broker
from callsense.kafka_broker import (
    COMMON_PROPERTIES,
    KAFKA_VERSION,
    POM,
    KafkaCluster,
    broker_properties,
    new_cluster_id,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


async def _describe(bootstrap: str) -> list[dict[str, Any]]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.describe_topics(list(ALL_TOPICS))
    finally:
        await admin.close()


async def _topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    """The topic's effective configuration. The request goes to any node; one that has not yet
    caught up with the metadata log answers with an error and no entries, so ask again."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(40):
            res = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            error_code, _msg, _type, _name, entries = res[0].resources[0][:5]
            if error_code == 0 and entries:
                return {e[0]: e[1] for e in entries}
            await asyncio.sleep(0.25)
        raise AssertionError(f"no configuration of {topic} after 10 s (error {error_code})")
    finally:
        await admin.close()


def _start_cli(tmp_path: Path, port: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "CALLSENSE_TOPIC_PARTITIONS": "3"}
    return subprocess.Popen(
        [sys.executable, "-m", "callsense.cli", "broker", "--kind", "kafka", "--port", str(port),
         "--data-dir", str(tmp_path / "kafka"), *args],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_ready_line(proc: subprocess.Popen) -> str:
    lines = []
    for _ in range(200):
        line = proc.stderr.readline()
        lines.append(line)
        if "ready on" in line or not line:
            break
    return "".join(lines)


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def _java_pids(data_dir: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"kafka.Kafka {data_dir}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.fixture(scope="module", autouse=True)
def _needs_kafka() -> None:
    try:
        from callsense.kafka_broker import fetch_jars, java_binary

        java_binary()
        fetch_jars()
    except BrokerError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Apache Kafka not available in CI: {exc}")
        pytest.skip(f"Apache Kafka not available: {exc}")


def test_kafka_broker_formats_once_keeps_topics_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = _start_cli(tmp_path, port)
    try:
        out = _wait_ready_line(proc)
        assert "created topics" in out and "ready on" in out, out
        topics = asyncio.run(_describe(f"127.0.0.1:{port}"))
        assert {t["topic"]: len(t["partitions"]) for t in topics} == {t: 3 for t in ALL_TOPICS}
        configs = asyncio.run(_topic_configs(f"127.0.0.1:{port}", AUDIO_TOPIC))
        assert configs["retention.ms"] == "21600000"
    finally:
        code = _stop(proc)
    assert code == 0
    assert _java_pids(tmp_path / "kafka") == []
    meta = (tmp_path / "kafka" / "node-1" / "data" / "meta.properties").read_text()
    cluster_id = (tmp_path / "kafka" / "cluster.id").read_text().strip()
    assert f"cluster.id={cluster_id}" in meta

    # a second start reuses the formatted storage: the topics are still there
    proc = _start_cli(tmp_path, port)
    try:
        out = _wait_ready_line(proc)
        assert "ready on" in out and "created topics" not in out, out
    finally:
        assert _stop(proc) == 0
    assert (tmp_path / "kafka" / "cluster.id").read_text().strip() == cluster_id


def test_three_nodes_replicate_every_topic(tmp_path: Path) -> None:
    port = free_port()
    proc = _start_cli(tmp_path, port, "--nodes", "3")
    try:
        out = _wait_ready_line(proc)
        assert "ready on" in out, out
        bootstrap = re.search(r"ready on (\S+)", out).group(1)
        assert len(bootstrap.split(",")) == 3
        for t in asyncio.run(_describe(bootstrap)):
            for p in t["partitions"]:
                assert sorted(p["replicas"]) == [1, 2, 3], t
                assert sorted(p["isr"]) == [1, 2, 3], t
        configs = asyncio.run(_topic_configs(bootstrap, AUDIO_TOPIC))
        assert configs["min.insync.replicas"] == "2"
    finally:
        assert _stop(proc) == 0
    assert _java_pids(tmp_path / "kafka") == []


def test_missing_java_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no java on this PATH
    done = subprocess.run(
        [sys.executable, "-m", "callsense.cli", "broker", "--kind", "kafka",
         "--port", str(free_port()), "--data-dir", str(tmp_path / "k")],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "needs Java 17" in done.stderr, done.stderr


def test_missing_jars_without_maven_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent),
           "CALLSENSE_KAFKA_HOME": str(tmp_path / "empty")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "callsense.cli", "broker", "--kind", "kafka", "--fetch"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Maven ('mvn') is not installed" in done.stderr, done.stderr


def test_embedded_brokers_run_alone() -> None:
    with pytest.raises(BrokerError, match="needs --kind kafka"):
        open_broker("noida", None, Path("unused"), nodes=3)
    with pytest.raises(BrokerError, match="1 or 3"):
        KafkaCluster(nodes=2)


def test_cluster_ids_are_uuids_the_storage_tool_accepts() -> None:
    """One random id in 64 would start with "-", which kafka-storage takes for an option
    ("argument --cluster-id/-t: expected one argument"); 5000 draws meet ~78 such ids."""
    import base64
    import uuid

    ids = {new_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert not [i for i in ids if i.startswith("-")]
    for i in list(ids)[:50]:
        assert len(i) == 22
        assert uuid.UUID(bytes=base64.urlsafe_b64decode(i + "==")).version == 4


def test_cluster_properties() -> None:
    ports = [(9092, 9093), (9094, 9095), (9096, 9097)]
    props = broker_properties(2, "127.0.0.1", ports, Path("/d"))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    single = broker_properties(1, "127.0.0.1", ports[:1], Path("/d"))
    assert single["min.insync.replicas"] == "1"
    assert single["default.replication.factor"] == "1"


def test_compose_runs_the_same_kafka_version_and_settings() -> None:
    """docker-compose.yml describes what the tests ran: same version (pom.xml, the Python
    constant and the image tag) and the same broker settings (KAFKA_<NAME> variables)."""
    pom = POM.read_text()
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:${{KAFKA_VERSION:-{KAFKA_VERSION}}}"
    assert compose["services"]["kafka-init"]["image"] == kafka["image"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    for name, value in COMMON_PROPERTIES.items():
        var = "KAFKA_" + name.upper().replace(".", "_")
        assert env.get(var) == value, (var, env.get(var), value)
    single = broker_properties(1, "kafka", [(9092, 9093)], Path("/var/lib/kafka/data"))
    for name in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                 "transaction.state.log.min.isr", "default.replication.factor",
                 "min.insync.replicas"):  # fmt: skip
        var = "KAFKA_" + name.upper().replace(".", "_")
        assert env.get(var) == single[name], (var, env.get(var), single[name])
