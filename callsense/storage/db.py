"""Engines, sessions, migrations and idempotent writes for SQLite and PostgreSQL."""

from __future__ import annotations

import fcntl
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, pool, text
from sqlalchemy.orm import Session, sessionmaker

from callsense.storage.schema import Base

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout for concurrent use."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
    engine = create_engine(url, pool_pre_ping=True, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# the advisory lock of callsense's migrations, one per schema
MIGRATION_LOCK_KEY = "hashtext('callsense.migrations:' || current_schema())"


@contextmanager
def migration_lock(url: str) -> Iterator[None]:
    """Hold the database's migration lock: a PostgreSQL session advisory lock, or for SQLite
    an exclusive ``flock`` on ``<database>.migrate.lock`` beside the file. Any number of
    workers, dashboards and gateways may start at once: one migrates, the others wait here
    and then find the schema current."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1].split("?", 1)[0]
        if not path or path == ":memory:":
            yield
            return
        lock_path = Path(path).with_name(Path(path).name + ".migrate.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            # one lock per schema: a search_path in the URL migrates a schema of its own
            conn.execute(text(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
                conn.commit()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` (idempotent; safe to run from many
    processes at once, see :func:`migration_lock`)."""
    from alembic import command

    with migration_lock(url):
        command.upgrade(alembic_config(url), revision)


def insert_ignore(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    conflict_cols: Iterable[str],
) -> int:
    """Insert rows, silently skipping those whose unique key already exists.

    Works on SQLite and PostgreSQL (``ON CONFLICT DO NOTHING``). Returns the number of rows
    actually inserted, so replays after a crash are visible in metrics but never duplicate.
    """
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two documented backends are supported
        raise RuntimeError(f"unsupported database dialect {dialect!r}")
    stmt = insert(model).values(list(rows)).on_conflict_do_nothing(
        index_elements=list(conflict_cols)
    )
    result = session.execute(stmt)
    return int(result.rowcount or 0)
