"""SQLAlchemy 2.x models: calls, speakers, emotion windows, call summaries, alerts, webhook
deliveries. The schema is owned by Alembic migrations in ``migrations/versions``; a test checks
that the migrations and these models agree.

Idempotency keys (at-least-once delivery upstream):
* ``emotion_windows``: unique (call_id, speaker, start_ms)
* ``speakers``: unique (call_id, speaker)
* ``call_summaries``: primary key call_id (rewritten on replay)
* ``alerts``: primary key id; at most one open alert per (call_id, rule) (enforced in code)
* ``webhook_deliveries``: unique (event_id, url, attempt)
* ``worker_heartbeats``: primary key worker_id (rewritten every few seconds)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Call(Base):
    __tablename__ = "calls"

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active|ended|failed
    agent_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    customer_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    queue: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    channels: Mapped[int] = mapped_column(Integer, default=1)
    sample_rate: Mapped[int] = mapped_column(Integer, default=16000)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Speaker(Base):
    __tablename__ = "speakers"
    __table_args__ = (UniqueConstraint("call_id", "speaker", name="uq_speaker_call_speaker"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("calls.call_id", ondelete="CASCADE"), index=True
    )
    speaker: Mapped[str] = mapped_column(String(32))  # e.g. "ch0", "ch1", "spk0"
    role: Mapped[str] = mapped_column(String(16), default="unknown")  # agent|customer|unknown
    channel: Mapped[int | None] = mapped_column(Integer, nullable=True)


class EmotionWindow(Base):
    __tablename__ = "emotion_windows"
    __table_args__ = (
        UniqueConstraint("call_id", "speaker", "start_ms", name="uq_window_call_speaker_start"),
        Index("ix_window_call_speaker", "call_id", "speaker"),
        Index("ix_window_call_end", "call_id", "end_ms"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("calls.call_id", ondelete="CASCADE")
    )
    speaker: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16), default="unknown")
    start_ms: Mapped[int] = mapped_column(Integer)  # call time of the window's first sample
    end_ms: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(32))  # argmax label or "uncertain"
    raw_label: Mapped[str] = mapped_column(String(32))  # argmax label, even when uncertain
    confidence: Mapped[float] = mapped_column(Float)
    uncertain: Mapped[bool] = mapped_column(Boolean, default=False)
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON)
    smoothed_label: Mapped[str | None] = mapped_column(String(32), nullable=True)
    smoothed_probabilities: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CallSummary(Base):
    __tablename__ = "call_summaries"

    call_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("calls.call_id", ondelete="CASCADE"), primary_key=True
    )
    duration_s: Mapped[float] = mapped_column(Float)
    anger_share: Mapped[float] = mapped_column(Float, default=0.0)  # customer (or max) share
    peak_anger: Mapped[float] = mapped_column(Float, default=0.0)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alert_call_rule", "call_id", "rule"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    call_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("calls.call_id", ondelete="CASCADE")
    )
    rule: Mapped[str] = mapped_column(String(64))
    speaker: Mapped[str | None] = mapped_column(String(32), nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="raised")  # raised|updated|resolved
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    message: Mapped[str] = mapped_column(Text, default="")
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acknowledged_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "url", "attempt", name="uq_delivery_event_url_attempt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), index=True)  # webhook-id
    alert_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    url: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ok: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WorkerHeartbeat(Base):
    """A stream worker's latest sign of life: the dashboard shows a banner when none is fresh."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    live_calls: Mapped[int] = mapped_column(Integer, default=0)
    audio_partitions: Mapped[int] = mapped_column(Integer, default=0)
    audio_lag: Mapped[int | None] = mapped_column(Integer, nullable=True)  # records behind


class AlertRuleSet(Base):
    """One saved version of the alert rules (edited in the dashboard); the newest is in force
    and overrides ``CALLSENSE_ALERT_RULES``. Versions are never changed or deleted."""

    __tablename__ = "alert_rule_sets"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
