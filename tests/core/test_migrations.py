"""The Alembic migrations and the SQLAlchemy models describe the same schema, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from callsense.storage.db import make_engine
from callsense.storage.schema import Base


def test_migrations_match_models(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_upgrade_is_idempotent(database_url: str) -> None:
    from callsense.storage.db import upgrade

    upgrade(database_url)  # already at head: a no-op, not an error


def _upgrade_at(url: str, start_at: float) -> None:
    import time

    from callsense.storage.db import upgrade

    time.sleep(max(0.0, start_at - time.time()))
    upgrade(url)


def test_processes_migrating_at_once_all_succeed(empty_database_url: str) -> None:
    """Three processes migrate the same new database at the same instant: every one returns,
    and the schema is at head once (the migration lock serialises them)."""
    import multiprocessing
    import time

    import sqlalchemy as sa

    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # after the spawned interpreters have imported alembic
    procs = [ctx.Process(target=_upgrade_at, args=(empty_database_url, start_at))
             for _ in range(3)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    engine = make_engine(empty_database_url)
    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert len(versions) == 1 and diff == [], (versions, diff)
