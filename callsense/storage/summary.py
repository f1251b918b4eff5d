"""Call summary from a call's emotion windows: written once when the call ends.

``summarize_call`` is pure (lists and dicts in, a dict out) so the streaming persistence agent,
offline analysis and tests share it. Its result maps onto
:class:`callsense.storage.schema.CallSummary`: ``CallSummary(call_id=..., **summarize_call(...))``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

ANGRY = "angry"
UNCERTAIN = "uncertain"


def _mean_probs(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    if not rows:
        return {}
    acc: dict[str, float] = {}
    for r in rows:
        for k, v in (r.get("probabilities") or {}).items():
            acc[k] = acc.get(k, 0.0) + float(v)
    return {k: v / len(rows) for k, v in sorted(acc.items())}


def _dominant(probs: Mapping[str, float]) -> str | None:
    return max(probs, key=lambda k: (probs[k], k)) if probs else None


def _speaker_summary(
    rows: Sequence[Mapping[str, Any]], duration_ms: float, talk_time: float, role: str
) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: int(r["start_ms"]))
    n = len(rows)
    counts = Counter(str(r["label"]) for r in rows)
    shares = {k: counts[k] / n for k in sorted(counts)} if n else {}
    peak, peak_ms = 0.0, None
    for r in rows:
        p = float((r.get("probabilities") or {}).get(ANGRY, 0.0))
        if p > peak:
            peak, peak_ms = p, int(r["start_ms"])

    def mid(r: Mapping[str, Any]) -> float:
        return (int(r["start_ms"]) + int(r["end_ms"])) / 2.0

    first = [r for r in rows if mid(r) < duration_ms / 3.0]
    last = [r for r in rows if mid(r) >= 2.0 * duration_ms / 3.0]
    p_first, p_last = _mean_probs(first), _mean_probs(last)
    shift = (
        {k: p_last.get(k, 0.0) - p_first.get(k, 0.0) for k in sorted(set(p_first) | set(p_last))}
        if first and last
        else None
    )
    return {
        "role": role,
        "talk_time_s": float(talk_time),
        "talk_share": float(talk_time) / (duration_ms / 1000.0) if duration_ms > 0 else 0.0,
        "windows": n,
        "uncertain_windows": int(counts.get(UNCERTAIN, 0)),
        "shares": shares,
        "mean_probabilities": _mean_probs(rows),
        "dominant": _dominant(_mean_probs(rows)),
        "peak_anger": peak,
        "peak_anger_ms": peak_ms,
        "first_third": {
            "windows": len(first),
            "mean_probabilities": p_first,
            "dominant": _dominant(p_first),
        },
        "last_third": {
            "windows": len(last),
            "mean_probabilities": p_last,
            "dominant": _dominant(p_last),
        },
        "shift": shift,
    }


def summarize_call(
    call_duration_s: float,
    rows: Sequence[Mapping[str, Any]],
    talk_time_s: Mapping[str, float],
    conversation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Summary of one call.

    * ``rows``: the call's emotion windows as dicts of ``EmotionWindow`` columns (``speaker``,
      ``role``, ``start_ms``, ``end_ms``, ``label`` — possibly ``"uncertain"`` —,
      ``probabilities``); ``talk_time_s``: seconds of speech per speaker (VAD).
    * Per speaker: talk time and share of the call, share of windows per label (``uncertain``
      counted as its own label), mean probabilities, peak anger (highest ``angry``
      probability of any window, and when), and the first-vs-last-third shift: mean
      probabilities of the windows whose midpoint lies in the last third of the call minus
      those in the first third (``None`` when either third has no window).
    * ``anger_share``: the customer's share of ``angry`` windows (the largest speaker share if
      the call has no customer role); ``peak_anger``: the highest over all speakers.

    Returns ``{"duration_s", "anger_share", "peak_anger", "summary"}`` (CallSummary columns).
    """
    duration = float(call_duration_s)
    if not duration >= 0.0:
        raise ValueError(f"call duration must be >= 0 s, got {call_duration_s!r}")
    by_speaker: dict[str, list[Mapping[str, Any]]] = {}
    roles: dict[str, str] = {}
    for r in rows:
        spk = str(r["speaker"])
        by_speaker.setdefault(spk, []).append(r)
        roles.setdefault(spk, str(r.get("role") or "unknown"))
    for spk in talk_time_s:
        by_speaker.setdefault(str(spk), [])
        roles.setdefault(str(spk), "unknown")
    speakers = {
        spk: _speaker_summary(
            by_speaker[spk], duration * 1000.0, float(talk_time_s.get(spk, 0.0)), roles[spk]
        )
        for spk in sorted(by_speaker)
    }
    customer_shares = [
        s["shares"].get(ANGRY, 0.0)
        for s in speakers.values()
        if s["role"] == "customer" and s["windows"]
    ]
    all_shares = [s["shares"].get(ANGRY, 0.0) for s in speakers.values() if s["windows"]]
    anger_share = max(customer_shares or all_shares or [0.0])
    peak = max([s["peak_anger"] for s in speakers.values()] or [0.0])
    summary = {
        "duration_s": duration,
        "windows": sum(s["windows"] for s in speakers.values()),
        "talk_time_s": {spk: s["talk_time_s"] for spk, s in speakers.items()},
        "anger_share": anger_share,
        "peak_anger": peak,
        "speakers": speakers,
    }
    if conversation is not None:  # silence, overtalk, interruptions, monologues (VAD)
        summary["conversation"] = dict(conversation)
    return {
        "duration_s": duration,
        "anger_share": anger_share,
        "peak_anger": peak,
        "summary": summary,
    }


def describe_conversation(conv: Mapping[str, Any]) -> list[str]:
    """Conversation metrics as text lines (``calls show``, ``analyze``)."""
    lines = [
        f"silence {conv['silence_s']:.1f} s ({conv['silence_share']:.0%}), "
        f"{conv['long_silences']} over 3 s (longest {conv['longest_silence_s']:.1f} s); "
        f"overtalk {conv['overtalk_s']:.1f} s ({conv['overtalk_share']:.0%})"
    ]
    for spk, s in conv["speakers"].items():
        lines.append(
            f"  {spk} ({s['role']}): talk {s['talk_time_s']:.1f} s ({s['talk_ratio']:.0%} of "
            f"talk), {s['turns']} turns, longest monologue {s['longest_monologue_s']:.1f} s, "
            f"{s['interruptions']} interruptions"
        )
    return lines
