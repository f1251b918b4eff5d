"""Dead letters: one per bad input record within a worker process; reading a topic back."""

import asyncio
from pathlib import Path

from callsense.processors.events import DeadLetterFilter, deadletter_event, read_records

from callsense.broker import EmbeddedBroker


def _dl(offset: int | None, stage: str = "processor", partition: int = 0) -> dict:
    return deadletter_event(stage, "bad", b"x", call_id="c", topic="callsense.audio",
                            partition=partition, offset=offset)  # fmt: skip


def test_a_replayed_record_is_dead_lettered_once() -> None:
    f = DeadLetterFilter()
    assert len(f.fresh([_dl(5), _dl(6)])) == 2
    # a rebalance re-reads offsets 5..7: only 7 is new
    assert [d["offset"] for d in f.fresh([_dl(5), _dl(6), _dl(7)])] == [7]
    assert f.dropped == 2


def test_identity_is_stage_topic_partition_offset() -> None:
    f = DeadLetterFilter()
    first = [_dl(5), _dl(5, partition=1), _dl(5, stage="alerts")]
    assert len(f.fresh(first)) == 3
    assert len(f.fresh([_dl(None), _dl(None)])) == 2


def test_memory_is_bounded_oldest_forgotten_first() -> None:
    f = DeadLetterFilter(capacity=3)
    f.fresh([_dl(i) for i in range(5)])
    assert len(f.sent) == 3
    assert len(f.fresh([_dl(0)])) == 1  # forgotten: sent again
    assert f.fresh([_dl(4)]) == []  # still remembered


def test_read_records_reads_a_topic_from_the_beginning_and_stops_when_told(tmp_path: Path) -> None:
    from aiokafka import AIOKafkaProducer

    async def run(bootstrap: str) -> tuple[list[bytes], list[bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait("t", f"m{i}".encode(), key=b"k")
        finally:
            await producer.stop()
        idle = [r.value async for r in read_records(bootstrap, "t", poll_ms=200)]
        seen: list[bytes] = []
        records = read_records(bootstrap, "t", poll_ms=200, done=lambda: len(seen) >= 2)
        async for r in records:
            seen.append(r.value)
        return idle, seen

    with EmbeddedBroker(data_dir=tmp_path / "broker") as broker:
        idle, seen = asyncio.run(run(broker.bootstrap))
    assert idle == [f"m{i}".encode() for i in range(5)]  # all of it, then three empty polls
    assert 2 <= len(seen) <= 5 and seen == idle[: len(seen)]  # stopped once done() said so
