"""Alert rules on emotion-window events: a plain class, no Kafka.

The engine consumes the events of the ``callsense.windows`` topic (one per emotion window:
``call_id, speaker, role, start_ms, end_ms, label, confidence, uncertain, ...``) and keeps a
small per-call state that is plain JSON (so it can live in a Faust table and survive a worker
restart). It returns :class:`AlertEvent` objects for every lifecycle change:

* ``alert.raised``   - a rule's condition became true and no alert of that rule is open;
* ``alert.updated``  - still true, the measured value moved by at least ``update_step``;
* ``alert.resolved`` - the condition stayed false for ``resolve_after_s`` of call time, or the
  call ended;
* ``alert.acknowledged`` - a supervisor acknowledged it (made by the dashboard, see
  :func:`acknowledged_event`).

At most one alert per (call, rule) is open. Alert and event ids are derived from the input
(call, rule, the window that triggered it, a sequence number), so a replay after a crash
produces the same ids and every sink can be idempotent.

Rule kinds (rules come from ``CALLSENSE_ALERT_RULES``, JSON, see :data:`DEFAULT_RULES`):

* ``share``: labels cover at least ``min_share`` of the confident speech of a speaker with the
  given role over the last ``lookback_s`` seconds, from at least ``min_confident_windows``
  confident windows (uncertain windows count for nothing).
* ``sustained``: a run of confident windows whose label is in ``labels``, without a confident
  window of another label and without a gap longer than ``max_gap_s``, spans at least
  ``sustained_s`` seconds and is still going on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator

log = logging.getLogger(__name__)

DEFAULT_RULES: list[dict[str, Any]] = [
    {
        "name": "customer_anger",
        "kind": "share",
        "role": "customer",
        "labels": ["angry"],
        "lookback_s": 15,
        "min_share": 0.6,
        "min_confident_windows": 3,
        "severity": "warning",
    },
    {
        "name": "negative_sustained",
        "kind": "sustained",
        "role": "customer",
        "labels": ["angry", "sad"],
        "sustained_s": 30,
        "min_confident_windows": 3,
        "severity": "critical",
    },
]

EVENT_TYPES = ("alert.raised", "alert.updated", "alert.resolved", "alert.acknowledged")


class AlertRule(BaseModel):
    """One configured rule (see the module doc for the two kinds)."""

    name: str = Field(pattern=r"^[a-z0-9_\-]{1,64}$")
    kind: Literal["share", "sustained"] = "share"
    role: Literal["customer", "agent", "unknown", "any"] = "customer"
    labels: list[str] = Field(min_length=1)
    lookback_s: float = Field(15.0, gt=0, le=3600)
    min_share: float = Field(0.6, gt=0, le=1)
    min_confident_windows: int = Field(3, ge=1, le=10000)
    sustained_s: float = Field(30.0, gt=0, le=3600)
    max_gap_s: float = Field(3.0, ge=0, le=600)
    resolve_after_s: float = Field(5.0, ge=0, le=3600)
    update_step: float | None = Field(
        None, gt=0, description="share: 0.1 by default; sustained: seconds, 15 by default"
    )
    severity: Literal["info", "warning", "critical"] = "warning"

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        return sorted({s.strip().lower() for s in v if s.strip()})

    @property
    def step(self) -> float:
        if self.update_step is not None:
            return self.update_step
        return 0.1 if self.kind == "share" else 15.0

    @property
    def horizon_ms(self) -> int:
        """How much call time of windows the rule needs to look at."""
        span = self.lookback_s if self.kind == "share" else self.sustained_s
        return int((span + self.resolve_after_s + self.max_gap_s + 30.0) * 1000)


_RULES_ADAPTER = TypeAdapter(list[AlertRule])


def parse_rules(text: str | None) -> list[AlertRule]:
    """Rules from a JSON string (``CALLSENSE_ALERT_RULES``); empty means :data:`DEFAULT_RULES`.

    Raises ``ValueError`` with a readable reason on malformed JSON, unknown fields values or
    duplicate names.
    """
    raw: Any = DEFAULT_RULES
    if text and text.strip():
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"alert rules are not valid JSON: {exc}") from exc
    return validate_rules(raw)


def validate_rules(raw: Any) -> list[AlertRule]:
    """Rules from decoded JSON (a list of objects); ``ValueError`` as :func:`parse_rules`."""
    try:
        rules = _RULES_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise ValueError(f"invalid alert rules: {exc}") from exc
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate alert rule names in {names}")
    return rules


def rules_json(rules: Iterable[AlertRule]) -> list[dict[str, Any]]:
    """Rules as the JSON the environment and the database hold (every field spelled out)."""
    return [r.model_dump(mode="json") for r in rules]


class RuleSource:
    """The alert rules in force: the newest version saved in the database (edited in the
    dashboard), else ``CALLSENSE_ALERT_RULES`` (else the defaults). :meth:`refresh` reads the
    database, so run it off the event loop; :meth:`due` says when ``every_s`` has passed."""

    def __init__(self, env_text: str | None, session_factory: Any, every_s: float = 5.0) -> None:
        self.env_rules = parse_rules(env_text)
        self.rules = self.env_rules
        self.version: int | None = None  # None: the environment's rules
        self.sf = session_factory
        self.every_s = every_s
        self._checked = float("-inf")

    def due(self) -> bool:
        return time.monotonic() - self._checked >= self.every_s

    def refresh(self) -> bool:
        """Read the newest version; True when the rules in force changed. A version that does
        not validate (written around the dashboard) or an unreachable database keeps the rules
        in force, with an error in the log."""
        from callsense.storage.rules import current_rules

        self._checked = time.monotonic()
        try:
            with self.sf() as s:
                cur = current_rules(s)
        except Exception as exc:  # the database is down: the rules in force stay
            log.warning("alert rules not refreshed (database): %s", exc)
            return False
        version = cur["version"] if cur else None
        if version == self.version:
            return False
        try:
            rules = validate_rules(cur["rules"]) if cur else self.env_rules
        except ValueError as exc:
            log.error("alert rules version %s ignored, the rules in force stay: %s", version, exc)
            self.version = version
            return False
        self.version, self.rules = version, rules
        where = f"version {version}" if version else "the environment"
        log.info("alert rules from %s: %s", where, ", ".join(r.name for r in rules))
        return True


class WindowEvent(BaseModel):
    """The fields of a ``callsense.windows`` event the alert engine needs."""

    call_id: str = Field(min_length=1, max_length=128)
    speaker: str = Field(min_length=1, max_length=32)
    role: str = "unknown"
    start_ms: int = Field(ge=0)
    end_ms: int = Field(ge=0)
    label: str
    confidence: float = Field(ge=0, le=1)
    uncertain: bool = False
    raw_label: str | None = None

    model_config = {"extra": "ignore"}

    @property
    def effective_label(self) -> str:
        return (self.raw_label or self.label).lower() if not self.uncertain else "uncertain"


class InvalidWindowEvent(ValueError):
    """A windows-topic event the engine cannot use (goes to the dead-letter topic)."""


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt else None


def _hash_id(prefix: str, *parts: object) -> str:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return f"{prefix}_{digest[:28]}"


@dataclass
class AlertEvent:
    """One lifecycle change of an alert; ``payload()`` is the documented webhook body."""

    event_id: str
    type: str
    alert: dict[str, Any]
    occurred_at: str

    def payload(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "timestamp": self.occurred_at,
            "data": dict(self.alert),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "alert": self.alert,
            "occurred_at": self.occurred_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlertEvent:
        if data.get("type") not in EVENT_TYPES:
            raise ValueError(f"unknown alert event type {data.get('type')!r}")
        return cls(
            event_id=str(data["event_id"]),
            type=str(data["type"]),
            alert=dict(data["alert"]),
            occurred_at=str(data["occurred_at"]),
        )


@dataclass
class _Measure:
    holds: bool
    value: float
    speaker: str | None
    details: dict[str, Any] = field(default_factory=dict)


def acknowledged_event(
    alert: Mapping[str, Any], user: str, at: datetime, note: str | None = None
) -> AlertEvent:
    """The ``alert.acknowledged`` event for an alert acknowledged by ``user`` at ``at``, with
    their note (if any; the alert's own note otherwise)."""
    data = dict(alert)
    data["acknowledged_by"] = user
    data["acknowledged_at"] = _iso(at)
    data["acknowledged_note"] = note if note is not None else alert.get("acknowledged_note")
    return AlertEvent(
        event_id=_hash_id("msg", data["id"], "acknowledged", _iso(at), user),
        type="alert.acknowledged",
        alert=data,
        occurred_at=_iso(at) or "",
    )


class AlertEngine:
    """Evaluates the configured rules on window events; per-call state is plain JSON.

    Use :meth:`process` with an explicit state (Faust table) or :meth:`feed`, which keeps the
    states in ``self.states`` (offline use, tests).
    """

    def __init__(self, rules: Iterable[AlertRule] | None = None, clock: Any = None) -> None:
        self.rules = list(rules) if rules is not None else parse_rules(None)
        self._clock = clock or (lambda: datetime.now(UTC))
        self.horizon_ms = max((r.horizon_ms for r in self.rules), default=60_000)
        self.states: dict[str, dict[str, Any]] = {}

    # -- public API ------------------------------------------------------------------------
    def set_rules(self, rules: Iterable[AlertRule]) -> None:
        """Evaluate ``rules`` from the next window on. Per-call state carries over by rule
        name; an open alert of a rule no longer configured resolves when its call ends."""
        self.rules = list(rules)
        self.horizon_ms = max((r.horizon_ms for r in self.rules), default=60_000)

    @staticmethod
    def parse_event(event: Mapping[str, Any] | WindowEvent) -> WindowEvent:
        if isinstance(event, WindowEvent):
            return event
        try:
            ev = WindowEvent.model_validate(event)
        except ValidationError as exc:
            raise InvalidWindowEvent(f"invalid window event: {exc.errors()[0]}") from exc
        if ev.end_ms <= ev.start_ms:
            raise InvalidWindowEvent(f"window ends before it starts ({ev.start_ms}..{ev.end_ms})")
        return ev

    def feed(self, event: Mapping[str, Any] | WindowEvent) -> list[AlertEvent]:
        ev = self.parse_event(event)
        state, out = self.process(self.states.get(ev.call_id), ev)
        self.states[ev.call_id] = state
        return out

    def process(
        self, state: Mapping[str, Any] | None, event: Mapping[str, Any] | WindowEvent
    ) -> tuple[dict[str, Any], list[AlertEvent]]:
        """Apply one window event to a call's state; returns (new state, alert events)."""
        ev = self.parse_event(event)
        st = self._copy(state, ev.call_id)
        if st["ended"]:
            return st, []
        spk = st["speakers"].setdefault(ev.speaker, {"role": ev.role, "w": []})
        spk["role"] = ev.role or spk["role"]
        if not any(w[0] == ev.start_ms for w in spk["w"]):  # replays are ignored
            spk["w"].append([ev.start_ms, ev.end_ms, ev.effective_label, round(ev.confidence, 4)])
            spk["w"].sort(key=lambda w: w[0])
        st["now_ms"] = max(st["now_ms"], ev.end_ms)
        self._trim(st)
        return st, self._evaluate(st, trigger_ms=ev.start_ms)

    def end_call(
        self, state: Mapping[str, Any] | None, call_id: str
    ) -> tuple[dict[str, Any], list[AlertEvent]]:
        """The call ended: resolve every open alert (reason ``call_ended``)."""
        st = self._copy(state, call_id)
        out: list[AlertEvent] = []
        for name, rs in st["rules"].items():
            if rs.get("open"):
                out.append(self._resolve(st, name, rs, reason="call_ended"))
        st["ended"] = True
        return st, out

    def handle(self, state: bytes | None, value: bytes) -> tuple[bytes, list[AlertEvent]] | None:
        """One ``callsense.windows`` message and the call's stored state, both as the stream
        holds them (JSON bytes): the new state and the alert events; None for an event alerts
        ignore. Raises ValueError, KeyError, TypeError or AttributeError on a bad event."""
        ev = json.loads(value)
        st = json.loads(state) if state else None
        if ev.get("kind") == "window":
            st, out = self.process(st, ev)
        elif ev.get("kind") == "call_ended":
            st, out = self.end_call(st, ev["call_id"])
        else:
            return None
        return json.dumps(st).encode(), out

    def end_call_local(self, call_id: str) -> list[AlertEvent]:
        state, out = self.end_call(self.states.get(call_id), call_id)
        self.states[call_id] = state
        return out

    # -- internals -------------------------------------------------------------------------
    @staticmethod
    def _copy(state: Mapping[str, Any] | None, call_id: str) -> dict[str, Any]:
        if not state:
            return {"call_id": call_id, "now_ms": 0, "speakers": {}, "rules": {}, "ended": False}
        return json.loads(json.dumps(state))

    def _trim(self, st: dict[str, Any]) -> None:
        cutoff = st["now_ms"] - self.horizon_ms
        for spk in st["speakers"].values():
            spk["w"] = [w for w in spk["w"] if w[1] >= cutoff]

    def _speakers_for(self, st: dict[str, Any], rule: AlertRule) -> list[tuple[str, list]]:
        return [
            (name, s["w"])
            for name, s in sorted(st["speakers"].items())
            if rule.role == "any" or s["role"] == rule.role
        ]

    def _measure(self, st: dict[str, Any], rule: AlertRule) -> _Measure:
        best = _Measure(False, 0.0, None)
        for speaker, windows in self._speakers_for(st, rule):
            m = (
                self._share(st["now_ms"], rule, windows)
                if rule.kind == "share"
                else self._sustained(st["now_ms"], rule, windows)
            )
            m.speaker = speaker
            if (m.holds, m.value) > (best.holds, best.value):
                best = m
        return best

    @staticmethod
    def _share(now_ms: int, rule: AlertRule, windows: list) -> _Measure:
        lo = now_ms - int(rule.lookback_s * 1000)
        total = match = 0.0
        n_conf = n_match = 0
        for start, end, label, _conf in windows:
            if label == "uncertain" or end <= lo:
                continue
            dur = min(end, now_ms) - max(start, lo)
            if dur <= 0:
                continue
            n_conf += 1
            total += dur
            if label in rule.labels:
                match += dur
                n_match += 1
        share = match / total if total else 0.0
        holds = n_conf >= rule.min_confident_windows and share >= rule.min_share
        return _Measure(
            holds,
            share,
            None,
            {
                "share": round(share, 3),
                "confident_windows": n_conf,
                "matching_windows": n_match,
                "lookback_s": rule.lookback_s,
            },
        )

    @staticmethod
    def _sustained(now_ms: int, rule: AlertRule, windows: list) -> _Measure:
        confident = [w for w in windows if w[2] != "uncertain"]
        gap = int(rule.max_gap_s * 1000)
        run: list = []
        for w in reversed(confident):
            if w[2] not in rule.labels:
                break
            if run and run[-1][0] - w[1] > gap:
                break
            run.append(w)
        if not run or now_ms - run[0][1] > gap:
            return _Measure(False, 0.0, None, {"sustained_s": 0.0, "confident_windows": 0})
        span_s = (run[0][1] - run[-1][0]) / 1000.0
        holds = span_s >= rule.sustained_s and len(run) >= rule.min_confident_windows
        return _Measure(
            holds,
            span_s,
            None,
            {
                "sustained_s": round(span_s, 2),
                "confident_windows": len(run),
                "since_ms": run[-1][0],
            },
        )

    def _message(self, rule: AlertRule, role: str | None, m: _Measure) -> str:
        who = role or "speaker"
        labels = " or ".join(rule.labels)
        if rule.kind == "share":
            return (
                f"{who} {labels} in {m.details['share']:.0%} of speech over the last "
                f"{rule.lookback_s:g} s ({m.details['confident_windows']} confident windows)"
            )
        return f"{who} {labels} sustained for {m.details['sustained_s']:.0f} s"

    def _evaluate(self, st: dict[str, Any], trigger_ms: int) -> list[AlertEvent]:
        out: list[AlertEvent] = []
        now = self._clock()
        for rule in self.rules:
            rs = st["rules"].setdefault(rule.name, {"open": None, "false_since": None, "seq": 0})
            m = self._measure(st, rule)
            open_alert = rs.get("open")
            if m.holds:
                rs["false_since"] = None
                role = st["speakers"][m.speaker]["role"] if m.speaker else None
                details = {**m.details, "rule_kind": rule.kind, "call_time_ms": st["now_ms"]}
                if not open_alert:
                    details["raised_call_ms"] = st["now_ms"]
                    alert_id = _hash_id("al", st["call_id"], rule.name, trigger_ms)
                    rs["seq"] = 0
                    rs["value"] = m.value
                    rs["open"] = {
                        "id": alert_id,
                        "call_id": st["call_id"],
                        "rule": rule.name,
                        "speaker": m.speaker,
                        "role": role,
                        "status": "raised",
                        "severity": rule.severity,
                        "message": self._message(rule, role, m),
                        "raised_at": _iso(now),
                        "updated_at": _iso(now),
                        "resolved_at": None,
                        "acknowledged_by": None,
                        "acknowledged_at": None,
                        "acknowledged_note": None,
                        "details": details,
                    }
                    out.append(self._event(rs, "alert.raised", now))
                elif abs(m.value - float(rs.get("value", 0.0))) >= rule.step - 1e-9:
                    rs["value"] = m.value
                    rs["seq"] += 1
                    details["raised_call_ms"] = open_alert["details"].get("raised_call_ms")
                    open_alert.update(
                        status="updated",
                        updated_at=_iso(now),
                        message=self._message(rule, role, m),
                        details=details,
                        speaker=m.speaker,
                        role=role,
                    )
                    out.append(self._event(rs, "alert.updated", now))
            elif open_alert:
                if rs["false_since"] is None:
                    rs["false_since"] = st["now_ms"]
                if st["now_ms"] - rs["false_since"] >= int(rule.resolve_after_s * 1000):
                    out.append(self._resolve(st, rule.name, rs, reason="condition_cleared"))
        return out

    def _resolve(self, st: dict[str, Any], name: str, rs: dict[str, Any], reason: str):
        now = self._clock()
        alert = rs["open"]
        alert.update(status="resolved", updated_at=_iso(now), resolved_at=_iso(now))
        alert["details"] = {**alert.get("details", {}), "resolved_reason": reason}
        rs["seq"] += 1
        ev = self._event(rs, "alert.resolved", now)
        rs["open"] = None
        rs["false_since"] = None
        return ev

    @staticmethod
    def _event(rs: dict[str, Any], type_: str, now: datetime) -> AlertEvent:
        alert = json.loads(json.dumps(rs["open"]))
        return AlertEvent(
            event_id=_hash_id("msg", alert["id"], type_, rs["seq"]),
            type=type_,
            alert=alert,
            occurred_at=_iso(now) or "",
        )
