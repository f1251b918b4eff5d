"""Alert engine: rules, lifecycle, one open alert per call and rule, JSON state, replays;
persistence of alert events on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from callsense.processors.alerts import (
    DEFAULT_RULES,
    AlertEngine,
    AlertEvent,
    InvalidWindowEvent,
    acknowledged_event,
    parse_rules,
)


def win(
    i: int,
    label: str,
    *,
    speaker: str = "ch1",
    role: str = "customer",
    conf: float = 0.9,
    call: str = "c1",
    hop_ms: int = 1000,
    length_ms: int = 3000,
) -> dict:
    uncertain = conf < 0.45
    return {
        "call_id": call,
        "speaker": speaker,
        "role": role,
        "start_ms": i * hop_ms,
        "end_ms": i * hop_ms + length_ms,
        "label": "uncertain" if uncertain else label,
        "raw_label": label,
        "confidence": conf,
        "uncertain": uncertain,
        "probabilities": {label: conf},
    }


def share_only() -> AlertEngine:
    return AlertEngine(parse_rules(json.dumps([DEFAULT_RULES[0]])))


def types(events: list[AlertEvent]) -> list[str]:
    return [e.type for e in events]


def test_rules_parse_and_reject_bad_config() -> None:
    rules = parse_rules("")
    assert [r.name for r in rules] == ["customer_anger", "negative_sustained"]
    assert rules[0].min_share == 0.6 and rules[0].lookback_s == 15
    assert rules[1].labels == ["angry", "sad"] and rules[1].sustained_s == 30
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_rules("[{")
    with pytest.raises(ValueError, match="duplicate"):
        parse_rules(json.dumps([DEFAULT_RULES[0], DEFAULT_RULES[0]]))
    with pytest.raises(ValueError, match="invalid alert rules"):
        parse_rules(json.dumps([{**DEFAULT_RULES[0], "min_share": 3}]))


def test_share_rule_needs_three_confident_windows_and_ignores_uncertain() -> None:
    eng = share_only()
    assert eng.feed(win(0, "angry")) == []
    assert eng.feed(win(1, "angry", conf=0.2)) == []  # uncertain: counts for nothing
    assert eng.feed(win(2, "angry")) == []  # 2 confident windows
    out = eng.feed(win(3, "angry"))
    assert types(out) == ["alert.raised"]
    a = out[0].alert
    assert a["rule"] == "customer_anger" and a["role"] == "customer" and a["speaker"] == "ch1"
    assert a["details"]["confident_windows"] == 3 and a["details"]["share"] == 1.0
    assert "customer angry in 100% of speech" in a["message"]


def test_rule_is_per_role_agent_anger_does_not_alert() -> None:
    eng = share_only()
    out = [e for i in range(10) for e in eng.feed(win(i, "angry", speaker="ch0", role="agent"))]
    assert out == []


def test_share_below_threshold_does_not_alert() -> None:
    eng = share_only()
    labels = ["neutral", "angry"] * 10  # <= 50 % < 60 %
    out = [e for i, lab in enumerate(labels) for e in eng.feed(win(i, lab))]
    assert out == []


def test_one_open_alert_per_call_and_rule_then_resolve_and_reraise() -> None:
    eng = share_only()
    events: list[AlertEvent] = []
    i = 0
    for _ in range(20):
        events += eng.feed(win(i, "angry"))
        i += 1
    assert types(events) == ["alert.raised"]  # share stays 1.0: no update, never a 2nd raise
    # mixed speech: share drops below 60 % -> condition false -> resolved after 5 s
    for lab in ["neutral", "neutral", "angry"] * 10:
        events += eng.feed(win(i, lab))
        i += 1
    t = types(events)
    assert t[0] == "alert.raised" and "alert.resolved" in t
    assert t.count("alert.raised") == 1
    assert "alert.updated" in t[: t.index("alert.resolved")]  # share moved >= 0.1 first
    first_id = events[0].alert["id"]
    assert {e.alert["id"] for e in events} == {first_id}
    resolved = events[t.index("alert.resolved")]
    assert resolved.alert["status"] == "resolved" and resolved.alert["resolved_at"]
    # anger again -> a NEW alert id
    more: list[AlertEvent] = []
    for _ in range(20):
        more += eng.feed(win(i, "angry"))
        i += 1
    assert types(more)[0] == "alert.raised" and more[0].alert["id"] != first_id


def test_two_calls_are_independent() -> None:
    eng = share_only()
    a = [e for i in range(5) for e in eng.feed(win(i, "angry", call="A"))]
    b = [e for i in range(5) for e in eng.feed(win(i, "angry", call="B"))]
    assert types(a) == types(b) == ["alert.raised"]
    assert a[0].alert["id"] != b[0].alert["id"]


def test_sustained_rule_needs_30_seconds_and_breaks_on_other_label() -> None:
    eng = AlertEngine(parse_rules(json.dumps([DEFAULT_RULES[1]])))
    out: list[AlertEvent] = []
    # 3 s windows, 1 s hop: the run spans (i + 3) s after window i
    for i in range(26):
        out += eng.feed(win(i, "angry" if i % 2 else "sad"))
    assert out == []  # 28 s
    for i in range(26, 29):
        out += eng.feed(win(i, "sad"))
    assert types(out) == ["alert.raised"]
    assert out[0].alert["details"]["sustained_s"] >= 30
    assert out[0].alert["severity"] == "critical"
    # a confident neutral window breaks the run; the alert resolves after resolve_after_s
    for i in range(29, 40):
        out += eng.feed(win(i, "neutral"))
    assert types(out) == ["alert.raised", "alert.resolved"]


def test_sustained_rule_tolerates_uncertain_windows_but_not_gaps() -> None:
    eng = AlertEngine(parse_rules(json.dumps([DEFAULT_RULES[1]])))
    out = []
    for i in range(40):
        out += eng.feed(win(i, "angry", conf=0.3 if i % 4 == 0 else 0.9))
    assert types(out) == ["alert.raised"]
    eng2 = AlertEngine(parse_rules(json.dumps([DEFAULT_RULES[1]])))
    out2 = []
    for i in list(range(15)) + list(range(25, 55)):  # a 7 s hole in the middle
        out2 += eng2.feed(win(i, "angry"))
    raised = [e for e in out2 if e.type == "alert.raised"]
    assert len(raised) == 1
    assert raised[0].alert["details"]["since_ms"] == 25_000  # the run restarted after the hole


def test_state_is_json_and_replays_are_idempotent() -> None:
    stream = [win(i, "angry") for i in range(12)] + [win(i, "neutral") for i in range(12, 30)]
    direct = AlertEngine()
    expected = [e.to_json() for ev in stream for e in direct.feed(ev)]

    eng = AlertEngine()
    state: dict | None = None
    got = []
    for ev in stream:
        state, out = eng.process(state, ev)
        state = json.loads(json.dumps(state))  # through a Faust table
        got += [e.to_json() for e in out]
        # at-least-once: the same event again changes nothing
        state2, dup = eng.process(state, ev)
        assert dup == [] and state2 == state
    assert [e["alert"]["id"] for e in got] == [e["alert"]["id"] for e in expected]
    assert [e["alert"]["details"] for e in got] == [e["alert"]["details"] for e in expected]
    assert [e["event_id"] for e in got] == [e["event_id"] for e in expected]
    kinds = [e["type"] for e in got]
    assert kinds[0] == "alert.raised" and kinds[-1] == "alert.resolved"


def test_end_call_resolves_open_alerts_and_ignores_late_windows() -> None:
    eng = share_only()
    for i in range(5):
        eng.feed(win(i, "angry"))
    out = eng.end_call_local("c1")
    assert types(out) == ["alert.resolved"]
    assert out[0].alert["details"]["resolved_reason"] == "call_ended"
    assert eng.feed(win(6, "angry")) == []


@pytest.mark.parametrize(
    "patch, reason",
    [
        ({"call_id": ""}, "call_id"),
        ({"start_ms": -5}, "start_ms"),
        ({"confidence": 7}, "confidence"),
        ({"end_ms": 0}, "ends before"),
        ({"label": None}, "label"),
    ],
)
def test_bad_events_get_a_clear_error(patch: dict, reason: str) -> None:
    with pytest.raises(InvalidWindowEvent, match=reason):
        AlertEngine().feed({**win(3, "angry"), **patch})


def test_alert_events_persist_idempotently(database_url: str) -> None:
    from callsense.storage import alerts as store
    from callsense.storage.db import make_engine, session_factory
    from callsense.storage.schema import Alert

    eng = share_only()
    events = [e for i in range(10) for e in eng.feed(win(i, "angry", call="p1"))]
    events += eng.end_call_local("p1")
    assert types(events) == ["alert.raised", "alert.resolved"]
    engine = make_engine(database_url)
    sf = session_factory(engine)
    with sf() as s, s.begin():
        store.apply_alert_event(s, events[0].type, events[0].alert)
    with sf() as s, s.begin():
        with pytest.raises(ValueError, match="longer than"):
            store.acknowledge(s, events[0].alert["id"], "sam", note="x" * 501)
        ack = store.acknowledge(s, events[0].alert["id"], "sam", datetime(2026, 1, 1, tzinfo=UTC),
                                note="  called the customer back  ")  # fmt: skip
        assert ack and ack["acknowledged_by"] == "sam"
        assert ack["acknowledged_note"] == "called the customer back"
        assert store.acknowledge(s, events[0].alert["id"], "other") is None  # once only
    ack_ev = acknowledged_event(ack, "sam", datetime(2026, 1, 1, tzinfo=UTC))
    for ev in [events[0], ack_ev, events[1], events[0], events[1]]:  # replayed out of order
        with sf() as s, s.begin():
            store.apply_alert_event(s, ev.type, ev.alert)
    with sf() as s:
        rows = s.query(Alert).all()
        assert len(rows) == 1
        row = rows[0]
        assert row.status == "resolved" and row.acknowledged_by == "sam"
        assert row.acknowledged_note == "called the customer back"
        assert row.resolved_at is not None
        assert store.open_alerts(s) == []
    engine.dispose()


def test_alert_store_carries_the_acknowledgement_into_later_events(database_url: str) -> None:
    from callsense.storage import alerts as store

    eng = share_only()
    first = [e for i in range(4) for e in eng.feed(win(i, "angry", call="p2"))]
    assert types(first) == ["alert.raised"]
    db = store.AlertStore(database_url)
    db.apply(first)
    with db.session_factory() as s, s.begin():
        store.acknowledge(s, first[0].alert["id"], "sam", note="took over")
    later = [e for i in range(4, 30) for e in eng.feed(win(i, "neutral", call="p2"))]
    assert "alert.resolved" in types(later)
    db.apply(later)
    assert all(e.alert["acknowledged_by"] == "sam" for e in later)
    assert all(e.alert["acknowledged_at"] for e in later)
    assert all(e.alert["acknowledged_note"] == "took over" for e in later)
    db.engine.dispose()


def test_rules_edited_in_the_database_take_over_and_bad_versions_are_ignored(
    database_url: str,
) -> None:
    from callsense.processors.alerts import RuleSource, rules_json

    from callsense.storage.db import make_engine, session_factory
    from callsense.storage.rules import rule_versions, save_rules
    from callsense.storage.schema import AlertRuleSet

    engine = make_engine(database_url)
    sf = session_factory(engine)
    env = json.dumps([DEFAULT_RULES[0]])  # customer_anger only
    source = RuleSource(env, sf, every_s=0.0)
    assert source.refresh() is False and source.version is None  # never edited: environment
    alerts = AlertEngine(source.rules)
    calm_then_sad = [win(i, "sad") for i in range(8)]
    assert not [e for w in calm_then_sad for e in alerts.feed(w)]  # sadness: no anger alert

    lenient = rules_json(parse_rules(json.dumps([{"name": "customer_sad", "labels": ["sad"],
                                                  "min_share": 0.5, "severity": "critical"}])))
    with sf.begin() as s:
        assert save_rules(s, lenient, "sam", "  sad callers too ") == 1
    assert source.refresh() is True and source.version == 1
    alerts.set_rules(source.rules)
    raised = [e for w in [win(i, "sad", call="c2") for i in range(8)] for e in alerts.feed(w)]
    assert types(raised)[:1] == ["alert.raised"]
    assert raised[0].alert["rule"] == "customer_sad" and raised[0].alert["severity"] == "critical"

    with sf.begin() as s:  # written around the dashboard's validation
        s.add(AlertRuleSet(rules=[{"name": "BAD NAME", "labels": []}], created_by="x"))
    assert source.refresh() is False and [r.name for r in source.rules] == ["customer_sad"]
    assert source.refresh() is False  # the bad version is not read again and again
    with sf() as s:
        versions = rule_versions(s)
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[1]["note"] == "sad callers too" and versions[1]["created_by"] == "sam"
    engine.dispose()
