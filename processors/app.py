"""The callsense stream topology, on one page.

::

    callsense ingest ──► callsense.audio  (call_start | chunk | call_end, key = call id)
                              │
                              ▼  agent process_audio  (micro-batches across calls)
                              │    table call-state: per-call pipelines, smoothers, next_seq
                              │    CallProcessor: decode → resample → denoise → VAD → split by
                              │    speaker → 3 s windows → BatchClassifier (executor) → verdicts
                              ├──► callsense.windows    (call_started | window | call_ended)
                              └──► callsense.deadletter (bad input + reason + stage)
                                         │
    callsense.windows ──► agent persist_windows ──► database (calls, speakers, emotion_windows,
                              │                      call_summaries; idempotent)
                              └──► callsense.summaries (summary, after it is stored)
    callsense.windows ──► agent raise_alerts  (table alert-state: AlertEngine state per call)
                              ├──► database (alerts; idempotent by alert id)
                              └──► callsense.alerts ──► agent deliver_webhooks ──► endpoints

Guarantees (at-least-once, Faust's default; never exactly_once):

* every topic is keyed by call id, so one call's events are ordered and owned by one worker;
* a call's state is checkpointed to the ``call-state`` table (changelog topic) at most every
  ``state_checkpoint_ms`` and at call end; the audio events it covers are acked (offsets
  committed) only after the checkpoint is acknowledged by the broker, and the windows they
  produced are acknowledged before that. After a crash the worker restores the table, replays
  the uncommitted audio events, skips chunks whose ``seq`` the state already holds, and
  regenerates the same windows for the rest; the database ignores the duplicates.
* CPU work (stages, model) runs in a one-thread executor, database writes in another.

Extending: another agent on ``callsense.windows`` (e.g. alerts) gets its own consumer offsets;
add it in :func:`create_app` next to ``persist_windows``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
from callsense.processors.admission import OffsetGuard, Verdict, faust_gap
from callsense.processors.events import (
    AUDIO_TOPIC,
    DEADLETTER_TOPIC,
    SUMMARIES_TOPIC,
    WINDOWS_TOPIC,
    deadletter_event,
    dumps,
)

if TYPE_CHECKING:
    from callsense.settings import Settings

log = logging.getLogger("callsense.worker")
T = TypeVar("T")
HEARTBEAT_S = 5.0

STATE_TABLE = "call-state"


def kafka_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip())


async def track_topic(producer: Any, name: str, tracked: set[str]) -> None:
    """Keep topic ``name`` in an aiokafka producer's metadata before anything is sent to it.

    aiokafka's metadata refreshes cover only the topics its producer tracks, and a send tracks
    its topic only when the topic is missing from the cached metadata. A topic that the
    start-up refresh (of all topics) already listed is therefore sent to untracked; the next
    refresh for another topic drops it, and its unsent batches wait for a leader that never
    comes (Faust's producer request timeout is 20 min). The worker then sat silent after its
    first dead letters; for a ``use_partitioner`` table, a second worker of a group failed
    table writes (TypeError in ``key_partition``). ``tracked`` remembers what is done.
    """
    if name not in tracked:
        await producer.client.add_topic(name)
        await producer.partitions_for(name)
        tracked.add(name)


def cap_fetch_wait(ms: int) -> None:
    """Make Faust's consumers fetch with ``fetch_max_wait_ms=ms`` (Faust passes a fixed 1500 to
    aiokafka and has no setting for it; aiokafka reads the attribute when the consumer starts)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread as Thread

    if not hasattr(Thread, "callsense_fetch_wait_ms"):
        create = Thread._create_worker_consumer

        def create_capped(self: Any, transport: Any) -> Any:
            consumer = create(self, transport)
            consumer._fetch_max_wait_ms = Thread.callsense_fetch_wait_ms
            return consumer

        Thread._create_worker_consumer = create_capped
    Thread.callsense_fetch_wait_ms = int(ms)


def create_app(settings: Settings, classifier: Any | None = None) -> Any:
    """Build the Faust app with every topic, table and agent of callsense."""
    import faust
    from callsense.processors.callstate import CallProcessor, Incoming, encode_state, state_head
    from callsense.processors.inference import BatchClassifier

    from callsense.storage.writer import Writer

    extra: dict[str, Any] = {
        "broker_session_timeout": settings.worker_session_timeout_s,
        "broker_heartbeat_interval": min(3.0, settings.worker_session_timeout_s / 5),
        "broker_rebalance_timeout": 2 * settings.worker_session_timeout_s,
    }
    if settings.broker_kind == "tansu":  # Tansu: tables lose data on recovery otherwise
        extra["producer_max_batch_size"] = 1
    cap_fetch_wait(settings.fetch_wait_ms)
    app = faust.App(
        settings.app_id,
        broker=kafka_url(settings.kafka_bootstrap),
        store="memory://",
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        stream_wait_empty=False,
        datadir=str(settings.data_dir / "faust"),
        key_serializer="raw",
        value_serializer="raw",
        **extra,
    )
    n = settings.topic_partitions

    # ---- topics (created beforehand by ensure_topics with explicit partitions) -------------
    audio_topic = app.topic(AUDIO_TOPIC, partitions=n, internal=False)
    windows_topic = app.topic(WINDOWS_TOPIC, partitions=n, internal=False)
    summaries_topic = app.topic(SUMMARIES_TOPIC, partitions=n, internal=False)
    deadletter_topic = app.topic(DEADLETTER_TOPIC, partitions=n, internal=False)

    # ---- per-call state: key = call id bytes (partitioned exactly like the audio topic) ----
    call_state = app.Table(
        STATE_TABLE,
        default=None,
        partitions=n,
        key_type=bytes,  # raw call id bytes, hashed like the audio topic's keys
        value_type=bytes,  # callstate.encode_state, done in the inference executor
        use_partitioner=True,
        extra_topic_configs={"retention.ms": str(settings.state_retention_ms)},
        help="Per-call pipeline state (callstate.encode_state).",
    )

    tracked: set[str] = set()

    async def producer_knows(name: str) -> None:
        await track_topic(app.producer._ensure_producer(), name, tracked)

    # Faust's recovery (faust-streaming 0.15.3) resumes the stream partitions while the
    # consumer is already fetching, seeks them to their committed offsets, and only then
    # resumes flow control, which clears the streams' queues. Records fetched before the seek
    # and still queued are dropped there; the re-fetch after the seek brings them back only if
    # the read offsets were not moved past them meanwhile (a race): a restarted worker then
    # lost a span of a call, or all of its rest (docs/streaming.md). Seeking once more to the
    # committed offsets after the queues were cleared re-reads them; replays are skipped by seq.
    # Whatever skips remain, the audio agent and the windows writer admit each partition's
    # records in offset order only (admission.OffsetGuard): a record past a hole is held back
    # and the partition sought back (the alert agent, on the same windows partitions, then gets
    # the skipped windows late; it ignores replays).
    guard = OffsetGuard()
    rebalance_start, rebalance_end = app.on_rebalance_start, app.on_rebalance_end

    def on_rebalance_start() -> None:
        guard.forget()  # the next assignment starts from the committed offsets
        rebalance_start()

    def on_rebalance_end() -> None:
        rebalance_end()
        asyncio.ensure_future(_seek_committed())

    async def _seek_committed() -> None:
        try:
            committed = await app.consumer.seek_to_committed()
            streams = (audio_topic.get_topic_name(), windows_topic.get_topic_name())
            # nothing committed yet (a worker killed before its first commit): start at the
            # log's beginning explicitly; left alone, the position was the log end and the
            # records in between were never processed
            fresh = [tp for tp, o in committed.items() if tp.topic in streams and not o]
            start = dict(await app.consumer.earliest_offsets(*fresh)) if fresh else {}
            for tp, offset in committed.items():
                if tp in start:
                    offset = max(int(start[tp] or 0), 0)
                elif offset is None or offset <= 0:
                    continue  # a table changelog: Faust's recovery owns its position
                await app.consumer.seek(tp, offset)  # sets Faust's read offset too
                if tp.topic in streams:
                    guard.start(tp, offset)
            log.info("recovery done: partitions sought to their committed offsets again")
        except Exception as exc:  # noqa: BLE001 - e.g. a new rebalance began: it seeks again
            log.warning("seek to committed offsets after recovery failed: %r", exc)

    app.on_rebalance_start = on_rebalance_start
    app.on_rebalance_end = on_rebalance_end

    classifier = classifier or BatchClassifier(settings)
    processor = CallProcessor(settings, classifier)
    writer = Writer(settings.effective_database_url)
    db_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db")
    app.callsense = {"classifier": classifier, "processor": processor, "writer": writer}

    held: list[Any] = []  # audio events processed but not yet covered by a checkpoint
    dirty: dict[str, Any] = {}  # call id -> its live context, changed since the last checkpoint
    partition_of: dict[str, int] = {}  # call id -> its partition (= its changelog partition)
    ckpt_lock = asyncio.Lock()
    batch_lock = asyncio.Lock()  # one state-machine step at a time (agent batches, timer)
    last_ckpt = [time.monotonic()]

    async def send_all(topic: Any, events: list[dict[str, Any]]) -> None:
        """Send in order and wait until the broker acknowledged every message."""
        if events:
            await producer_knows(topic.get_topic_name())
        futs = []
        for ev in events:
            key = (ev.get("call_id") or "").encode()
            futs.append(await topic.send(key=key or None, value=dumps(ev), force=True))
        if futs:
            await asyncio.gather(*futs)

    async def checkpoint() -> None:
        """Write dirty call states, wait for the broker's acks, then release held offsets.
        The caller holds ``batch_lock``: the states encoded are exactly those ``held`` covers."""
        async with ckpt_lock:
            await producer_knows(call_state.changelog_topic.get_topic_name())
            last_ckpt[0] = time.monotonic()
            contexts, events = dict(dirty), list(held)
            dirty.clear()
            held.clear()
            states = await classifier.run(
                lambda: {cid: encode_state(ctx) for cid, ctx in contexts.items()}
            )
            futs = []
            for cid, state in states.items():
                key = cid.encode()
                # explicit partition: the producer may not have the changelog's metadata yet
                futs.append(call_state.send_changelog(partition_of.get(cid), key, state))
                call_state.data[key] = state
            if futs:
                await asyncio.gather(*futs)
            for event in events:
                event.ack()

    # ---- agent 1: audio → windows -------------------------------------------------------
    @app.agent(audio_topic, name="process_audio")
    async def process_audio(stream: Any) -> None:
        within = max(settings.inference_max_wait_ms, 1) / 1000.0
        async for events in stream.take_events(settings.stream_batch_events, within=within):
            for e in events:  # hold the offsets until the state covering them is durable
                e.message.incref()
            admitted = await _in_offset_order(list(events))
            try:
                if admitted:
                    await _process_batch(admitted)
            except Exception:  # never let the batch be acked: crash, restart, replay
                _fatal("audio batch failed")

    async def _in_offset_order(events: list[Any]) -> list[Any]:
        """The events the guard admits; for a hole, seek its partition back to it. Held-back
        events are neither processed nor acknowledged: the seek fetches them again."""
        admitted, seeks = [], {}
        for e in events:
            tp, offset = e.message.tp, e.message.offset
            verdict, hole = guard.admit(tp, offset)
            if verdict is Verdict.AHEAD:
                faust_gap(app.consumer, tp, guard.expected[tp], offset + 1, absent=False)
                if hole is not None:
                    seeks.setdefault(tp, (hole, offset))
                continue
            if verdict is Verdict.ABSENT:
                faust_gap(app.consumer, tp, hole, offset, absent=True)
            admitted.append(e)
        for tp, (seek_to, seen) in seeks.items():
            log.warning(
                "partition %s: got offset %d while expecting %d (records skipped by the "
                "consumer); seeking back to %d", tp, seen, seek_to, seek_to,
            )  # fmt: skip
            await _seek(tp, seek_to)
        return admitted

    async def _seek(tp: Any, offset: int) -> None:
        try:
            await app.consumer.seek(tp, offset)
        except Exception as exc:  # noqa: BLE001 - the guard asks again after its retry time
            log.warning("seek of %s to %d failed: %r", tp, offset, exc)

    async def _process_batch(events: list[Any]) -> None:
        async with batch_lock:
            await _step(events)

    last_adopt = [0.0]

    def _unseen_live_states() -> dict[str, Any]:
        """Every few seconds: stored states of this worker's calls that are still active but
        not in the processor (a restart, a rebalance), so idle ones can end as abandoned."""
        if time.monotonic() - last_adopt[0] < 5.0:
            return {}
        last_adopt[0] = time.monotonic()
        out = {}
        for key, state in list(call_state.data.items()):
            cid = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            if cid not in processor.live and state and not state_head(state)["ended"]:
                out[cid] = dirty.get(cid) or state
        return out

    async def _step(events: list[Any], adopt: dict[str, Any] | None = None) -> None:
        batch = [
            Incoming(
                e.message.value, e.message.key, e.message.topic, e.message.partition,
                e.message.offset,
            )
            for e in events
        ]  # fmt: skip
        states: dict[str, Any] = dict(adopt or {})
        for m in batch:
            if m.key:
                cid = m.key.decode("utf-8", "replace")
                states[cid] = dirty.get(cid) or call_state.get(m.key)
                partition_of[cid] = int(m.partition or 0)
        started = time.time()
        res = await classifier.run(processor.process, batch, states)
        timing = {"batch_at": round(started, 3), "emitted_at": round(time.time(), 3)}
        for out in res.outputs:  # when the worker took the batch and had its windows
            if out["kind"] == "window":
                out["timing"] = timing
        await send_all(windows_topic, res.outputs)
        await send_all(deadletter_topic, res.deadletters)
        held.extend(events)
        dirty.update(res.states)
        ended = any(o.get("kind") == "call_ended" for o in res.outputs)
        if ended or time.monotonic() - last_ckpt[0] >= settings.state_checkpoint_ms / 1e3:
            await checkpoint()
        if res.stats:
            log.info("audio batch: %s offsets %s", dict(res.stats), _offsets(batch))

    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    worker_started = datetime.now(UTC)

    def _beat(live_calls: int, audio_tps: list[Any], lag: int | None) -> None:
        from callsense.storage.health import beat

        with writer.sessions.begin() as s:
            beat(s, worker_id, worker_started, live_calls, len(audio_tps), lag)

    def _forget_gone_workers() -> None:
        from callsense.storage.health import forget_stale

        with writer.sessions.begin() as s:
            forget_stale(s)

    @app.task
    async def first_heartbeat() -> None:  # at start: a short-lived worker is seen too
        try:  # workers gone for a day leave no rows behind
            await asyncio.get_running_loop().run_in_executor(db_executor, _forget_gone_workers)
        except Exception as exc:  # the database may be down: the next start tries again
            log.warning("old heartbeats not removed: %s", exc)
        await _heartbeat()

    @app.timer(HEARTBEAT_S)
    async def heartbeat() -> None:
        await _heartbeat()

    async def _heartbeat() -> None:
        """Sign of life and audio lag in the database (the dashboard's pipeline banner)."""
        try:
            audio_tps = [tp for tp in app.consumer.assignment() if tp.topic == AUDIO_TOPIC]
        except Exception:  # the consumer is not up yet
            audio_tps = []
        lag: int | None = 0
        for tp in audio_tps:
            try:
                high = app.consumer.highwater(tp)
            except Exception:  # no fetch yet on this partition
                high = None
            if high is None or lag is None:
                lag = None
                continue
            lag += max(0, int(high) - int(guard.expected.get(tp, high)))
        live = sum(not c.ended for c in processor.live.values())
        try:
            await asyncio.get_running_loop().run_in_executor(
                db_executor, _beat, live, audio_tps, lag
            )
        except Exception as exc:  # the database may be down: the banner will say so
            log.warning("heartbeat not written: %s", exc)

    @app.timer(max(settings.state_checkpoint_ms, 100) / 1000.0)
    async def checkpoint_idle() -> None:
        for tp, offset in guard.overdue():  # a hole whose records have not come back yet
            log.warning("partition %s: offset %d still missing; seeking back again", tp, offset)
            await _seek(tp, offset)
        try:  # an empty step ends calls whose call_end waited too long, or idle calls
            async with batch_lock:
                await _step([], _unseen_live_states())
        except Exception:
            _fatal("idle step failed")
        due = last_ckpt[0] + settings.state_checkpoint_ms / 1e3
        if (dirty or held) and time.monotonic() >= due:
            async with batch_lock:
                await checkpoint()

    # ---- agent 2: windows → database → summaries ----------------------------------------
    @app.agent(windows_topic, name="persist_windows")
    async def persist_windows(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        within = settings.persist_max_wait_ms / 1000.0
        async for events in stream.take_events(500, within=within):
            for e in events:  # acked below, only once the batch is stored
                e.message.incref()
            admitted = await _in_offset_order(list(events))  # as for audio (admission.py)
            try:
                if admitted:
                    await _persist_batch(loop, admitted)
            except Exception:
                _fatal("persisting windows failed")
            for e in admitted:
                e.ack()

    async def _persist_batch(loop: asyncio.AbstractEventLoop, events: list[Any]) -> None:
        good: list[dict[str, Any]] = []
        bad: list[dict[str, Any]] = []
        for e in events:
            try:
                ev = json.loads(e.message.value)
                if not isinstance(ev, dict) or not ev.get("call_id"):
                    raise ValueError("not an event object with a call_id")
                good.append(ev)
            except ValueError as exc:
                bad.append(
                    deadletter_event(
                        "persist",
                        f"unreadable windows event: {exc}",
                        e.message.value,
                        topic=e.message.topic,
                        partition=e.message.partition,
                        offset=e.message.offset,
                    )
                )
        summaries = await _write_with_retry(loop, db_executor, writer, good, bad)
        await send_all(summaries_topic, summaries)
        await send_all(deadletter_topic, bad)

    # ---- agent 3: windows → alert rules → database + callsense.alerts --------------------
    from callsense.processors.alerts import ALERTS_TOPIC, AlertEngine, AlertEvent, parse_rules
    from callsense.processors.webhooks import (
        Message,
        WebhookDispatcher,
        deliverer_from_settings,
    )

    from callsense.storage.alerts import AlertStore

    alerts_topic = app.topic(ALERTS_TOPIC, partitions=n, internal=True)
    alert_state = app.Table(
        "alert-state", default=None, partitions=n, key_type=bytes, use_partitioner=True,
        help="Per-call AlertEngine state (JSON bytes).",
    )  # fmt: skip
    alert_engine = AlertEngine(parse_rules(settings.alert_rules))
    alert_store = AlertStore(settings.effective_database_url)
    deliverer = deliverer_from_settings(settings, alert_store.session_factory)
    alert_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts")

    @app.agent(windows_topic, name="raise_alerts")
    async def raise_alerts(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for e in stream.events():
            try:
                ev = json.loads(e.message.value)
                raw = alert_state.get(e.message.key)
                state = json.loads(raw) if raw else None
                if ev.get("kind") == "window":
                    state, out = alert_engine.process(state, ev)
                elif ev.get("kind") == "call_ended":
                    state, out = alert_engine.end_call(state, ev["call_id"])
                else:
                    continue
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                reason = f"alert engine rejected the event: {exc}"
                m = e.message
                dl = deadletter_event("alerts", reason, m.value, topic=m.topic,
                                      partition=m.partition, offset=m.offset)  # fmt: skip
                await send_all(deadletter_topic, [dl])
                continue
            if out:  # database first, then the topic: a replay rewrites the same alert ids
                await _retry_db(lambda out=out: loop.run_in_executor(
                    alert_executor, alert_store.apply, out))  # fmt: skip
                await send_all(alerts_topic, [{**a.to_json(), "call_id": a.alert["call_id"]}
                                              for a in out])  # fmt: skip
            await producer_knows(alert_state.changelog_topic.get_topic_name())
            alert_state[e.message.key] = json.dumps(state).encode()

    # ---- agent 4: callsense.alerts → signed webhooks (retries + delivery log) ------------
    if deliverer is not None:

        dispatcher = WebhookDispatcher(deliverer)

        @app.agent(alerts_topic, name="deliver_webhooks")
        async def deliver_webhooks(stream: Any) -> None:
            async for event in stream.events():
                value = event.value
                try:
                    msg = Message.from_alert_event(AlertEvent.from_json(json.loads(value)))
                except (ValueError, KeyError, TypeError) as exc:
                    dl = deadletter_event("webhooks", f"unreadable alert event: {exc}", value)
                    await send_all(deadletter_topic, [dl])
                    continue
                # the offset is committed once every endpoint is done with the message
                event.message.incref()
                await dispatcher.submit(msg, on_done=event.ack)

    return app


async def _retry_db(call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, again and again while the database is unreachable (capped doubling
    delay); the one place that decides what "database unavailable" means."""
    from sqlalchemy.exc import OperationalError

    delay = 0.5
    while True:
        try:
            return await call()
        except OperationalError as exc:
            log.warning("database unavailable (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


async def _write_with_retry(
    loop: asyncio.AbstractEventLoop,
    executor: ThreadPoolExecutor,
    writer: Any,
    events: list[dict[str, Any]],
    bad: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Write a batch; retry while the database is unreachable; isolate events that fail alone."""
    from sqlalchemy.exc import OperationalError

    async def attempt() -> list[dict[str, Any]]:
        try:
            res = await loop.run_in_executor(executor, writer.write, events)
            return res.summaries
        except OperationalError:
            raise
        except Exception:  # a bad event: write one by one, dead-letter the ones that fail
            log.exception("batch write failed; retrying event by event")
        summaries: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for ev in events:
            try:
                res = await loop.run_in_executor(executor, writer.write, [ev])
                summaries.extend(res.summaries)
            except OperationalError:
                raise  # the database went away: the whole batch is written again
            except Exception as exc:  # noqa: BLE001 - reported in the dead letter
                failed.append(
                    deadletter_event(
                        "persist",
                        f"database write failed: {type(exc).__name__}: {exc}",
                        json.dumps(ev, default=str),
                        call_id=ev.get("call_id"),
                    )
                )
        bad.extend(failed)
        return summaries

    return await _retry_db(attempt)


def _offsets(batch: list[Any]) -> dict[int, str]:
    """Per partition, the offsets of a batch as ``first..last`` runs (a break in a run means the
    consumer skipped offsets: the call's reorder buffer then waits for them)."""
    runs: dict[int, list[list[int]]] = {}
    for m in batch:
        if m.offset is None:
            continue
        r = runs.setdefault(int(m.partition or 0), [])
        if r and m.offset == r[-1][1] + 1:
            r[-1][1] = m.offset
        else:
            r.append([m.offset, m.offset])
    return {p: ",".join(f"{a}..{b}" for a, b in r) for p, r in runs.items()}


def _fatal(what: str) -> None:
    """Log and exit at once: the unacked events are replayed by the restarted worker."""
    log.exception("%s; exiting so that nothing unprocessed is committed", what)
    logging.shutdown()
    os._exit(70)


@click.command("worker")
@click.option("--loglevel", default="info", show_default=True, help="Worker log level.")
def worker_cmd(loglevel: str) -> None:
    """Run the Faust stream worker (at-least-once; topics are created if missing)."""
    import faust
    from callsense.processors.events import ensure_topics

    from callsense.settings import get_settings
    from callsense.storage.db import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    try:
        ensure_topics(settings.kafka_bootstrap, settings)
    except Exception as exc:  # noqa: BLE001 - shown as a CLI error
        raise click.ClickException(
            f"cannot reach the broker at {settings.kafka_bootstrap}: {exc}"
        ) from exc
    from callsense.processors.callstate import CheckpointBudgetError

    try:
        app = create_app(settings)
    except CheckpointBudgetError as exc:  # refuse a configuration whose checkpoints cannot fit
        raise click.ClickException(str(exc)) from exc
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
