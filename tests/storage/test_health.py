"""Worker heartbeats and the pipeline verdict, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from callsense.storage.db import make_engine, session_factory
from callsense.storage.health import beat, forget_stale, pipeline_health
from callsense.storage.schema import WorkerHeartbeat


def test_heartbeats_decide_whether_the_pipeline_is_up(database_url: str) -> None:
    sf = session_factory(make_engine(database_url))
    with sf.begin() as s:
        s.query(WorkerHeartbeat).delete()
    with sf() as s:
        h = pipeline_health(s)
    assert h == {"up": False, "newest_heartbeat_age_s": None, "workers": []}
    started = datetime.now(UTC)
    with sf.begin() as s:
        beat(s, "host:1", started, live_calls=3, audio_partitions=4, audio_lag=12)
    with sf.begin() as s:  # a second beat of the same worker refreshes its row
        beat(s, "host:1", started, live_calls=5, audio_partitions=4, audio_lag=0)
        beat(s, "host:2", started, live_calls=0, audio_partitions=0, audio_lag=None)
    with sf() as s:
        h = pipeline_health(s)
    assert h["up"] and [w["worker_id"] for w in h["workers"]] == ["host:1", "host:2"]
    assert h["workers"][0]["live_calls"] == 5 and h["workers"][0]["audio_lag"] == 0
    with sf.begin() as s:  # both go silent
        for r in s.query(WorkerHeartbeat):
            r.last_seen = datetime.now(UTC) - timedelta(seconds=45)
    with sf() as s:
        h = pipeline_health(s)
    assert not h["up"] and h["workers"] == [] and 44 <= h["newest_heartbeat_age_s"] <= 60
    with sf.begin() as s:
        assert forget_stale(s, older_than=timedelta(seconds=30)) == 2
