"""``callsense demo``: broker, migrated database, worker, dashboard, and the sample calls looping.

Everything runs on 127.0.0.1 as child processes of this command (each in its own session, so
shutdown order is ours): the embedded broker, ``callsense worker`` and ``callsense dashboard``.
The sample calls in ``ingest/samples/`` stream concurrently in real time, round after round,
each round with fresh call ids; the first of them enters through ``callsense gateway`` as a
Twilio Media Stream (8 kHz mu-law, as a live telephone call would), the others are produced
directly as ``callsense ingest`` does. Ctrl-C or SIGTERM stops the calls, then the dashboard,
the gateway, the worker (it commits what it finished) and finally the broker; nothing is left
running.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from callsense.settings import Settings

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "ingest" / "samples"
#: settings the demo bounds unless set in the environment: 5 min of audio and state history,
#: state checkpoints every 5 s (a stereo call's state is ~0.3 MB)
DEMO_LIMITS = {
    "audio_retention_ms": 5 * 60 * 1000,
    "state_retention_ms": 5 * 60 * 1000,
    "state_checkpoint_ms": 5000,
}


def sample_calls(samples_dir: Path = SAMPLES_DIR) -> list[dict[str, Any]]:
    """The shipped sample calls (``calls.json``: file, call id, metadata, agent channel)."""
    index = samples_dir / "calls.json"
    if not index.exists():
        raise click.ClickException(f"no sample calls found ({index} is missing)")
    calls = json.loads(index.read_text())
    for c in calls:
        c["path"] = samples_dir / c["file"]
        if not c["path"].exists():
            raise click.ClickException(f"sample call file {c['path']} is missing")
    return calls


class Child:
    """A child process in its own session, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def _windows_per_speaker(url: str, call_ids: list[str]) -> dict[str, dict[str, str]]:
    """call id -> {speaker: role} of the speakers that have emotion windows."""
    import sqlalchemy as sa

    from callsense.storage.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text(
                "SELECT call_id, speaker, role FROM emotion_windows WHERE call_id IN :ids "
                "GROUP BY call_id, speaker, role"
            ).bindparams(sa.bindparam("ids", expanding=True))
            rows = conn.execute(query, {"ids": call_ids}).all()
    finally:
        engine.dispose()
    out: dict[str, dict[str, str]] = {}
    for cid, spk, role in rows:
        out.setdefault(cid, {})[spk] = role
    return out


async def _loop_calls(
    settings: Settings,
    calls: list[dict[str, Any]],
    speed: float | None,
    stop: asyncio.Event,
    started: list[str],
    gateway_url: str | None = None,
) -> None:
    """Stream every sample call concurrently, round after round, until ``stop`` is set; with
    ``gateway_url`` the first call goes through the gateway's ``/twilio`` endpoint."""
    from callsense.ingest.gateway_cli import replay, twilio_frames
    from callsense.ingest.producer import CallMeta, load_call_audio, make_producer, stream_call

    loaded = [(c, *load_call_audio(c["path"])) for c in calls]
    producer = await make_producer(settings.kafka_bootstrap)
    rnd = 0
    try:
        while not stop.is_set():
            rnd += 1
            tasks = []
            for c, audio, sr in loaded:
                meta = CallMeta(
                    f"{c['call_id']}-r{rnd}-{uuid.uuid4().hex[:4]}",
                    int(c.get("agent_channel", 0)),
                    c.get("agent_id"),
                    c.get("customer_id"),
                    c.get("queue"),
                )
                started.append(meta.call_id)
                if gateway_url and not tasks:
                    params = {"call_id": meta.call_id, **{k: c[k] for k in
                              ("agent_id", "customer_id", "queue") if c.get(k)}}  # fmt: skip
                    frames = twilio_frames(audio, sr, "CA" + uuid.uuid4().hex, params,
                                           meta.agent_channel)  # fmt: skip
                    click.echo(f"{meta.call_id}: through the gateway ({gateway_url}/twilio)")
                    tasks.append(asyncio.create_task(replay(frames, gateway_url + "/twilio",
                                                            speed, {})))  # fmt: skip
                    continue
                tasks.append(asyncio.create_task(stream_call(
                    producer, audio, sr, meta, chunk_ms=settings.chunk_ms, speed=speed,
                    source=c["file"])))  # fmt: skip
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            while not stop.is_set() and not all(t.done() for t in tasks):
                await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            waiter.cancel()
    finally:
        await producer.stop()


@click.command("demo")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--speed", default="1", show_default=True, help="Sample-call pace (1 = real time).")
@click.option("--port", type=int, default=None, help="Dashboard port (default DASHBOARD_PORT).")
@click.option("--broker-port", type=int, default=None, help="Broker port (default: a free one).")
@click.option(
    "--broker",
    "--kind",
    "kind",
    type=click.Choice(["noida", "tansu", "kafka"]),
    default=None,
    help="Broker (default BROKER_KIND): embedded noida or tansu, or Apache Kafka (needs Java).",
)
@click.option("--no-dashboard", is_flag=True, help="Do not start the dashboard.")
def demo_cmd(
    duration: float | None,
    speed: str,
    port: int | None,
    broker_port: int | None,
    kind: str | None,
    no_dashboard: bool,
) -> None:
    """Start broker, worker and dashboard, loop the sample calls, print the URL; Ctrl-C stops."""
    from callsense.broker import BrokerError, free_port
    from callsense.broker_cli import open_broker
    from callsense.ingest.producer import parse_speed
    from callsense.processors.events import ensure_topics
    from callsense.settings import get_settings
    from callsense.storage.db import upgrade

    t0 = time.monotonic()
    base = get_settings()
    kind = kind or base.broker_kind
    pace = parse_speed(speed)
    calls = sample_calls()
    data_dir = base.data_dir.resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # a fresh broker log per run: the demo's topics are scratch (the database keeps the calls),
    # and noida-db would keep a member of a previously killed run in the group forever
    shutil.rmtree(data_dir / kind, ignore_errors=True)
    try:
        broker = open_broker(kind, broker_port or free_port(), data_dir / kind)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    # the demo loops forever: keep the broker's memory bounded (noida-db applies retention.ms)
    bounded = {k: v for k, v in DEMO_LIMITS.items() if f"CALLSENSE_{k.upper()}" not in os.environ}
    settings = base.model_copy(
        update={
            "kafka_bootstrap": broker.bootstrap,
            "broker_kind": kind,
            "data_dir": data_dir,
            **bounded,
        }
    )
    url = settings.effective_database_url
    env = dict(os.environ)
    env.update(
        CALLSENSE_KAFKA_BOOTSTRAP=broker.bootstrap,
        CALLSENSE_BROKER_KIND=kind,
        CALLSENSE_DATA_DIR=str(data_dir),
        CALLSENSE_DATABASE_URL=url,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        **{f"CALLSENSE_{k.upper()}": str(v) for k, v in bounded.items()},
    )
    children: list[Child] = []
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()

    def _on_signal(signum: int, _frame: object) -> None:
        click.echo(f"\nsignal {signum}: shutting down ...", err=True)
        loop.call_soon_threadsafe(stop.set)

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started: list[str] = []
    try:
        try:
            broker.start()
        except BrokerError as exc:
            raise click.ClickException(str(exc)) from exc
        pids = " ".join(f"(pid {pid})" for pid in broker.pids)
        click.echo(f"broker     {kind} on {broker.bootstrap} {pids}")
        upgrade(url)
        ensure_topics(broker.bootstrap, settings)
        py = [sys.executable, "-m", "callsense.cli"]
        children.append(Child("worker", py + ["worker"], env, logs / "worker.log"))
        click.echo(f"worker     pid {children[-1].pid}, log {logs / 'worker.log'}")
        gport = free_port()
        (logs / "gateway.log").unlink(missing_ok=True)  # "listening" must be this run's
        gateway = Child("gateway", py + ["gateway", "--host", "127.0.0.1", "--port", str(gport)],
                        env, logs / "gateway.log")  # fmt: skip
        children.append(gateway)
        gateway_url = f"ws://127.0.0.1:{gport}"
        click.echo(f"gateway    pid {gateway.pid}, {gateway_url} (/twilio, /audiohook, /stream), "
                   f"log {logs / 'gateway.log'}")  # fmt: skip
        dash_url = None
        if no_dashboard:
            click.echo("dashboard  not started (--no-dashboard)")
        elif importlib.util.find_spec("callsense.dashboard.cli") is None:
            click.echo("dashboard  not available in this build (no callsense.dashboard.cli)")
        else:
            dport = port or settings.dashboard_port
            argv = py + ["dashboard", "--host", "127.0.0.1", "--port", str(dport), "--no-migrate"]
            children.append(Child("dashboard", argv, env, logs / "dashboard.log"))
            dash_url = f"http://127.0.0.1:{dport}/"
            click.echo(f"dashboard  pid {children[-1].pid}, log {logs / 'dashboard.log'}")
        click.echo(f"database   {url}")
        click.echo(f"calls      {len(calls)} sample calls looping at speed {speed}")
        if dash_url:
            click.echo(f"\n  Dashboard: {dash_url}\n")
        click.echo("Ctrl-C to stop.")
        sys.stdout.flush()
        loop.run_until_complete(_wait_listening(gateway, 60))
        loop.run_until_complete(_supervise(
            settings, calls, pace, stop, started, children, duration, t0, url, gateway_url
        ))  # fmt: skip
    finally:
        for child in reversed(children):
            child.stop()
        broker.stop()
        loop.close()
        for s, h in old.items():
            signal.signal(s, h)
        click.echo(f"stopped after {time.monotonic() - t0:.1f} s; {len(started)} calls streamed")


async def _wait_listening(child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while "listening" not in (child.log.read_text(errors="replace") if child.log.exists() else ""):
        if not child.alive() or time.monotonic() > deadline:
            raise click.ClickException(f"{child.name} did not start; see {child.log}")
        await asyncio.sleep(0.2)


async def _supervise(
    settings: Settings,
    calls: list[dict[str, Any]],
    pace: float | None,
    stop: asyncio.Event,
    started: list[str],
    children: list[Child],
    duration: float | None,
    t0: float,
    url: str,
    gateway_url: str | None = None,
) -> None:
    feeder = asyncio.create_task(_loop_calls(settings, calls, pace, stop, started, gateway_url))
    reported: set[str] = set()
    wanted = set(settings.emotion_roles) & {"customer", "agent"}
    loop = asyncio.get_running_loop()
    try:
        while not stop.is_set():
            await asyncio.wait([feeder], timeout=1.0)
            if feeder.done():
                feeder.result()  # raise what stopped it
                return
            for child in children:
                if not child.alive():
                    raise click.ClickException(
                        f"{child.name} exited (code {child.proc.returncode}); see {child.log}"
                    )
            pending = [c for c in started if c not in reported]
            if pending:
                seen = await loop.run_in_executor(None, _windows_per_speaker, url, pending)
                for cid, speakers in seen.items():
                    # a stereo sample call has one customer and one agent
                    if wanted <= set(speakers.values()) and cid not in reported:
                        reported.add(cid)
                        who = ", ".join(f"{s} ({r})" for s, r in sorted(speakers.items()))
                        click.echo(f"{time.monotonic() - t0:6.1f} s  {cid}: windows for {who}")
            if duration is not None and time.monotonic() - t0 >= duration:
                stop.set()
    finally:
        stop.set()
        await asyncio.gather(feeder, return_exceptions=True)
