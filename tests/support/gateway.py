"""The telephony gateway on a free port in a thread of the test process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from callsense.ingest.gateway import serve

from callsense.broker import free_port
from callsense.settings import Settings


@contextmanager
def gateway(bootstrap: str, require_auth: bool = False, **overrides: Any) -> Iterator[str]:
    """The gateway on a free port in a thread of its own; yields its ws:// base URL.
    ``require_auth``: as when bound beyond loopback (endpoints without a credential refuse)."""
    settings = Settings(kafka_bootstrap=bootstrap, **overrides)
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    task: list[asyncio.Task] = []

    failed: list[BaseException] = []

    async def main() -> None:
        ready = asyncio.Event()
        task.append(asyncio.create_task(serve(settings, "127.0.0.1", port, ready, require_auth)))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([task[0], waiter], return_when=asyncio.FIRST_COMPLETED)
        if task[0].done() and task[0].exception():
            failed.append(task[0].exception())  # type: ignore[arg-type]
        started.set()
        await asyncio.gather(task[0], return_exceptions=True)

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert started.wait(60), "gateway did not start"
    assert not failed, f"gateway failed: {failed[0]!r}"
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(task[0].cancel)
        thread.join(30)
