"""Idempotent persistence of ``callsense.windows`` events (at-least-once upstream).

:meth:`Writer.write` applies a batch of events in one transaction:

* ``call_started``: upsert the call (metadata, status) and insert its speakers;
* ``window``: insert-ignore on (call_id, speaker, start_ms), creating a bare call row first if
  the call is unknown (never lose a window to a foreign key), and insert-ignore its speaker
  (a diarized mono call's ``call_started`` cannot list speakers: they appear with their
  first windows);
* ``conversation``: a live call's metrics so far replace older ones (never an ended call's);
* ``call_ended``: insert-ignore every speaker it lists, mark the call ended, compute the
  summary from the stored windows (``summarize_call``) and upsert it (primary key call_id, so
  a replay rewrites the same row).

Replaying any prefix of the topic leaves the database unchanged. Returns the summary events for
``callsense.summaries``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from callsense.storage.db import insert_ignore, make_engine, session_factory
from callsense.storage.schema import Call, CallSummary, EmotionWindow, Speaker

WINDOW_COLUMNS = (
    "call_id",
    "speaker",
    "role",
    "start_ms",
    "end_ms",
    "label",
    "raw_label",
    "confidence",
    "uncertain",
    "probabilities",
    "smoothed_label",
    "smoothed_probabilities",
)


@dataclass
class WriteResult:
    windows_inserted: int = 0
    windows_duplicate: int = 0
    calls_started: int = 0
    calls_ended: int = 0
    summaries: list[dict[str, Any]] = field(default_factory=list)


def _ts(value: Any) -> datetime | None:
    if value is None or value == 0:
        return None
    return datetime.fromtimestamp(float(value), UTC)


def _dialect_insert(session: Session) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def upsert_call(session: Session, ev: dict[str, Any]) -> None:
    """Insert the call or refresh its metadata (an ended call keeps its status; ``extra`` keeps
    what other events put there, e.g. live conversation metrics)."""
    held = session.get(Call, ev["call_id"])
    extra = {**((held.extra or {}) if held is not None else {}),
             "agent_channel": ev.get("agent_channel", 0)}  # fmt: skip
    values = {
        "call_id": ev["call_id"],
        "agent_id": ev.get("agent_id"),
        "customer_id": ev.get("customer_id"),
        "queue": ev.get("queue"),
        "channels": int(ev.get("channels", 1)),
        "sample_rate": int(ev.get("sample_rate", 16000)),
        "source": ev.get("source"),
        "extra": extra,
    }
    started = _ts(ev.get("ts"))
    if started is not None:
        values["started_at"] = started
    insert = _dialect_insert(session)
    stmt = insert(Call).values(status="active", **values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["call_id"],
        set_={k: stmt.excluded[k] for k in values if k != "call_id"},
    )
    session.execute(stmt)
    speakers = [
        {
            "call_id": ev["call_id"],
            "speaker": s["speaker"],
            "role": s["role"],
            "channel": s["channel"],
        }
        for s in ev.get("speakers", [])
    ]
    insert_ignore(session, Speaker, speakers, ["call_id", "speaker"])


def ensure_speakers(session: Session, ev: dict[str, Any]) -> None:
    """Insert-ignore the speakers a ``call_ended`` event lists (every speaker of the call)."""
    ensure_call(session, ev["call_id"])
    rows = [
        {
            "call_id": ev["call_id"],
            "speaker": s["speaker"],
            "role": s.get("role") or "unknown",
            "channel": s.get("channel"),
        }
        for s in ev.get("speakers") or []
    ]
    insert_ignore(session, Speaker, rows, ["call_id", "speaker"])


def ensure_call(session: Session, call_id: str) -> None:
    insert_ignore(
        session, Call, [{"call_id": call_id, "status": "active", "extra": {}}], ["call_id"]
    )


ENDED_STATUSES = ("ended", "abandoned", "truncated")


def live_conversation(session: Session, ev: dict[str, Any]) -> None:
    """Keep a live call's newest conversation metrics in ``extra["conversation_live"]``
    (``{"at_ms", "metrics"}``); older or replayed snapshots and ended calls change nothing."""
    ensure_call(session, ev["call_id"])
    call = session.get(Call, ev["call_id"])
    if call is None or call.status in ENDED_STATUSES:
        return
    held = (call.extra or {}).get("conversation_live") or {}
    if int(held.get("at_ms", -1)) >= int(ev["at_ms"]):
        return
    live = {"at_ms": int(ev["at_ms"]), "metrics": ev["conversation"]}
    call.extra = {**(call.extra or {}), "conversation_live": live}
    session.flush()


def end_call(session: Session, ev: dict[str, Any]) -> dict[str, Any]:
    """Mark the call ended and upsert its summary from the stored windows; returns the summary."""
    from callsense.storage.summary import summarize_call

    call_id = ev["call_id"]
    status = ev.get("status") if ev.get("status") in ENDED_STATUSES else "ended"
    ensure_call(session, call_id)
    session.execute(
        update(Call)
        .where(Call.call_id == call_id)
        .values(status=status, ended_at=_ts(ev.get("ts")) or datetime.now(UTC))
    )
    rows = [
        {c: getattr(w, c) for c in WINDOW_COLUMNS}
        for w in session.scalars(
            select(EmotionWindow)
            .where(EmotionWindow.call_id == call_id)
            .order_by(EmotionWindow.speaker, EmotionWindow.start_ms)
        )
    ]
    result = summarize_call(
        float(ev["duration_s"]), rows, dict(ev.get("talk_time_s", {})), ev.get("conversation")
    )
    values = {"call_id": call_id, **result}
    insert = _dialect_insert(session)
    stmt = insert(CallSummary).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["call_id"], set_={k: stmt.excluded[k] for k in values if k != "call_id"}
    )
    session.execute(stmt)
    return values


class Writer:
    """Owns an engine; :meth:`write` is synchronous (run it in an executor from async code)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = session_factory(self.engine)

    def write(self, events: list[dict[str, Any]]) -> WriteResult:
        res = WriteResult()
        with self.sessions.begin() as session:
            pending: list[dict[str, Any]] = []
            known: set[str] = set()
            seen: set[tuple[str, str]] = set()  # (call, speaker) rows ensured in this batch

            def flush() -> None:
                if not pending:
                    return
                for cid in {r["call_id"] for r in pending} - known:
                    ensure_call(session, cid)
                    known.add(cid)
                # a diarized mono call's speakers are known only from their first windows
                speakers = {}
                for r in pending:
                    k = (r["call_id"], r["speaker"])
                    if k not in seen and k not in speakers:
                        speakers[k] = {
                            "call_id": r["call_id"],
                            "speaker": r["speaker"],
                            "role": r.get("role") or "unknown",
                            "channel": None,
                        }
                if speakers:
                    insert_ignore(session, Speaker, list(speakers.values()), ["call_id", "speaker"])
                    seen.update(speakers)
                n = insert_ignore(
                    session, EmotionWindow, pending, ["call_id", "speaker", "start_ms"]
                )
                res.windows_inserted += n
                res.windows_duplicate += len(pending) - n
                pending.clear()

            for ev in events:
                kind = ev.get("kind")
                if kind == "window":
                    pending.append({c: ev.get(c) for c in WINDOW_COLUMNS})
                elif kind == "call_started":
                    flush()
                    upsert_call(session, ev)
                    known.add(ev["call_id"])
                    res.calls_started += 1
                elif kind == "conversation":
                    live_conversation(session, ev)
                elif kind == "call_ended":
                    flush()
                    ensure_speakers(session, ev)
                    summary = end_call(session, ev)
                    res.calls_ended += 1
                    res.summaries.append({"kind": "summary", **summary})
            flush()
        return res

    def close(self) -> None:
        self.engine.dispose()
