"""Per-call state checkpoints, and the audio offsets they release.

The audio agent folds events into live call contexts (:mod:`callsense.processors.callstate`)
and sends their windows at once; the events themselves stay unacknowledged ("held") until a
checkpoint covering them is durable. :meth:`Checkpointer.commit` writes that checkpoint. After
a crash the successor restores the ``call-state`` table, replays the events after the committed
offsets and regenerates exactly the windows that were lost (the database ignores the rest).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from callsense.processors.callstate import CallContext, Stored, encode_state, state_head

#: how often stored states of calls this worker does not hold are looked at (adoption)
ADOPT_EVERY_S = 5.0


class Checkpointer:
    """Owns the held audio events, the dirty call contexts, and the ``call-state`` table.

    ``table``: the Faust table (bytes keys and values); ``run_cpu``: runs a function in the
    inference executor (serialising states is CPU work); ``ensure_topic``: makes the producer
    track the changelog topic before it is written to; ``interval_s``: longest time between
    checkpoints while audio flows.
    """

    def __init__(
        self,
        table: Any,
        run_cpu: Callable[..., Awaitable[Any]],
        ensure_topic: Callable[[str], Awaitable[None]],
        interval_s: float,
    ) -> None:
        self.table = table
        self.run_cpu = run_cpu
        self.ensure_topic = ensure_topic
        self.interval_s = interval_s
        self.held: list[Any] = []  # audio events processed, not yet covered by a checkpoint
        self.dirty: dict[str, CallContext] = {}  # calls changed since the last checkpoint
        self.partition_of: dict[str, int] = {}  # call id -> its audio (= changelog) partition
        self.last = time.monotonic()
        self._lock = asyncio.Lock()
        self._adopted_at = 0.0

    def stored(self, key: bytes) -> Stored:
        """The newest state of the call keyed ``key``: its live context if changed since the
        last checkpoint, else its checkpoint in the table (None for a call never seen)."""
        return self.dirty.get(key.decode("utf-8", "replace")) or self.table.get(key)

    def record(self, events: list[Any], contexts: dict[str, CallContext]) -> None:
        """A processed micro-batch: hold its events, remember the contexts it changed."""
        for e in events:
            if e.message.key:
                cid = e.message.key.decode("utf-8", "replace")
                self.partition_of[cid] = int(e.message.partition or 0)
        self.held.extend(events)
        self.dirty.update(contexts)

    @property
    def pending(self) -> bool:
        return bool(self.dirty or self.held)

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.interval_s

    async def commit(self) -> None:
        """Make the dirty states durable, then release the held events.

        The caller holds the audio agent's batch lock, so no micro-batch changes the contexts
        while they are written, and the states written are exactly those the held events built.

        1. Take the dirty contexts and the held events (both start empty again).
        2. Serialise each context (:func:`~callsense.processors.callstate.encode_state`) in the
           inference executor: states are up to a few hundred kB of JSON.
        3. Send each state to its changelog partition, which is the call's audio partition
           (given explicitly: the producer may not have the changelog's metadata yet), and keep
           it in the table's local data.
        4. Wait until the broker acknowledged every state.
        5. Acknowledge the held events: their offsets may be committed now. A crash before this
           step replays them from the previous checkpoint, which still matches the old offsets.
        """
        async with self._lock:
            await self.ensure_topic(self.table.changelog_topic.get_topic_name())
            self.last = time.monotonic()
            contexts, events = dict(self.dirty), list(self.held)  # 1
            self.dirty.clear()
            self.held.clear()
            states = await self.run_cpu(  # 2
                lambda: {cid: encode_state(ctx) for cid, ctx in contexts.items()}
            )
            acks = []
            for cid, state in states.items():  # 3
                key = cid.encode()
                acks.append(self.table.send_changelog(self.partition_of.get(cid), key, state))
                self.table.data[key] = state
            if acks:
                await asyncio.gather(*acks)  # 4
            for event in events:  # 5
                event.ack()

    def unseen_live(self, live: dict[str, Any]) -> dict[str, Stored]:
        """Every ``ADOPT_EVERY_S``: checkpoints of calls still active but not in ``live`` (the
        processor's contexts), after a restart or a rebalance, so idle ones can end as
        abandoned; between those times, nothing."""
        if time.monotonic() - self._adopted_at < ADOPT_EVERY_S:
            return {}
        self._adopted_at = time.monotonic()
        out = {}
        for key, state in list(self.table.data.items()):
            cid = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            if cid not in live and state and not state_head(state)["ended"]:
                out[cid] = self.dirty.get(cid) or state
        return out
