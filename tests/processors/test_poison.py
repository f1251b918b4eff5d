"""The poison-record guard across worker restarts: a crash charges the batch, suspects run
alone, a record that crashed twice is dead-lettered, everything else is processed in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from callsense.processors.poison import CrashLedger, RecordCrash, run_guarded

POISON = 5  # the record that crashes whatever batch it is in


def _worker_run(path: Path, offsets: list[int], done: list[int], dead: list[tuple]) -> bool:
    """One worker life over the replayed ``offsets``: True if it got through, False if it
    crashed (the records it finished stay in ``done``: they were committed)."""
    ledger = CrashLedger(path)  # a new process reads the ledger from disk

    async def process(part: list[int]) -> None:
        if POISON in part:
            raise RecordCrash(f"boom at {POISON}")
        done.extend(part)

    async def poisoned(item: int, crashes: int) -> None:
        dead.append((item, crashes))

    try:
        asyncio.run(run_guarded(ledger, offsets, lambda o: ("a", 0, o), process, poisoned))
    except RecordCrash:
        return False
    return True


def test_a_record_that_crashes_twice_is_dead_lettered_and_the_rest_processed(tmp_path) -> None:
    path = tmp_path / "crash-ledger.json"
    done: list[int] = []
    dead: list[tuple] = []
    lives = []
    pending = list(range(10))
    for _ in range(5):
        ok = _worker_run(path, pending, done, dead)
        lives.append(ok)
        if ok:
            break
        pending = [o for o in pending if o not in done]  # replay from the committed offset
    assert lives == [False, False, True]  # whole batch crashes; alone it crashes; then skipped
    assert done == [0, 1, 2, 3, 4, 6, 7, 8, 9]  # in order, each once
    assert dead == [(POISON, 2)]
    # only the poison record stays charged: its next replay is dead-lettered, not processed
    assert CrashLedger(path).crashes == {("a", 0, POISON): 2}


def test_suspects_split_the_batch_where_they_stand(tmp_path) -> None:
    ledger = CrashLedger(tmp_path / "l.json")
    ledger.charge([("a", 0, 2), ("a", 0, 5), ("a", 0, 5)])
    parts = ledger.plan(list(range(7)), lambda o: ("a", 0, o))
    assert parts == [([0, 1], False), ([2], False), ([3, 4], False), ([5], True), ([6], False)]


def test_a_torn_ledger_file_does_not_stop_the_worker(tmp_path) -> None:
    path = tmp_path / "l.json"
    path.write_text('[["a", 0, 1, ')
    assert CrashLedger(path).crashes == {}


@pytest.mark.parametrize("exc", [ConnectionError("broker down"), asyncio.CancelledError()])
def test_failures_no_record_causes_charge_nothing(tmp_path, exc: BaseException) -> None:
    """A broker or database outage, or a shutdown, must never make good records poison."""
    ledger = CrashLedger(tmp_path / "l.json")

    async def process(part: list[int]) -> None:
        raise exc

    async def poisoned(item: int, crashes: int) -> None:
        raise AssertionError

    for _ in range(3):
        with pytest.raises(type(exc)):
            asyncio.run(run_guarded(ledger, [1, 2], lambda o: ("a", 0, o), process, poisoned))
    assert ledger.crashes == {}
