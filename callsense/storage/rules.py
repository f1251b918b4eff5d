"""Versioned alert rules in the database (validated by the caller: storage does not know the
rule model). The newest version is in force; none means the environment's rules."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from callsense.storage.schema import AlertRuleSet


def _as_dict(r: AlertRuleSet) -> dict[str, Any]:
    at = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC)
    return {"version": r.version, "rules": r.rules, "created_at": at.isoformat(),
            "created_by": r.created_by, "note": r.note}  # fmt: skip


def save_rules(session: Session, rules: list[dict[str, Any]], by: str, note: str | None) -> int:
    """Store ``rules`` as a new version by ``by``; returns its number."""
    row = AlertRuleSet(rules=rules, created_by=by[:128], note=(note or "").strip() or None)
    session.add(row)
    session.flush()
    return int(row.version)


def current_rules(session: Session) -> dict[str, Any] | None:
    """The newest version, or None when the rules were never edited."""
    row = session.scalars(select(AlertRuleSet).order_by(AlertRuleSet.version.desc())).first()
    return _as_dict(row) if row else None


def rule_versions(session: Session, limit: int = 50) -> list[dict[str, Any]]:
    """Saved versions, newest first."""
    stmt = select(AlertRuleSet).order_by(AlertRuleSet.version.desc()).limit(limit)
    return [_as_dict(r) for r in session.scalars(stmt)]
