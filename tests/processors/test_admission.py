"""OffsetGuard: a partition's records reach the state machine in offset order, without holes."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from callsense.processors.admission import OffsetGuard, Verdict, faust_gap, seek_on_consumer_thread
from mode.threads import QueueServiceThread

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
    assert guard.admit(TP, 7) == (Verdict.ABSENT, 0)  # 0..6 are not in the log
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


def _faust_offsets() -> SimpleNamespace:
    """The offset bookkeeping attributes that Faust's Consumer commit computation reads."""
    from collections import defaultdict

    from intervaltree import IntervalTree

    return SimpleNamespace(
        _committed_offset=defaultdict(lambda: None),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
    )


def _committed(consumer_class: type, c: SimpleNamespace) -> int | None:
    """The highest offset Faust's successive commits reach with what is acknowledged now."""
    reached = None
    while (offset := consumer_class._new_offset(c, TP)) is not None:
        reached = offset
    return reached


def test_faust_gap_over_skipped_records_is_dropped_so_the_commit_stops_at_the_hole():
    from faust.transport.consumer import Consumer

    def commit_after_skip(correct: bool) -> int | None:
        c = _faust_offsets()
        # after a seek back to 142, a stale fetch delivered 240: Faust records 143..240 as a gap
        asyncio.run(Consumer._add_gap(c, TP, 143, 240))
        if correct:  # what the agent does when the guard holds 240 back
            faust_gap(c, TP, 142, 241, absent=False)
        c._acked[TP].extend(range(142, 151))  # the re-fetched 142..150 are in a checkpoint
        return _committed(Consumer, c)

    assert commit_after_skip(correct=False) == 241  # past 151..240, not processed yet
    assert commit_after_skip(correct=True) == 151


def test_faust_gap_for_offsets_absent_from_the_log_lets_the_commit_pass():
    from faust.transport.consumer import Consumer

    def commit(correct: bool) -> int | None:
        c = _faust_offsets()
        c._committed_offset[TP] = 3
        if correct:  # the guard took 4..6 as absent and admitted 7
            faust_gap(c, TP, 4, 7, absent=True)
        c._acked[TP].extend([7, 8])
        return _committed(Consumer, c)

    assert commit(correct=False) is None  # stuck before the absent offsets
    assert commit(correct=True) == 9


def test_seek_runs_on_the_kafka_client_thread_and_sets_the_read_offset():
    """aiokafka is not thread-safe: a seek from the event loop's thread races the consumer
    thread's fetch (a worker crashed with KeyError in Fetcher.fetched_records)."""

    class Client:
        seeks: list = []

        def seek(self, tp, offset):
            self.seeks.append((tp, offset, threading.get_ident()))

    class ClientThread(QueueServiceThread):
        client = Client()

        def _ensure_consumer(self):
            return self.client

    async def run():
        thread = ClientThread()
        await thread.start()
        try:
            consumer = SimpleNamespace(_thread=thread, _read_offset={})
            await seek_on_consumer_thread(consumer, TP, 41)
            return consumer._read_offset, thread._thread.ident
        finally:
            await thread.stop()

    read_offset, client_thread = asyncio.run(run())
    assert Client.seeks == [(TP, 41, client_thread)]
    assert client_thread != threading.get_ident()
    assert read_offset == {TP: 41}
