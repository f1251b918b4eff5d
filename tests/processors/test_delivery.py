"""OffsetGuard: a partition's records reach the state machine in offset order, without holes."""

from __future__ import annotations

from callsense.processors.delivery import OffsetGuard, Verdict

TP = ("callsense.audio", 2)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_in_order_and_replays_pass():
    guard = OffsetGuard()
    guard.start(TP, 72)
    assert [guard.admit(TP, o)[0] for o in (72, 73, 74)] == [Verdict.NEXT] * 3
    # a seek back (recovery, or the guard's own) replays records: they are processed again
    assert [guard.admit(TP, o)[0] for o in (72, 73, 74, 75)] == [Verdict.REPLAY] * 3 + [
        Verdict.NEXT
    ]
    assert guard.expected[TP] == 76 and guard.skipped == 0


def test_hole_holds_back_and_seeks_once_until_filled():
    clock = Clock()
    guard = OffsetGuard(retry_s=5, max_seeks=3, clock=clock)
    guard.start(TP, 10)
    assert guard.admit(TP, 10) == (Verdict.NEXT, None)
    # 11..40 skipped by the consumer: 41 is held back, the partition sought back to 11
    assert guard.admit(TP, 41) == (Verdict.AHEAD, 11)
    assert guard.admit(TP, 42) == (Verdict.AHEAD, None)  # the seek is under way
    assert guard.overdue() == []  # not yet due
    # the re-fetch: 11 onwards in order, then 41 again
    assert all(guard.admit(TP, o) == (Verdict.NEXT, None) for o in range(11, 45))
    assert guard.skipped == 2 and guard.gaps == 0 and guard.seeks == {}


def test_unanswered_seek_is_repeated_then_the_hole_is_taken_as_absent():
    clock = Clock()
    guard = OffsetGuard(retry_s=5, max_seeks=3, clock=clock)
    guard.start(TP, 0)
    assert guard.admit(TP, 7) == (Verdict.AHEAD, 0)
    clock.t = 4.9
    assert guard.overdue() == []
    clock.t = 5.0
    assert guard.overdue() == [(TP, 0)]  # second seek
    clock.t = 10.0
    assert guard.overdue() == [(TP, 0)]  # third
    clock.t = 15.0
    assert guard.overdue() == []  # no more seeks
    clock.t = 14.0
    assert guard.admit(TP, 7) == (Verdict.AHEAD, None)  # the last seek is still recent
    clock.t = 15.0
    assert guard.admit(TP, 7) == (Verdict.NEXT, None)  # 0..6 are not in the log
    assert guard.gaps == 7 and guard.expected[TP] == 8


def test_start_keeps_what_was_admitted_and_forget_resets():
    guard = OffsetGuard()
    assert guard.admit(TP, 100) == (Verdict.NEXT, None)  # nothing known: first record starts
    guard.start(TP, 72)  # committed offset behind what is in the state: replays, not a hole
    assert guard.admit(TP, 72)[0] is Verdict.REPLAY
    guard.start(TP, -1)  # no committed offset
    other = ("callsense.audio", 0)
    guard.start(other, 5)
    assert guard.admit(other, 6) == (Verdict.AHEAD, 5)
    guard.forget([other])
    assert other not in guard.expected and other not in guard.seeks
    guard.forget()
    assert guard.expected == {} and guard.admit(TP, 3) == (Verdict.NEXT, None)
