"""Measure database growth per call hour (input to deploy/SIZING.md).

Writes synthetic call hours through the production write path (``storage.writer.Writer``:
call_started, one window per speaker per hop, call_ended with its summary) into a fresh,
migrated database and reports the bytes the tables, indexes and TOAST data grew by.

    python deploy/measure_db_growth.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python deploy/measure_db_growth.py --url sqlite:///var/growth.db

For PostgreSQL the run uses a throw-away schema (dropped at the end); for SQLite the file must
not exist yet. ``--speech`` is the share of the hour each speaker talks (windows only exist
for speech); 1.0 gives the upper bound of one window per speaker per hop.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
import uuid
from pathlib import Path
from typing import Any

TABLES = ("calls", "speakers", "emotion_windows", "call_summaries")


def _events(call_id: str, labels: list[str], hop_s: float, window_s: float, speech: float,
            rng: random.Random) -> list[dict[str, Any]]:  # fmt: skip
    from callsense.processors.events import CallStart, call_ended_event, call_started_event

    start = CallStart(call_id, 16000, 2, agent_id="agent-1", customer_id="cust-1", queue="q")
    speakers = [("ch0", "agent", 0), ("ch1", "customer", 1)]
    events = [call_started_event(start, speakers)]
    hops = int(3600 / hop_s)
    for spk, role, _ in speakers:
        talking = sorted(rng.sample(range(hops), int(round(hops * speech))))
        for h in talking:
            raw = [rng.random() for _ in labels]
            probs = {lab: round(v / sum(raw), 6) for lab, v in zip(labels, raw, strict=True)}
            smooth = {lab: round(p * 0.9 + 0.1 / len(labels), 6) for lab, p in probs.items()}
            top = max(probs, key=probs.__getitem__)
            events.append(
                {
                    "kind": "window",
                    "call_id": call_id,
                    "speaker": spk,
                    "role": role,
                    "start_ms": int(h * hop_s * 1000),
                    "end_ms": int((h * hop_s + window_s) * 1000),
                    "label": top,
                    "raw_label": top,
                    "confidence": probs[top],
                    "uncertain": probs[top] < 0.45,
                    "probabilities": probs,
                    "smoothed_label": max(smooth, key=smooth.__getitem__),
                    "smoothed_probabilities": smooth,
                }
            )
    events.append(call_ended_event(call_id, 3600.0, {"ch0": 1800.0, "ch1": 1800.0}, time.time()))
    return events


def _size(engine: Any) -> int:
    import sqlalchemy as sa

    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return sum(
                int(conn.execute(sa.text(f"SELECT pg_total_relation_size('{t}')")).scalar())
                for t in TABLES
            )
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        size = conn.exec_driver_sql("PRAGMA page_size").scalar()
        return int(pages) * int(size)


def measure(url: str, hours: int, speech: float, labels: list[str], hop_s: float,
            window_s: float, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    import sqlalchemy as sa

    from callsense.storage.db import make_engine, upgrade
    from callsense.storage.writer import Writer

    schema = None
    run_url = url
    if url.startswith("postgresql"):
        schema = f"growth_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        run_url = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    elif Path(url.split("///", 1)[-1]).exists():
        raise SystemExit(f"{url}: file exists; give a new SQLite path")
    try:
        upgrade(run_url)
        engine = make_engine(run_url)
        writer = Writer(run_url)
        before = _size(engine)
        rng = random.Random(seed)
        windows = 0
        t0 = time.perf_counter()
        for i in range(hours):
            events = _events(f"growth-{i}", labels, hop_s, window_s, speech, rng)
            windows += sum(e["kind"] == "window" for e in events)
            for s in range(0, len(events), 500):  # the worker writes batches of <= 500 events
                writer.write(events[s : s + 500])
        write_s = time.perf_counter() - t0
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for t in TABLES:
                    conn.exec_driver_sql(f"VACUUM ANALYZE {t}")
        grown = _size(engine) - before
        engine.dispose()
    finally:
        if schema:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    return {
        "backend": url.split(":", 1)[0].split("+")[0],
        "call_hours": hours,
        "speech_share_per_speaker": speech,
        "labels": len(labels),
        "hop_s": hop_s,
        "windows": windows,
        "windows_per_call_hour": windows / hours,
        "bytes_total": grown,
        "bytes_per_window": round(grown / windows, 1),
        "mb_per_call_hour": round(grown / hours / 1e6, 3),
        "write_windows_per_s": round(windows / write_s, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--hours", type=int, default=4, help="synthetic call hours to write")
    p.add_argument("--speech", type=float, default=0.5)
    p.add_argument("--labels", default="angry,happy,neutral,sad")
    p.add_argument("--hop-s", type=float, default=1.0)
    p.add_argument("--window-s", type=float, default=3.0)
    args = p.parse_args()
    if not 0 < args.speech <= 1 or args.hours < 1 or not math.isfinite(args.hop_s):
        raise SystemExit("--speech must be in (0, 1], --hours >= 1")
    res = measure(args.url, args.hours, args.speech, args.labels.split(","), args.hop_s,
                  args.window_s)  # fmt: skip
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
