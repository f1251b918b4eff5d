"""``callsense bench`` (from a source checkout; ``python -m benchmarks``): benchmarks that
write JSON results.

Add a benchmark with one function::

    @benchmark("diarize")
    def bench_diarize(repeats: int) -> dict: ...

It becomes ``callsense bench diarize`` and is part of ``callsense bench all``; each writes
``<out>/<name>.json`` and prints the JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

BENCHMARKS: dict[str, Callable[[int], dict[str, Any]]] = {}


@click.group("bench")
def bench_group() -> None:
    """Benchmarks (results written as JSON)."""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_MODEL_MS: list[float] = []


def model_ms_per_window() -> float:
    """The shipped model's own cost on this host: int8, one thread, batch 1, median of 9
    windows (measured once a process). Every figure carries it, so that figures from
    machines of different speed can be scaled by it."""
    if not _MODEL_MS:
        import numpy as np
        import torch
        from callsense.models.inference import EmotionModel

        torch.set_num_threads(1)
        model = EmotionModel.load(None, int8=True, threads=1)
        x = (0.1 * np.random.default_rng(0).standard_normal((1, model.window_samples))).astype(
            np.float32
        )
        _MODEL_MS.append(round(median_ms(lambda: model.predict(x, 16000), 9)["median_ms"], 1))
    return _MODEL_MS[0]


def host_info() -> dict[str, Any]:
    """The machine a figure came from: CPU model, cores, load, the model's ms per window."""
    return {"cpu_model": cpu_model(), **host_load(),
            "model_int8_ms_per_window": model_ms_per_window()}  # fmt: skip


def _write(name: str, result: dict[str, Any], out: Path) -> None:
    result = {
        "benchmark": name,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host_machine": host_info(),
        **result,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result, indent=2))


def benchmark(name: str) -> Callable[[Callable[[int], dict[str, Any]]], Callable]:
    """Register ``fn(repeats) -> dict`` as ``callsense bench NAME`` and in ``bench all``."""

    def deco(fn: Callable[[int], dict[str, Any]]) -> Callable:
        BENCHMARKS[name] = fn

        @bench_group.command(name, help=(fn.__doc__ or name).strip().splitlines()[0])
        @click.option(
            "--out",
            default=Path("bench-results"),
            type=click.Path(path_type=Path),
            show_default=True,
        )
        @click.option("--repeats", default=7, show_default=True)
        def _cmd(out: Path, repeats: int) -> None:
            _write(name, fn(repeats), out)

        return fn

    return deco


@bench_group.command("all")
@click.option(
    "--out", default=Path("bench-results"), type=click.Path(path_type=Path), show_default=True
)
@click.option("--repeats", default=7, show_default=True)
def bench_all(out: Path, repeats: int) -> None:
    """Run every registered benchmark."""
    for name, fn in BENCHMARKS.items():
        _write(name, fn(repeats), out)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Wall-clock and process-CPU medians (CPU time is robust to other load on a shared host)."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "cpu_median_ms": statistics.median(cpu),
    }


def start_cli(
    args: list[str], env: dict[str, str], log: Path, ready: str, timeout: float
) -> subprocess.Popen:
    """``callsense ARGS`` as a child process with its output in ``log``, returned once ``ready``
    appears in the log (killed, with the log's tail raised, if it exits or times out first)."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "callsense.cli", *args], env=env,
                                stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + timeout
    while ready not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(30)
            raise RuntimeError(f"callsense {args[0]} did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.2)
    return proc


@dataclass
class WorkerStack:
    """What :func:`worker_stack` started: a broker, a SQLite database and worker processes."""

    broker: Any
    url: str
    engine: Any
    workers: list[subprocess.Popen]


@contextlib.contextmanager
def worker_stack(
    broker_kind: str = "tansu",
    workers: int = 1,
    partitions: int | None = None,
    roles: str | None = None,
    ready_timeout: float = 180,
) -> Iterator[WorkerStack]:
    """A fresh broker (embedded ``tansu``/``noida``, or ``kafka``: a one-node Apache Kafka), a
    migrated SQLite database, the topics, and ``workers`` worker processes in one consumer
    group, all in a temporary directory; stopped and removed on exit."""
    import uuid

    from callsense.processors.events import ensure_topics

    from callsense.settings import Settings
    from callsense.storage.db import make_engine, upgrade

    with tempfile.TemporaryDirectory() as tmp, _broker(broker_kind, tmp) as broker:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        settings = Settings() if partitions is None else Settings(topic_partitions=partitions)
        ensure_topics(broker.bootstrap, settings)
        env = dict(os.environ)
        env.update(
            CALLSENSE_KAFKA_BOOTSTRAP=broker.bootstrap, CALLSENSE_DATABASE_URL=url,
            CALLSENSE_DATA_DIR=tmp, CALLSENSE_BROKER_KIND=broker_kind,
            CALLSENSE_TOPIC_PARTITIONS=str(settings.topic_partitions),
            CALLSENSE_APP_ID=f"bench-{uuid.uuid4().hex[:6]}",
        )  # fmt: skip
        if roles is not None:
            env["CALLSENSE_EMOTION_ROLES"] = roles
        procs: list[subprocess.Popen] = []
        engine = make_engine(url)
        try:
            for i in range(workers):
                log = Path(tmp) / f"worker{i}.log"
                procs.append(start_cli(["worker"], env, log, "Worker ready", ready_timeout))
            yield WorkerStack(broker, url, engine, procs)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(60)
            engine.dispose()


def _broker(kind: str, tmp: str) -> Any:
    """A fresh broker in ``tmp``: an embedded one, or a one-node Apache Kafka (KRaft)."""
    if kind == "kafka":
        from callsense.kafka_broker import KafkaCluster

        return KafkaCluster(data_dir=Path(tmp) / "kafka")
    from callsense.broker import EmbeddedBroker

    return EmbeddedBroker(kind, data_dir=tmp)


def wait_for_summaries(engine: Any, ids: list[str], timeout: float, poll_s: float = 0.1) -> bool:
    """Whether every call of ``ids`` has its summary stored (= it ended) within ``timeout``."""
    import sqlalchemy as sa

    query = sa.text("SELECT count(*) FROM call_summaries WHERE call_id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True)
    )
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            if conn.execute(query, {"ids": ids}).scalar() == len(ids):
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)


def host_load() -> dict[str, Any]:
    import os

    return {"cpu_count": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}


@benchmark("model")
def bench_model(repeats: int) -> dict[str, Any]:
    """Emotion model: ms per 3 s window, batch 1/16, 1/2 threads, fp32/int8, peak RSS."""
    import numpy as np
    import torch
    from callsense.models.inference import EmotionModel

    rng = np.random.default_rng(0)
    rows = []
    for int8 in (False, True):
        model = EmotionModel.load(None, int8=int8, threads=1)
        n = model.window_samples
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch in (1, 16):
                x = (0.1 * rng.standard_normal((batch, n))).astype(np.float32)
                stats = median_ms(lambda x=x, m=model: m.predict(x, 16000), repeats)
                rows.append(
                    {
                        "precision": "int8" if int8 else "fp32",
                        "threads": threads,
                        "batch": batch,
                        "ms_per_window": round(stats["median_ms"] / batch, 2),
                        "batch_median_ms": round(stats["median_ms"], 2),
                        "batch_min_ms": round(stats["min_ms"], 2),
                        "cpu_ms_per_window": round(stats["cpu_median_ms"] / batch, 2),
                    }
                )
        torch.set_num_threads(1)
    return {
        "window_s": model.window_s,
        "encoder": model.config["encoder"],
        "ensemble_heads": len(model.heads),
        "repeats": repeats,
        "statistic": "median over repeats, divided by batch size (wall clock; cpu_ms_per_window "
        "is process CPU time, which other jobs on a shared host do not inflate)",
        "results": rows,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "host": host_load(),
        "target": "≤ 60 ms per window at batch 1 on one thread",
    }


# the other benchmarks register themselves on import
from benchmarks import diarization as _diarize_bench  # noqa: E402,F401
from benchmarks import gateway as _gateway_bench  # noqa: E402,F401
from benchmarks import live_wall as _live_wall_bench  # noqa: E402,F401
from benchmarks import pipeline as _pipeline_bench  # noqa: E402,F401
from benchmarks import stages as _stages_bench  # noqa: E402,F401
from benchmarks import stream as _stream_bench  # noqa: E402,F401
