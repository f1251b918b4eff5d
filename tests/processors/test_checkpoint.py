"""Checkpointer: states are written to their calls' partitions and acknowledged by the broker
before the audio events they cover are released; the newest state wins over the table's."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from callsense.processors.callstate import CallContext, decode_state, state_head
from callsense.processors.checkpoint import Checkpointer
from callsense.processors.events import CallStart


class Table:
    """The part of a Faust table the checkpointer uses; the broker's acks are futures the test
    resolves."""

    changelog_topic = SimpleNamespace(get_topic_name=lambda: "call-state-changelog")

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.sent: list[tuple[int | None, bytes, bytes, asyncio.Future]] = []

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def send_changelog(self, partition: int | None, key: bytes, value: bytes) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.sent.append((partition, key, value, fut))
        return fut


class Event:
    def __init__(self, call_id: str, partition: int) -> None:
        self.message = SimpleNamespace(key=call_id.encode(), partition=partition)
        self.acked = False

    def ack(self) -> None:
        self.acked = True


def _ctx(call_id: str, next_seq: int) -> CallContext:
    ctx = CallContext(CallStart(call_id, 16000, 2, ts=1_700_000_000.0), [])
    ctx.next_seq = next_seq
    return ctx


async def _run_cpu(fn: Any, *args: Any) -> Any:
    return fn(*args)


async def _knows(_name: str) -> None:
    return None


def test_commit_releases_events_only_after_the_broker_acknowledged_every_state() -> None:
    async def run() -> None:
        table = Table()
        cp = Checkpointer(table, _run_cpu, _knows, interval_s=2.0)
        a, b = _ctx("a", 3), _ctx("b", 7)
        events = [Event("a", 5), Event("b", 2), Event("a", 5)]
        cp.record(events, {"a": a, "b": b})
        assert cp.stored(b"a") is a  # not checkpointed yet: the live context
        commit = asyncio.create_task(cp.commit())
        while len(table.sent) < 2:
            await asyncio.sleep(0)
        sent = {key: (partition, value) for partition, key, value, _ in table.sent}
        assert sent[b"a"][0] == 5 and sent[b"b"][0] == 2  # each call's own audio partition
        assert state_head(sent[b"b"][1]) == {"call_id": "b", "next_seq": 7, "ended": False}
        assert decode_state(sent[b"a"][1])["call"]["call_id"] == "a"
        assert not cp.held and not cp.dirty  # taken: later batches start the next checkpoint
        table.sent[0][3].set_result(None)
        await asyncio.sleep(0.01)
        assert not any(e.acked for e in events)  # one state still unacknowledged
        table.sent[1][3].set_result(None)
        await commit
        assert all(e.acked for e in events)
        assert cp.stored(b"a") == table.data[b"a"] and isinstance(cp.stored(b"a"), bytes)
        assert cp.stored(b"zzz") is None

    asyncio.run(run())


def test_a_failed_write_releases_nothing() -> None:
    async def run() -> None:
        table = Table()
        cp = Checkpointer(table, _run_cpu, _knows, interval_s=2.0)
        events = [Event("a", 1)]
        cp.record(events, {"a": _ctx("a", 1)})
        commit = asyncio.create_task(cp.commit())
        while not table.sent:
            await asyncio.sleep(0)
        table.sent[0][3].set_exception(RuntimeError("broker gone"))
        try:
            await commit
        except RuntimeError:
            pass
        else:
            raise AssertionError("the failed write was not reported")
        assert not events[0].acked  # the worker exits; the successor replays the event

    asyncio.run(run())


def test_unseen_live_calls_are_offered_for_adoption_every_few_seconds() -> None:
    async def run() -> None:
        from callsense.processors.callstate import encode_state

        table = Table()
        ended = _ctx("done", 9)
        ended.ended = True
        table.data = {b"gone": encode_state(_ctx("gone", 4)), b"done": encode_state(ended),
                      b"here": encode_state(_ctx("here", 2))}  # fmt: skip
        cp = Checkpointer(table, _run_cpu, _knows, interval_s=2.0)
        live = {"here": object()}
        assert set(cp.unseen_live(live)) == {"gone"}  # active, not held by this processor
        assert cp.unseen_live(live) == {}  # asked again at once: not yet

    asyncio.run(run())
