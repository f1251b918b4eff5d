"""Offset-order admission of a partition's records to the audio state machine (and to the
windows writer).

Kafka delivers a partition in offset order, and the call state machine relies on it: a chunk
that never reaches it is waited for (reorder buffer), then given up as missing audio. Faust
(faust-streaming 0.15.3) can skip records inside one worker session: its recovery and seeks
race with the fetcher (docs/streaming.md tells how this was found).

:class:`OffsetGuard` makes such a skip visible and repairs it: it remembers the next offset
expected on each partition; a record past it is held back (not processed, not acknowledged)
and the consumer is sought back to the expected offset, so the skipped records are fetched
again. Records before it are replays (processed again; the state machine skips them by seq).
A plain class, no Kafka. :class:`Admission` wires it to a Faust app's consumer and rebalances.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: seconds to wait for the records a seek asked for before seeking again
SEEK_RETRY_S = 5.0
#: seeks to one offset before the records are taken as absent from the log (not a skip)
MAX_SEEKS = 3


class Verdict(enum.Enum):
    NEXT = "next"  # the expected record: process it
    REPLAY = "replay"  # before the expected offset: process it (a replay, skipped by seq)
    AHEAD = "ahead"  # past the expected offset: hold it back; records before it were skipped
    ABSENT = "absent"  # past a hole given up as absent from the log: process it


@dataclass
class _Seek:  # a seek back to the partition's expected offset
    attempts: int
    at: float


class OffsetGuard:
    """Admit each partition's records in offset order, without holes.

    ``admit(tp, offset)`` returns the verdict and the hole's first offset where the caller
    acts on it: for the first record past a hole (AHEAD), the offset to seek the partition back
    to; for a record admitted past a hole given up (ABSENT), where the absent offsets begin.
    :meth:`overdue` repeats a seek that was not answered within ``retry_s``. Once ``max_seeks``
    seeks went unanswered for ``retry_s`` each, the missing offsets are taken as absent from the
    log (logged, counted in ``gaps``) and the next record is admitted.
    """

    def __init__(
        self,
        retry_s: float = SEEK_RETRY_S,
        max_seeks: int = MAX_SEEKS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry_s = retry_s
        self.max_seeks = max_seeks
        self.clock = clock
        self.expected: dict[Hashable, int] = {}
        self.seeks: dict[Hashable, _Seek] = {}
        self.skipped = 0  # records held back because earlier ones were skipped
        self.gaps = 0  # offsets given up as absent from the log

    def start(self, tp: Hashable, offset: int | None) -> None:
        """The consumer was sought to ``offset`` (its committed offset) on ``tp``.

        Sets the expected offset only if none is known: records already admitted past it are
        in the call state, so anything before them is a replay either way.
        """
        if offset is not None and offset >= 0:
            self.expected.setdefault(tp, offset)

    def forget(self, tps: Iterable[Hashable] | None = None) -> None:
        """Drop what is known of ``tps`` (all partitions if None), e.g. at a rebalance."""
        for tp in list(self.expected) if tps is None else list(tps):
            self.expected.pop(tp, None)
            self.seeks.pop(tp, None)

    def admit(self, tp: Hashable, offset: int) -> tuple[Verdict, int | None]:
        expected = self.expected.get(tp)
        if expected is None or offset == expected:
            self.expected[tp] = offset + 1
            self.seeks.pop(tp, None)
            return Verdict.NEXT, None
        if offset < expected:
            return Verdict.REPLAY, None
        seek = self.seeks.get(tp)
        if seek is None:
            self.skipped += 1
            self.seeks[tp] = _Seek(1, self.clock())
            return Verdict.AHEAD, expected
        if seek.attempts < self.max_seeks or self.clock() - seek.at < self.retry_s:
            self.skipped += 1
            return Verdict.AHEAD, None  # the seek is under way; overdue() repeats it
        log.warning(
            "partition %s: offsets %d..%d did not come back after %d seeks; taken as absent",
            tp, expected, offset - 1, seek.attempts,
        )  # fmt: skip
        self.gaps += offset - expected
        self.expected[tp] = offset + 1
        self.seeks.pop(tp, None)
        return Verdict.ABSENT, expected

    def overdue(self) -> list[tuple[Hashable, int]]:
        """Seeks to repeat: holes not filled ``retry_s`` after the last seek, at most
        ``max_seeks`` seeks each (called by a timer, so a hole is retried with no new record)."""
        now = self.clock()
        due = []
        for tp, seek in self.seeks.items():
            if seek.attempts < self.max_seeks and now - seek.at >= self.retry_s:
                seek.attempts += 1
                seek.at = now
                due.append((tp, self.expected[tp]))
        return due


def faust_gap(consumer: Any, tp: Hashable, start: int, end: int, absent: bool) -> None:
    """Correct Faust's gap record for offsets ``start..end-1`` of ``tp``.

    Faust (faust-streaming 0.15.3) records a jump of its read offset as a "gap" that its next
    commit treats as acknowledged. A jump over skipped records is no such gap (``absent`` False):
    it is dropped, so the committed offset cannot pass records that are not in a checkpoint yet.
    Offsets the guard took as absent from the log are one (``absent`` True): it is recorded, or
    the committed offset would stop there for good.
    """
    gaps = getattr(consumer, "_gap", None)
    if gaps is None:  # another Faust version: nothing to correct
        return
    if absent:
        gaps[tp].addi(start, end)
    elif tp in gaps:
        gaps[tp].chop(start, end)


class Admission:
    """Offset-order admission for the stream agents of one Faust app: an :class:`OffsetGuard`,
    the consumer's seeks, and the rebalance hooks that restart both from committed offsets.

    Faust's recovery (faust-streaming 0.15.3) resumes the stream partitions while the consumer
    is already fetching, seeks them to their committed offsets, and only then clears the
    streams' queues; records fetched before the seek and still queued are dropped, and may not
    come back (a race). Seeking once more to the committed offsets after a rebalance re-reads
    them; replays are skipped by seq, and the guard repairs any skip that remains.
    """

    def __init__(self, app: Any, stream_topics: tuple[str, ...]) -> None:
        self.app = app
        self.streams = stream_topics
        self.guard = OffsetGuard()

    def install(self) -> None:
        """Hook into the app's rebalances (call once, before the app starts)."""
        start, end = self.app.on_rebalance_start, self.app.on_rebalance_end

        def on_rebalance_start() -> None:
            self.guard.forget()  # the next assignment starts from the committed offsets
            start()

        def on_rebalance_end() -> None:
            end()
            asyncio.ensure_future(self.seek_committed())

        self.app.on_rebalance_start = on_rebalance_start
        self.app.on_rebalance_end = on_rebalance_end

    async def admit(self, events: list[Any]) -> list[Any]:
        """The events the guard admits; for a hole, seek its partition back to it. Held-back
        events are neither processed nor acknowledged: the seek fetches them again."""
        consumer = self.app.consumer
        admitted, seeks = [], {}
        for e in events:
            tp, offset = e.message.tp, e.message.offset
            verdict, hole = self.guard.admit(tp, offset)
            if verdict is Verdict.AHEAD:
                faust_gap(consumer, tp, self.guard.expected[tp], offset + 1, absent=False)
                if hole is not None:
                    seeks.setdefault(tp, (hole, offset))
                continue
            if verdict is Verdict.ABSENT:
                faust_gap(consumer, tp, hole, offset, absent=True)
            admitted.append(e)
        for tp, (seek_to, seen) in seeks.items():
            log.warning(
                "partition %s: got offset %d while expecting %d (records skipped by the "
                "consumer); seeking back to %d", tp, seen, seek_to, seek_to,
            )  # fmt: skip
            await self.seek(tp, seek_to)
        return admitted

    async def seek(self, tp: Any, offset: int) -> None:
        try:
            await seek_on_consumer_thread(self.app.consumer, tp, offset)
        except Exception as exc:  # noqa: BLE001 - the guard asks again after its retry time
            log.warning("seek of %s to %d failed: %r", tp, offset, exc)

    async def retry_overdue(self) -> None:
        """Seek again where a hole's records have not come back (called by a timer)."""
        for tp, offset in self.guard.overdue():
            log.warning("partition %s: offset %d still missing; seeking back again", tp, offset)
            await self.seek(tp, offset)

    async def seek_committed(self) -> None:
        """After a rebalance: every partition to its committed offset, and the guard with it."""
        consumer = self.app.consumer
        try:
            committed = await consumer.seek_to_committed()
            # nothing committed yet (a worker killed before its first commit): start at the
            # log's beginning explicitly; left alone, the position was the log end and the
            # records in between were never processed
            fresh = [tp for tp, o in committed.items() if tp.topic in self.streams and not o]
            start = dict(await consumer.earliest_offsets(*fresh)) if fresh else {}
            for tp, offset in committed.items():
                if tp in start:
                    offset = max(int(start[tp] or 0), 0)
                elif offset is None or offset <= 0:
                    continue  # a table changelog: Faust's recovery owns its position
                await seek_on_consumer_thread(consumer, tp, offset)
                if tp.topic in self.streams:
                    self.guard.start(tp, offset)
            log.info("recovery done: partitions sought to their committed offsets again")
        except Exception as exc:  # noqa: BLE001 - e.g. a new rebalance began: it seeks again
            log.warning("seek to committed offsets after recovery failed: %r", exc)


async def seek_on_consumer_thread(consumer: Any, tp: Any, offset: int) -> None:
    """Seek ``tp`` to ``offset`` on the thread that owns the Kafka client, then set Faust's read
    offset as ``Consumer.seek`` does. Faust's own seek mutates aiokafka's fetcher from the event
    loop's thread while the consumer thread iterates it (a worker crashed with ``KeyError`` in
    ``Fetcher.fetched_records``); aiokafka is not thread-safe."""
    thread = getattr(consumer, "_thread", None)
    if thread is None:  # a consumer without a client thread: its seek is already safe
        await consumer.seek(tp, offset)
        return
    client = thread._ensure_consumer()
    await thread.call_thread(client.seek, tp, offset)
    consumer._read_offset[tp] = offset if offset else None
