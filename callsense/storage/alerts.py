"""Alert and webhook-delivery persistence (idempotent, SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from callsense.storage.db import insert_ignore, make_engine, session_factory
from callsense.storage.schema import Alert, Call, WebhookDelivery

_STATUS_RANK = {"raised": 0, "updated": 1, "resolved": 2}


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite returns naive UTC
        return value.replace(tzinfo=UTC)
    return value


def alert_to_dict(a: Alert) -> dict[str, Any]:
    def iso(d: datetime | None) -> str | None:
        d = _aware(d)
        return d.isoformat() if d else None

    return {
        "id": a.id,
        "call_id": a.call_id,
        "rule": a.rule,
        "speaker": a.speaker,
        "role": a.role,
        "status": a.status,
        "severity": a.severity,
        "message": a.message,
        "raised_at": iso(a.raised_at),
        "updated_at": iso(a.updated_at),
        "resolved_at": iso(a.resolved_at),
        "acknowledged_by": a.acknowledged_by,
        "acknowledged_at": iso(a.acknowledged_at),
        "acknowledged_note": a.acknowledged_note,
        "details": a.details or {},
    }


def apply_alert_event(session: Session, event_type: str, alert: dict[str, Any]) -> Alert:
    """Write one alert lifecycle change. Replays are harmless: the first ``raised_at`` and an
    acknowledgement are kept, and a resolved alert never goes back to open.

    The call row is created if missing (alerts may overtake the call's metadata upstream).
    """
    if session.get(Call, alert["call_id"]) is None:
        insert_ignore(session, Call, [{"call_id": alert["call_id"]}], ["call_id"])
    row = session.get(Alert, alert["id"])
    if row is None:
        row = Alert(
            id=alert["id"],
            call_id=alert["call_id"],
            rule=alert["rule"],
            raised_at=_dt(alert.get("raised_at")) or datetime.now(UTC),
        )
        session.add(row)
    if event_type == "alert.acknowledged":
        if row.acknowledged_by is None:
            row.acknowledged_by = alert.get("acknowledged_by")
            row.acknowledged_at = _dt(alert.get("acknowledged_at"))
            row.acknowledged_note = alert.get("acknowledged_note")
        session.flush()
        return row
    new_status = alert.get("status", "raised")
    if row.status is None or _STATUS_RANK.get(new_status, 0) >= _STATUS_RANK.get(row.status, 0):
        row.status = new_status
        row.speaker = alert.get("speaker")
        row.role = alert.get("role")
        row.severity = alert.get("severity", "warning")
        row.message = alert.get("message", "")
        row.updated_at = _dt(alert.get("updated_at")) or datetime.now(UTC)
        row.resolved_at = _dt(alert.get("resolved_at"))
        row.details = alert.get("details") or {}
    session.flush()
    return row


ACK_NOTE_MAX = 500  # characters of an acknowledgement's note


def acknowledge(
    session: Session,
    alert_id: str,
    user: str,
    at: datetime | None = None,
    note: str | None = None,
):
    """Mark an alert acknowledged by ``user``, with an optional ``note`` (what they did; at most
    ``ACK_NOTE_MAX`` characters, blank is none). Returns the updated alert dict, or ``None`` if
    the alert does not exist, was already acknowledged (acknowledging twice changes nothing) or
    is resolved (there is nothing left to act on)."""
    note = (note or "").strip() or None
    if note is not None and len(note) > ACK_NOTE_MAX:
        raise ValueError(f"the note is longer than {ACK_NOTE_MAX} characters")
    row = session.get(Alert, alert_id)
    if row is None or row.acknowledged_by is not None or row.status == "resolved":
        return None
    row.acknowledged_by = user[:128]
    row.acknowledged_at = at or datetime.now(UTC)
    row.acknowledged_note = note
    session.flush()
    return alert_to_dict(row)


def open_alerts(session: Session, call_ids: list[str] | None = None) -> list[Alert]:
    stmt = select(Alert).where(Alert.status != "resolved")
    if call_ids is not None:
        stmt = stmt.where(Alert.call_id.in_(call_ids))
    return list(session.scalars(stmt.order_by(Alert.raised_at.desc())))


SEVERITY_RANK = {"critical": 0, "warning": 1}  # inbox order: most severe first


def inbox_alerts(
    session: Session, resolved_since: datetime | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """The alerts inbox: every open alert, then (with ``resolved_since``) alerts resolved since
    then; open before resolved, most severe first, then the longest waiting first. At most
    ``limit`` rows (open ones first, so none is crowded out by resolved ones)."""
    cond = Alert.status != "resolved"
    if resolved_since is not None:
        cond = cond | (Alert.resolved_at >= resolved_since)
    rows = [alert_to_dict(a) for a in session.scalars(select(Alert).where(cond))]
    rows.sort(
        key=lambda a: (
            a["status"] == "resolved",
            SEVERITY_RANK.get(a["severity"], len(SEVERITY_RANK)),
            a["raised_at"] or "",
        )
    )
    return rows[:limit]


def record_delivery(
    session: Session,
    *,
    event_id: str,
    alert_id: str | None,
    url: str,
    attempt: int,
    status_code: int | None,
    ok: bool,
    error: str | None,
) -> None:
    insert_ignore(
        session,
        WebhookDelivery,
        [
            {
                "event_id": event_id,
                "alert_id": alert_id,
                "url": url,
                "attempt": attempt,
                "status_code": status_code,
                "ok": ok,
                "error": (error or None) and error[:2000],
                "created_at": datetime.now(UTC),
            }
        ],
        ["event_id", "url", "attempt"],
    )


def delivered(session: Session, event_id: str, url: str) -> bool:
    """Whether an event already reached an endpoint (a 2xx attempt is logged)."""
    stmt = select(func.count()).where(
        and_(
            WebhookDelivery.event_id == event_id,
            WebhookDelivery.url == url,
            WebhookDelivery.ok.is_(True),
        )
    )
    return bool(session.scalar(stmt))


def last_attempt(session: Session, event_id: str, url: str) -> int:
    stmt = select(func.max(WebhookDelivery.attempt)).where(
        and_(WebhookDelivery.event_id == event_id, WebhookDelivery.url == url)
    )
    return int(session.scalar(stmt) or 0)


def first_attempt_at(session: Session, event_id: str, url: str) -> datetime | None:
    """When an event's first attempt to an endpoint was logged (its retry horizon starts)."""
    stmt = select(func.min(WebhookDelivery.created_at)).where(
        and_(WebhookDelivery.event_id == event_id, WebhookDelivery.url == url)
    )
    first = session.scalar(stmt)
    if first is not None and first.tzinfo is None:  # SQLite keeps no zone: stored as UTC
        first = first.replace(tzinfo=UTC)
    return first


def recent_deliveries(session: Session, limit: int = 200) -> list[WebhookDelivery]:
    stmt = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
    return list(session.scalars(stmt))


class AlertStore:
    """Writes batches of alert events (used by the stream's alert agent, off the event loop)."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.session_factory = session_factory(self.engine)

    def apply(self, events: list[Any]) -> None:
        """Write the events; then copy a supervisor's acknowledgement (made in the dashboard,
        unknown to the stream's engine) into each event, so what is published and sent by
        webhook says who acknowledged the alert."""
        with self.session_factory() as s, s.begin():
            for ev in events:
                row = apply_alert_event(s, ev.type, ev.alert)
                if row.acknowledged_by and not ev.alert.get("acknowledged_by"):
                    current = alert_to_dict(row)
                    ev.alert["acknowledged_by"] = current["acknowledged_by"]
                    ev.alert["acknowledged_at"] = current["acknowledged_at"]
                    ev.alert["acknowledged_note"] = current["acknowledged_note"]
