"""Real Apache Kafka (KRaft) on 127.0.0.1, from the broker's Maven Central jars, run with ``java``.

``callsense broker --kind kafka`` and the integration tests run the very broker production runs.
The jars are resolved once by Maven from ``deploy/kafka/pom.xml`` into a cache
(``CALLSENSE_KAFKA_HOME``, default ``~/.cache/callsense/kafka-<version>``); a directory that
already holds the jars (e.g. an unpacked Apache Kafka distribution with ``libs/``) works as well.

One node, or three (``nodes=3``): every node is a combined broker + controller, the controllers
form the KRaft quorum, and topics are replicated to all three with ``min.insync.replicas=2``.
:func:`broker_properties` is the one broker configuration: ``docker-compose.yml`` sets the same
version and the same values (a test compares them).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from callsense.broker import BrokerError, BrokerProcess, free_port, wait_for_port

KAFKA_VERSION = "4.1.2"
POM = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "pom.xml"

# Settings shared by every node count (and by docker-compose.yml). Node ids, listeners and the
# replication of internal topics depend on the cluster and come from broker_properties().
COMMON_PROPERTIES: dict[str, str] = {
    "process.roles": "broker,controller",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    # audio chunks are 8 kB; headroom for stereo 48 kHz chunks and call-state checkpoints
    "message.max.bytes": "2097152",
    "group.initial.rebalance.delay.ms": "3000",
    "auto.create.topics.enable": "false",
}

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = warn
"""


def replication_properties(nodes: int) -> dict[str, str]:
    """Replication of data and internal topics: all nodes, and a write needs two of three."""
    isr = "2" if nodes >= 3 else "1"
    rf = str(min(nodes, 3))
    return {
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
    }


def broker_properties(
    node_id: int, host: str, ports: list[tuple[int, int]], log_dir: Path
) -> dict[str, str]:
    """server.properties of node ``node_id`` (1-based) of a cluster on ``ports``
    [(broker port, controller port) per node]."""
    port, controller = ports[node_id - 1]
    voters = ",".join(f"{i}@{host}:{c}" for i, (_, c) in enumerate(ports, start=1))
    return {
        **COMMON_PROPERTIES,
        **replication_properties(len(ports)),
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "log.dirs": str(log_dir),
    }


def kafka_home() -> Path:
    """Where the jars are (or go): CALLSENSE_KAFKA_HOME or the per-user cache."""
    from callsense.settings import Settings

    configured = Settings().kafka_home
    if configured:
        return configured.expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "callsense" / f"kafka-{KAFKA_VERSION}"


def _jar_dir(home: Path) -> Path | None:
    for d in (home / "libs", home):
        if any(d.glob("kafka_2.13-*.jar")):
            return d
    return None


def fetch_jars(home: Path | None = None, quiet: bool = True) -> Path:
    """Resolve the broker's jars with Maven into ``home/libs`` (once); returns the jar dir."""
    home = home or kafka_home()
    found = _jar_dir(home)
    if found is not None:
        return found
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            f"Apache Kafka's jars are not in {home} and Maven ('mvn') is not installed to fetch "
            "them: install Maven (Debian: apt-get install maven), or set CALLSENSE_KAFKA_HOME to "
            f"an Apache Kafka {KAFKA_VERSION} distribution"
        )
    if not POM.exists():
        raise BrokerError(f"{POM} not found: fetch the jars from a source checkout (make kafka)")
    staging = home / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [mvn, "-B", "-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime",
           f"-DoutputDirectory={staging}"]  # fmt: skip
    if quiet:
        cmd.insert(1, "-q")
    done = subprocess.run(cmd, capture_output=quiet, text=True)
    if done.returncode != 0:
        tail = (done.stdout or "")[-2000:] if quiet else ""
        raise BrokerError(f"Maven could not fetch Apache Kafka {KAFKA_VERSION}:\n{tail}")
    staging.rename(home / "libs")  # whole or not at all
    return home / "libs"


def java_binary() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "Apache Kafka needs Java 17 or newer and 'java' is not on PATH "
            "(Debian: apt-get install openjdk-17-jre-headless); the embedded brokers "
            "(--kind noida or tansu) need no Java"
        )
    return java


def _write_properties(path: Path, props: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def new_cluster_id() -> str:
    """A KRaft cluster id: a base64url-encoded random UUID without padding (22 characters).
    Like Kafka's own ``Uuid.randomUuid``, never one starting with "-", which the storage
    tool's argument parser would take for an option."""
    import base64

    while True:
        raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not raw.startswith("-"):
            return raw


class KafkaCluster(BrokerProcess):
    """One or three Apache Kafka nodes (KRaft, combined broker + controller) as child processes.

    >>> with KafkaCluster(data_dir=tmp, nodes=3) as kafka:   # doctest: +SKIP
    ...     kafka.bootstrap          # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
    ...     kafka.kill(2); kafka.start_node(2)

    The storage is formatted on first start (the cluster id is kept in ``DATA_DIR/cluster.id``);
    a later start on the same data dir reuses it. ``stop()`` sends SIGTERM (controlled shutdown)
    to every node and kills what has not exited after ``timeout``.
    """

    kind = "kafka"

    def __init__(
        self,
        data_dir: Path | str = Path("./var/kafka"),
        nodes: int = 1,
        port: int | None = None,
        host: str = "127.0.0.1",
        heap: str = "512m",
        ready_timeout: float = 90.0,
    ) -> None:
        if nodes not in (1, 3):
            raise BrokerError(f"nodes must be 1 or 3, not {nodes}")
        self.data_dir = Path(data_dir)
        self.host = host
        self.heap = heap
        self.ready_timeout = ready_timeout
        first = port or free_port(host)
        self.ports = [(first, free_port(host))] + [
            (free_port(host), free_port(host)) for _ in range(nodes - 1)
        ]
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def bootstrap(self) -> str:  # type: ignore[override]
        return ",".join(f"{self.host}:{p}" for p, _ in self.ports)

    @property
    def node_ids(self) -> list[int]:
        return list(range(1, len(self.ports) + 1))

    @property
    def port(self) -> int:
        return self.ports[0][0]

    def node_dir(self, node_id: int) -> Path:
        return self.data_dir / f"node-{node_id}"

    def log_path(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "kafka.log"

    def _cluster_id(self) -> str:
        path = self.data_dir / "cluster.id"
        if not path.exists():
            path.write_text(new_cluster_id())
        return path.read_text().strip()

    def _java(self, jars: Path, main: str, *args: str, log: Path | None = None) -> list[str]:
        opts = [f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
        if log is not None:
            opts.append(f"-Dlog4j2.configurationFile={log.parent / 'log4j2.properties'}")
        return [java_binary(), *opts, "-cp", f"{jars}/*", main, *args]

    def _configure(self, jars: Path, node_id: int, cluster_id: str) -> Path:
        """Write node ``node_id``'s configuration; format its storage on first start."""
        node = self.node_dir(node_id)
        (node / "data").mkdir(parents=True, exist_ok=True)
        props = node / "server.properties"
        _write_properties(props, broker_properties(node_id, self.host, self.ports, node / "data"))
        (node / "log4j2.properties").write_text(LOG4J2.format(log=self.log_path(node_id)))
        if not (node / "data" / "meta.properties").exists():
            args = ["format", "--ignore-formatted", "-t", cluster_id, "-c", str(props)]
            cmd = self._java(jars, "kafka.tools.StorageTool", *args, log=self.log_path(node_id))
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise BrokerError(f"formatting Kafka storage failed: {done.stdout}{done.stderr}")
        return props

    def start(self) -> KafkaCluster:
        jars = fetch_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = self._cluster_id()
        for node_id in self.node_ids:
            self._configure(jars, node_id, cluster_id)
        for node_id in self.node_ids:
            self.start_node(node_id, wait=False)
        try:
            for node_id in self.node_ids:
                self._wait_ready(node_id)
        except BrokerError:
            self.stop()
            raise
        return self

    def start_node(self, node_id: int, wait: bool = True) -> None:
        """Start node ``node_id`` (again, after ``kill``) with its existing storage."""
        proc = self.procs.get(node_id)
        if proc is not None and proc.poll() is None:
            return
        node = self.node_dir(node_id)
        cmd = self._java(fetch_jars(), "kafka.Kafka", str(node / "server.properties"),
                         log=self.log_path(node_id))  # fmt: skip
        with open(node / "stdout.log", "ab") as out:
            self.procs[node_id] = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        if wait:
            self._wait_ready(node_id)

    def _wait_ready(self, node_id: int) -> None:
        deadline = time.monotonic() + self.ready_timeout
        proc = self.procs[node_id]
        try:
            wait_for_port(self.host, self.ports[node_id - 1][0], self.ready_timeout, proc)
        except BrokerError as exc:
            raise BrokerError(f"Kafka node {node_id}: {exc}; see {self.log_path(node_id)}") from exc
        # the listener opens before the broker has caught up with the metadata log
        log = self.log_path(node_id)
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            if re.search(r"\[KafkaRaftServer nodeId=\d+\] Kafka Server started", text):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise BrokerError(f"Kafka node {node_id} did not start; see {self.log_path(node_id)}")

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id``: no controlled shutdown, no flush."""
        proc = self.procs.get(node_id)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def alive(self, node_id: int) -> bool:
        proc = self.procs.get(node_id)
        return bool(proc and proc.poll() is None)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def running(self) -> bool:
        """Every node is up (a killed node counts as down)."""
        return all(self.alive(n) for n in self.node_ids)

    def stop(self, timeout: float = 30.0) -> None:
        procs = [p for p in self.procs.values() if p.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
