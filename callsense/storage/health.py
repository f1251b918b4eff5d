"""Pipeline health in the database: stream workers' heartbeats, and the verdict the dashboard
shows (a banner when no worker has reported recently)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from callsense.storage.schema import WorkerHeartbeat

STALE_S = 30.0  # a worker silent this long counts as down


def beat(
    session: Session,
    worker_id: str,
    started_at: datetime,
    live_calls: int,
    audio_partitions: int,
    audio_lag: int | None,
) -> None:
    """Insert or refresh one worker's heartbeat (now)."""
    row = session.get(WorkerHeartbeat, worker_id)
    if row is None:
        row = WorkerHeartbeat(worker_id=worker_id, started_at=started_at)
        session.add(row)
    row.last_seen = datetime.now(UTC)
    row.live_calls, row.audio_partitions, row.audio_lag = live_calls, audio_partitions, audio_lag


def pipeline_health(session: Session, stale_s: float = STALE_S) -> dict[str, Any]:
    """``up``: at least one worker reported within ``stale_s``; the fresh workers; the age of
    the newest heartbeat (None: no worker ever reported)."""
    now = datetime.now(UTC)
    rows = list(session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.worker_id)))

    def age(r: WorkerHeartbeat) -> float:
        seen = r.last_seen if r.last_seen.tzinfo else r.last_seen.replace(tzinfo=UTC)
        return (now - seen).total_seconds()

    fresh = [r for r in rows if age(r) <= stale_s]
    newest = min((age(r) for r in rows), default=None)
    return {
        "up": bool(fresh),
        "newest_heartbeat_age_s": None if newest is None else round(newest, 1),
        "workers": [
            {"worker_id": r.worker_id, "age_s": round(age(r), 1), "live_calls": r.live_calls,
             "audio_partitions": r.audio_partitions, "audio_lag": r.audio_lag}
            for r in fresh
        ],  # fmt: skip
    }


def forget_stale(session: Session, older_than: timedelta = timedelta(days=1)) -> int:
    """Remove heartbeats of workers gone for longer than ``older_than``; returns how many."""
    cutoff = datetime.now(UTC) - older_than
    rows = list(session.scalars(select(WorkerHeartbeat).where(WorkerHeartbeat.last_seen < cutoff)))
    for r in rows:
        session.delete(r)
    return len(rows)
