"""Conversation metrics of a call from its speakers' speech segments (VAD, both channels).

Pure: segments in, a dict out. A segment is ``(start_ms, end_ms)`` of call time in which the
speaker's VAD kept audio (speech plus hangover); one speaker's segments never overlap.

* silence: time in which nobody speaks; a *long silence* is such a gap longer than
  ``long_silence_ms`` (the lead-in before the first word counts, the tail after the last does not
  once the call has ended: it is hang-up time).
* overtalk: time in which two or more speakers speak at once.
* interruption: a speaker starts while another is speaking and both go on together for at least
  ``interruption_ms`` (shorter overlaps are back-channels: "mm-hm").
* floor and monologue: the floor is held by the only speaker speaking; it stays with its holder
  through overtalk and through pauses up to ``long_silence_ms``. A monologue is one uninterrupted
  hold; the longest is reported per speaker.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: gaps in which nobody speaks longer than this count as long silences (and end a monologue)
LONG_SILENCE_MS = 3000
#: a speaker starting over another counts as an interruption when both go on this long
INTERRUPTION_MS = 500


def merge_spans(spans: Iterable[Sequence[float]]) -> list[tuple[Any, Any]]:
    """Overlapping or touching ``(start, end)`` spans joined, in order; empty ones dropped."""
    out: list[list[Any]] = []
    for s, e in sorted((a, b) for a, b in spans if b > a):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def conversation_metrics(
    segments: Mapping[str, Sequence[Sequence[int]]],
    roles: Mapping[str, str],
    duration_ms: int,
    ended: bool = True,
    long_silence_ms: int = LONG_SILENCE_MS,
    interruption_ms: int = INTERRUPTION_MS,
) -> dict[str, Any]:
    """Metrics over ``[0, duration_ms]``: per speaker (talk time and share, turns, longest
    monologue, interruptions made) and for the call (silence, long silences, overtalk)."""
    segs = {spk: merge_spans(s) for spk, s in segments.items()}
    duration_ms = max(0, int(duration_ms))
    points = sorted({0, duration_ms, *(t for s in segs.values() for seg in s for t in seg)})
    points = [p for p in points if 0 <= p <= duration_ms]
    last_speech = max((s[-1][1] for s in segs.values() if s), default=0)
    horizon = min(duration_ms, last_speech) if ended else duration_ms

    silence = overtalk = 0
    gaps: list[int] = []
    gap = 0
    holder: str | None = None
    hold_from = 0
    longest: dict[str, int] = {spk: 0 for spk in segs}
    turns: dict[str, int] = {spk: 0 for spk in segs}
    idx = {spk: 0 for spk in segs}

    def active(t0: int, t1: int) -> list[str]:
        out = []
        for spk, s in segs.items():
            i = idx[spk]
            while i < len(s) and s[i][1] <= t0:
                i += 1
            idx[spk] = i
            if i < len(s) and s[i][0] < t1:
                out.append(spk)
        return out

    def end_hold(t: int) -> None:
        if holder is not None:
            longest[holder] = max(longest[holder], t - hold_from)

    for t0, t1 in zip(points, points[1:], strict=False):
        if t0 >= horizon:
            break
        t1 = min(t1, horizon)
        now = active(t0, t1)
        if not now:
            silence += t1 - t0
            gap += t1 - t0
            continue
        if gap:
            gaps.append(gap)
        if len(now) >= 2:
            overtalk += t1 - t0
        elif now[0] != holder or gap > long_silence_ms:
            end_hold(t0 - gap)
            holder, hold_from = now[0], t0
            turns[holder] += 1
        gap = 0
    if gap:
        gaps.append(gap)
    end_hold(horizon - gap)

    interruptions = {spk: 0 for spk in segs}
    starts = {spk: [a for a, _ in s] for spk, s in segs.items()}
    for spk, s in segs.items():
        for start, end in s:
            for other, o in segs.items():
                i = bisect_right(starts[other], start) - 1  # the other's segment under ``start``
                if other == spk or i < 0:
                    continue
                a, b = o[i]
                if a < start < b and min(b, end) - start >= interruption_ms:
                    interruptions[spk] += 1
                    break

    talk = {spk: sum(e - s for s, e in ss) for spk, ss in segs.items()}
    total_talk = sum(talk.values())
    dur_s = duration_ms / 1000.0
    long_gaps = [g for g in gaps if g > long_silence_ms]
    return {
        "duration_s": dur_s,
        "silence_s": silence / 1000.0,
        "silence_share": silence / duration_ms if duration_ms else 0.0,
        "long_silences": len(long_gaps),
        "long_silence_s": sum(long_gaps) / 1000.0,
        "longest_silence_s": max(gaps, default=0) / 1000.0,
        "overtalk_s": overtalk / 1000.0,
        "overtalk_share": overtalk / duration_ms if duration_ms else 0.0,
        "speakers": {
            spk: {
                "role": roles.get(spk, "unknown"),
                "talk_time_s": talk[spk] / 1000.0,
                "talk_share": talk[spk] / duration_ms if duration_ms else 0.0,
                "talk_ratio": talk[spk] / total_talk if total_talk else 0.0,
                "turns": turns[spk],
                "longest_monologue_s": longest[spk] / 1000.0,
                "interruptions": interruptions[spk],
            }
            for spk in sorted(segs)
        },
    }

