"""Shared fixtures: locations of shared data, database URLs (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from callsense.broker import free_port

if TYPE_CHECKING:
    from callsense.kafka_broker import KafkaCluster

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CALLSENSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real labelled speech beside the repository; tests that need it skip with a reason."""
    if not (SHARED_DATA / "ravdess" / "MANIFEST.csv").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set CALLSENSE_SHARED_DATA)")
    return SHARED_DATA


class ThrowAwayPostgres:
    """A PostgreSQL cluster of the test session's own: initdb in a temporary directory, a free
    port on 127.0.0.1, trust authentication, no fsync; ``stop()`` stops it and removes it.

    Debian installs the server binaries under /usr/lib/postgresql/<major>/bin (``make test``
    installs the package when they are missing). initdb refuses to run as root, so as root the
    cluster belongs to the ``postgres`` user that the package creates.
    """

    def __init__(self) -> None:
        self.bin = self._bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="callsense-pg-"))
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            import pwd

            try:
                entry = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise RuntimeError(
                    "running as root needs the 'postgres' user of Debian's "
                    "postgresql package to own the test cluster"
                ) from exc
            self.user = entry.pw_name
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    @staticmethod
    def _bin_dir() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                       key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                       else 0)  # fmt: skip
        if found:
            return found[-1].parent
        initdb = shutil.which("initdb")
        if initdb:
            return Path(initdb).resolve().parent
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found: install "
                           "Debian's 'postgresql' package (make test does)")  # fmt: skip

    def _run(self, *args: str) -> None:
        done = subprocess.run([str(self.bin / args[0]), *args[1:]], user=self.user,
                              capture_output=True, text=True, cwd=self.dir)  # fmt: skip
        if done.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}{tail}")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/test"

    def start(self) -> ThrowAwayPostgres:
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(self.dir / "server.log"),
                  "-w", "-t", "60", "start")  # fmt: skip
        import sqlalchemy as sa

        admin = sa.create_engine(self.url.rsplit("/", 1)[0] + "/postgres",
                                 isolation_level="AUTOCOMMIT")  # fmt: skip
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE test"))
        admin.dispose()
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """Base URL of the tests' PostgreSQL: CALLSENSE_TEST_POSTGRES_URL if set (an existing
    server; "" opts out), otherwise a throw-away cluster started for this session."""
    configured = os.environ.get("CALLSENSE_TEST_POSTGRES_URL")
    if configured is not None:
        yield configured or None
        return
    try:
        server = ThrowAwayPostgres().start()
    except RuntimeError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"could not start PostgreSQL in CI: {exc}")
        pytest.skip(f"could not start PostgreSQL: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None
) -> Iterator[str]:
    """A fresh, migrated database on each backend (PostgreSQL: a throw-away schema)."""
    from callsense.storage.db import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        upgrade(url)
        yield url
        return
    base = postgres_url
    if not base:
        pytest.skip("CALLSENSE_TEST_POSTGRES_URL not set")
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL not reachable in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}options=-csearch_path%3D{schema}"
    upgrade(url)
    yield url
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def start_kafka(data_dir: Path, nodes: int = 1, **settings: object) -> KafkaCluster:
    """A started Apache Kafka (KRaft) with the callsense topics; the test stops it. Without
    Java or the jars the test skips, and fails in CI (``make test`` provides both)."""
    from callsense.processors.events import ensure_topics

    from callsense.broker import BrokerError
    from callsense.kafka_broker import KafkaCluster
    from callsense.settings import Settings

    try:
        kafka = KafkaCluster(data_dir=data_dir, nodes=nodes).start()
    except BrokerError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Apache Kafka did not start in CI: {exc}")
        pytest.skip(f"Apache Kafka not available: {exc}")
    try:
        ensure_topics(kafka.bootstrap, Settings(topic_replication=nodes, **settings))
    except BaseException:
        kafka.stop()
        raise
    return kafka


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[KafkaCluster]:
    """A fresh single-node Apache Kafka broker for one test, stopped at its end."""
    broker = start_kafka(tmp_path / "kafka")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka3(tmp_path: Path) -> Iterator[KafkaCluster]:
    """A fresh three-node Apache Kafka cluster (topics replicated 3 times, min ISR 2)."""
    broker = start_kafka(tmp_path / "kafka", nodes=3)
    try:
        yield broker
    finally:
        broker.stop()
