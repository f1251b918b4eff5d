"""Poison-record guard: a record that crashed the worker twice is dead-lettered and skipped.

A batch whose processing raises past the per-record checks exits the worker (nothing of it is
committed); the successor replays the batch from the last checkpoint and, were the cause one
record, would crash on it for ever. The :class:`CrashLedger` breaks that loop:

1. When processing a batch fails (:class:`RecordCrash`: the state machine or the model raised;
   not a broker or database failure, which no record causes), each of its records is charged
   one crash (a small JSON file in the data
   dir, replaced atomically) before the worker exits.
2. A record charged once is a suspect: it is processed alone, in a batch of its own, so the
   next crash is charged to the record that caused it and not to its neighbours.
3. A record charged ``limit`` times (2) is poison: dead-lettered with the reason, not processed.
4. A record that went through without a crash is discharged; a poison record stays charged.

Records keep their offset order: a suspect splits the batch where it stands. Only crashes that
reach Python are charged (an out-of-memory kill is not); a worker whose data dir is wiped at
restart starts with an empty ledger.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

R = TypeVar("R")
Key = tuple[str, int, int]  # topic, partition, offset

#: crashes after which a record is dead-lettered
POISON_CRASHES = 2


class RecordCrash(Exception):
    """Processing these records raised (the cause is chained)."""


class CrashLedger:
    """Crashes charged to records, persisted at ``path``."""

    def __init__(self, path: Path, limit: int = POISON_CRASHES) -> None:
        self.path = path
        self.limit = limit
        self.crashes: dict[Key, int] = {}
        if path.exists():
            try:
                rows = json.loads(path.read_text())
                self.crashes = {(t, int(p), int(o)): int(n) for t, p, o, n in rows}
            except (ValueError, TypeError):  # a torn file: start again, never refuse to start
                self.crashes = {}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([[*k, n] for k, n in self.crashes.items()]))
        os.replace(tmp, self.path)

    def charge(self, keys: Sequence[Key]) -> None:
        for k in keys:
            self.crashes[k] = self.crashes.get(k, 0) + 1
        if keys:
            self._save()

    def discharge(self, keys: Sequence[Key]) -> None:
        if any(self.crashes.pop(k, None) is not None for k in list(keys)):
            self._save()

    def plan(self, items: Sequence[R], key: Callable[[R], Key]) -> list[tuple[list[R], bool]]:
        """``items`` in order as (part, poison) pairs: runs of unsuspected items, each suspect
        alone, each poison item alone with ``poison`` True."""
        parts: list[tuple[list[R], bool]] = []
        run: list[R] = []
        for item in items:
            n = self.crashes.get(key(item), 0)
            if n == 0:
                run.append(item)
                continue
            if run:
                parts.append((run, False))
                run = []
            parts.append(([item], n >= self.limit))
        if run:
            parts.append((run, False))
        return parts


async def run_guarded(
    ledger: CrashLedger,
    items: Sequence[R],
    key: Callable[[R], Key],
    process: Callable[[list[R]], Awaitable[None]],
    poisoned: Callable[[R, int], Awaitable[None]],
) -> None:
    """Process ``items`` part by part (:meth:`CrashLedger.plan`); poison items go to
    ``poisoned(item, crashes)`` instead. If a part raises, its items are charged and the
    exception propagates (the caller exits the worker). Only :class:`RecordCrash` charges."""
    for part, poison in ledger.plan(items, key):
        keys = [key(i) for i in part]
        if poison:  # stays charged: a replay of it is dead-lettered again, never processed
            await poisoned(part[0], ledger.crashes[keys[0]])
            continue
        try:
            await process(part)
        except RecordCrash:
            ledger.charge(keys)
            raise
        ledger.discharge(keys)
