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

:func:`create_app` declares every topic and table, then composes one collaborator per concern
(the call state machine, :class:`~callsense.processors.admission.Admission` for offset order,
:class:`~callsense.processors.checkpoint.Checkpointer` for states and offsets, the alert
engine, the webhook dispatcher, the heartbeat), so that each agent is a few lines.

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
from callsense.processors.events import (
    ALERTS_TOPIC,
    AUDIO_TOPIC,
    DEADLETTER_TOPIC,
    SUMMARIES_TOPIC,
    WINDOWS_TOPIC,
    DeadLetterFilter,
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


class Sender:
    """Sends events to topics through the app's producer (each topic tracked first, see
    :func:`track_topic`) and waits for the broker's acknowledgements."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.tracked: set[str] = set()
        self.deadletters = DeadLetterFilter()

    async def knows(self, name: str) -> None:
        await track_topic(self.app.producer._ensure_producer(), name, self.tracked)

    async def send_deadletters(self, topic: Any, letters: list[dict[str, Any]]) -> None:
        """Send the dead letters not already sent for the same record (a rebalance replay)."""
        await self.send_all(topic, self.deadletters.fresh(letters))

    async def send_all(self, topic: Any, events: list[dict[str, Any]]) -> None:
        """Send in order (keyed by call id) and wait until the broker acknowledged every one."""
        if not events:
            return
        await self.knows(topic.get_topic_name())
        futs = []
        for ev in events:
            key = (ev.get("call_id") or "").encode()
            futs.append(await topic.send(key=key or None, value=dumps(ev), force=True))
        await asyncio.gather(*futs)


def faust_app(settings: Settings) -> Any:
    """The Faust app: at-least-once, raw keys and values, consumer settings for callsense."""
    import faust

    extra: dict[str, Any] = {
        "broker_session_timeout": settings.worker_session_timeout_s,
        "broker_heartbeat_interval": min(3.0, settings.worker_session_timeout_s / 5),
        "broker_rebalance_timeout": 2 * settings.worker_session_timeout_s,
    }
    if settings.broker_kind == "tansu":  # Tansu: tables lose data on recovery otherwise
        extra["producer_max_batch_size"] = 1
    if instance := settings.effective_worker_instance_id:  # static group membership
        extra["consumer_group_instance_id"] = instance
    cap_fetch_wait(settings.fetch_wait_ms)
    return faust.App(
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


def create_app(settings: Settings, classifier: Any | None = None) -> Any:
    """Build the Faust app with every topic, table and agent of callsense."""
    from callsense.processors.admission import Admission
    from callsense.processors.alerts import AlertEngine, RuleSource
    from callsense.processors.callstate import CallProcessor, Incoming
    from callsense.processors.checkpoint import Checkpointer
    from callsense.processors.inference import BatchClassifier
    from callsense.processors.poison import CrashLedger, RecordCrash, run_guarded
    from callsense.processors.webhooks import deliverer_from_settings

    from callsense.storage.alerts import AlertStore
    from callsense.storage.writer import Writer

    app = faust_app(settings)
    n = settings.topic_partitions

    # ---- topics and tables (the topics are created beforehand by ensure_topics) -----------
    audio_topic = app.topic(AUDIO_TOPIC, partitions=n, internal=False)
    windows_topic = app.topic(WINDOWS_TOPIC, partitions=n, internal=False)
    summaries_topic = app.topic(SUMMARIES_TOPIC, partitions=n, internal=False)
    deadletter_topic = app.topic(DEADLETTER_TOPIC, partitions=n, internal=False)
    alerts_topic = app.topic(ALERTS_TOPIC, partitions=n, internal=False)
    # per-call state, key = call id bytes: partitioned exactly like the audio topic
    call_state = app.Table(
        STATE_TABLE, default=None, partitions=n, key_type=bytes, value_type=bytes,
        use_partitioner=True,
        extra_topic_configs={"retention.ms": str(settings.state_retention_ms)},
        help="Per-call pipeline state (callstate.encode_state).",
    )  # fmt: skip
    alert_state = app.Table(
        "alert-state", default=None, partitions=n, key_type=bytes, use_partitioner=True,
        help="Per-call AlertEngine state (JSON bytes).",
    )  # fmt: skip

    # ---- collaborators, one per concern -----------------------------------------------------
    classifier = classifier or BatchClassifier(settings)  # owns the model and the CPU thread
    processor = CallProcessor(settings, classifier)  # the per-call state machine
    sender = Sender(app)
    admission = Admission(app, (AUDIO_TOPIC, WINDOWS_TOPIC))  # offset order, seeks, rebalances
    admission.install()
    checkpoints = Checkpointer(
        call_state, classifier.run, sender.knows, settings.state_checkpoint_ms / 1e3
    )
    writer = Writer(settings.effective_database_url)
    db_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db")
    alert_store = AlertStore(settings.effective_database_url)
    rule_source = RuleSource(settings.alert_rules, alert_store.session_factory)
    alert_engine = AlertEngine(rule_source.rules)
    alert_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts")
    deliverer = deliverer_from_settings(settings, alert_store.session_factory)
    health = Heartbeat(app, writer, db_executor, processor, admission)
    crashes = CrashLedger(settings.data_dir / "crash-ledger.json")  # poison-record guard
    batch_lock = asyncio.Lock()  # one state-machine step at a time (agent batches, timer)
    app.callsense = {"classifier": classifier, "processor": processor, "writer": writer}

    async def step(events: list[Any], adopt: dict[str, Any] | None = None) -> None:
        """One micro-batch through the state machine (caller holds ``batch_lock``)."""
        batch = [Incoming(e.message.value, e.message.key, e.message.topic,
                          e.message.partition, e.message.offset) for e in events]  # fmt: skip
        states = dict(adopt or {})
        states.update({m.key.decode("utf-8", "replace"): checkpoints.stored(m.key)
                       for m in batch if m.key})  # fmt: skip
        started = time.time()
        try:
            res = await classifier.run(processor.process, batch, states)
        except Exception as exc:  # charged to these records (processors/poison.py)
            raise RecordCrash(f"processing offsets {_offsets(batch)} raised {exc!r}") from exc
        timing = {"batch_at": round(started, 3), "emitted_at": round(time.time(), 3)}
        for out in res.outputs:  # when the worker took the batch and had its windows
            if out["kind"] == "window":
                out["timing"] = timing
        await sender.send_all(windows_topic, res.outputs)
        await sender.send_deadletters(deadletter_topic, res.deadletters)
        checkpoints.record(events, res.states)
        if checkpoints.due() or any(o["kind"] == "call_ended" for o in res.outputs):
            await checkpoints.commit()
        if res.stats:
            log.info("audio batch: %s offsets %s", dict(res.stats), _offsets(batch))

    async def poisoned(e: Any, n: int) -> None:
        """A record that crashed the worker ``n`` times: dead-lettered, acked with the rest."""
        key = e.message.key or b""
        dl = _deadletter_for(e.message, "processor", f"processing this record crashed the "
                             f"worker {n} times; skipped", key.decode("utf-8", "replace") or None)
        await sender.send_deadletters(deadletter_topic, [dl])
        checkpoints.record([e], {})

    # ---- agent 1: audio → windows (and dead letters) ----------------------------------------
    @app.agent(audio_topic, name="process_audio")
    async def process_audio(stream: Any) -> None:
        within = max(settings.inference_max_wait_ms, 1) / 1000.0
        async for events in stream.take_events(settings.stream_batch_events, within=within):
            for e in events:  # held until a checkpoint covers them (Checkpointer.commit)
                e.message.incref()
            admitted = await admission.admit(list(events))
            try:
                if admitted:
                    async with batch_lock:
                        await run_guarded(crashes, admitted, _record_key, step, poisoned)
            except Exception:  # never let the batch be acked: crash, restart, replay
                _fatal("audio batch failed")

    @app.timer(max(settings.state_checkpoint_ms, 100) / 1000.0)
    async def checkpoint_idle() -> None:
        """Repeat overdue seeks; end calls that went quiet; checkpoint when audio stopped."""
        await admission.retry_overdue()
        try:  # an empty step ends calls whose call_end waited too long, or idle calls
            async with batch_lock:
                await step([], checkpoints.unseen_live(processor.live))
                if checkpoints.pending and checkpoints.due():
                    await checkpoints.commit()
        except Exception:
            _fatal("idle step failed")

    # ---- agent 2: windows → database → summaries --------------------------------------------
    @app.agent(windows_topic, name="persist_windows")
    async def persist_windows(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        within = settings.persist_max_wait_ms / 1000.0
        async for events in stream.take_events(500, within=within):
            for e in events:  # acked below, only once the batch is stored
                e.message.incref()
            admitted = await admission.admit(list(events))
            try:
                if admitted:
                    summaries, bad = await _persist(loop, db_executor, writer, admitted)
                    await sender.send_all(summaries_topic, summaries)
                    await sender.send_deadletters(deadletter_topic, bad)
            except Exception:
                _fatal("persisting windows failed")
            for e in admitted:
                e.ack()

    # ---- agent 3: windows → alert rules → database + callsense.alerts ----------------------
    @app.agent(windows_topic, name="raise_alerts")
    async def raise_alerts(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for e in stream.events():
            m = e.message
            if rule_source.due() and await loop.run_in_executor(alert_executor,
                                                                 rule_source.refresh):
                alert_engine.set_rules(rule_source.rules)  # edited in the dashboard
            try:
                handled = alert_engine.handle(alert_state.get(m.key), m.value)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                dl = _deadletter_for(m, "alerts", f"alert engine rejected the event: {exc}")
                await sender.send_deadletters(deadletter_topic, [dl])
                continue
            if handled is None:
                continue
            state, out = handled
            if out:  # database first, then the topic: a replay rewrites the same alert ids
                await _retry_db(lambda out=out: loop.run_in_executor(
                    alert_executor, alert_store.apply, out))  # fmt: skip
                await sender.send_all(alerts_topic, [{**a.to_json(), "call_id": a.alert["call_id"]}
                                                     for a in out])  # fmt: skip
            await sender.knows(alert_state.changelog_topic.get_topic_name())
            alert_state[m.key] = state

    # ---- agent 4: callsense.alerts → signed webhooks (retries + delivery log) ---------------
    if deliverer is not None:
        from callsense.processors.alerts import AlertEvent
        from callsense.processors.webhooks import Message, WebhookDispatcher

        dispatcher = WebhookDispatcher(deliverer)

        @app.agent(alerts_topic, name="deliver_webhooks")
        async def deliver_webhooks(stream: Any) -> None:
            async for event in stream.events():
                try:
                    msg = Message.from_alert_event(AlertEvent.from_json(json.loads(event.value)))
                except (ValueError, KeyError, TypeError) as exc:
                    dl = _deadletter_for(event.message, "webhooks",
                                         f"unreadable alert event: {exc}")  # fmt: skip
                    await sender.send_deadletters(deadletter_topic, [dl])
                    continue
                event.message.incref()  # committed once every endpoint is done with it
                await dispatcher.submit(msg, on_done=event.ack)

    # ---- worker health in the database (the dashboard's pipeline banner) --------------------
    @app.task
    async def first_heartbeat() -> None:  # at start: a short-lived worker is seen too
        await health.forget_gone_workers()
        await health.beat()

    @app.timer(HEARTBEAT_S)
    async def heartbeat() -> None:
        await health.beat()

    return app


class Heartbeat:
    """Sign of life and audio lag of this worker in the database."""

    def __init__(
        self, app: Any, writer: Any, executor: ThreadPoolExecutor, processor: Any, admission: Any
    ) -> None:
        self.app, self.writer, self.executor = app, writer, executor
        self.processor, self.admission = processor, admission
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.started = datetime.now(UTC)

    async def _in_db(self, write: Callable[[Any], None], failed: str) -> None:
        """``write(session)`` in one transaction on the database thread; a failure is logged
        (the database may be down: the next heartbeat or start tries again)."""

        def run() -> None:
            with self.writer.sessions.begin() as s:
                write(s)

        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, run)
        except Exception as exc:
            log.warning("%s: %s", failed, exc)

    async def forget_gone_workers(self) -> None:
        """Workers gone for a day leave no rows behind."""
        from callsense.storage.health import forget_stale

        await self._in_db(forget_stale, "old heartbeats not removed")

    async def beat(self) -> None:
        from callsense.storage.health import beat

        try:
            audio_tps = [tp for tp in self.app.consumer.assignment() if tp.topic == AUDIO_TOPIC]
        except Exception:  # the consumer is not up yet
            audio_tps = []
        lag: int | None = 0
        expected = self.admission.guard.expected
        for tp in audio_tps:
            try:
                high = self.app.consumer.highwater(tp)
            except Exception:  # no fetch yet on this partition
                high = None
            if high is None or lag is None:
                lag = None
                continue
            lag += max(0, int(high) - int(expected.get(tp, high)))
        live = self.processor.live_calls()
        await self._in_db(
            lambda s: beat(s, self.worker_id, self.started, live, len(audio_tps), lag),
            "heartbeat not written",  # the dashboard's banner will say so
        )


async def _persist(
    loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor, writer: Any, events: list[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Store a batch of windows-topic events: (summaries of calls that ended, dead letters)."""
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for e in events:
        try:
            ev = json.loads(e.message.value)
            if not isinstance(ev, dict) or not ev.get("call_id"):
                raise ValueError("not an event object with a call_id")
            good.append(ev)
        except ValueError as exc:
            bad.append(_deadletter_for(e.message, "persist", f"unreadable windows event: {exc}"))
    summaries = await _write_with_retry(loop, executor, writer, good, bad)
    return summaries, bad


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


def _deadletter_for(
    message: Any, stage: str, reason: str, call_id: str | None = None
) -> dict[str, Any]:
    """The dead letter of a consumed record: its value, and where it was read from."""
    return deadletter_event(stage, reason, message.value, call_id=call_id, topic=message.topic,
                            partition=message.partition, offset=message.offset)  # fmt: skip


def _record_key(e: Any) -> tuple[str, int, int]:
    m = e.message
    return (m.topic, int(m.partition), int(m.offset))


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
