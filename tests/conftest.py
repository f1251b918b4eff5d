"""Shared fixtures: locations of shared data, database URLs (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.postgres import ThrowAwayPostgres

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


@contextmanager
def fresh_database(backend: str, tmp_path: Path, postgres_url: str | None) -> Iterator[str]:
    """A new database with no tables yet: an SQLite file, or a throw-away PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if not postgres_url:
        pytest.skip("CALLSENSE_TEST_POSTGRES_URL not set")
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL not reachable in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    sep = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None
) -> Iterator[str]:
    """A fresh, migrated database on each backend (PostgreSQL: a throw-away schema)."""
    from callsense.storage.db import upgrade

    with fresh_database(request.param, tmp_path, postgres_url) as url:
        upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None
) -> Iterator[str]:
    """A fresh database on each backend that nothing has migrated yet."""
    with fresh_database(request.param, tmp_path, postgres_url) as url:
        yield url


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
