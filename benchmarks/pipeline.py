"""``callsense bench pipeline``: N stereo calls at real-time pace through W workers.

One run: an embedded broker and a SQLite database in a temporary directory, W ``callsense
worker`` processes, then N copies of the stereo sample call ingested concurrently at real-time
pace (call starts spread over ``--stagger-s``). Latency is read from the database: a window
row's write time minus its call's start (the ingest clock) minus the window's end. The backlog
is the time from the end of ingest to the last window row. CPU and peak RSS are read from
``/proc`` for every worker and the broker. The partition split is each worker's audio
partitions when ingest starts (from the heartbeat table).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.core import bench_group, host_info, host_load, wait_for_summaries, worker_stack

KEPT_UP_BACKLOG_S = 3.0  # real time is kept when the last window lands this soon after ingest


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _wait_for_split(engine: Any, workers: int, partitions: int, timeout: float) -> list[int]:
    """Each live worker's audio partitions once all partitions are assigned (heartbeats)."""
    import sqlalchemy as sa

    deadline = time.monotonic() + timeout
    split: list[int] = []
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT audio_partitions FROM worker_heartbeats")).all()
        split = sorted((int(r[0]) for r in rows), reverse=True)
        if len(split) == workers and sum(split) == partitions:
            return split
        time.sleep(0.5)
    return split


async def _ingest(
    audio: np.ndarray,
    sr: int,
    ids: list[str],
    agent_channel: int,
    bootstrap: str,
    stagger: float,
    phase: str = "spread",
) -> tuple[float, float]:
    """Stream every call id concurrently at real-time pace; (start, end) wall-clock epochs.
    ``phase`` spread: call i is the sample rotated by i/N of its length (every call runs the
    whole time, their turns fall at different moments, as in a call centre); aligned: every
    call is the sample from its start (all customers speak at once: the bursty worst case)."""
    from callsense.ingest.producer import CallMeta, make_producer, stream_call

    from callsense.settings import Settings

    settings = Settings(kafka_bootstrap=bootstrap)
    producer = await make_producer(bootstrap)
    offsets = np.linspace(0.0, stagger, num=len(ids), endpoint=False)

    async def one(i: int, call_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        meta = CallMeta(call_id, agent_channel, queue="bench")
        x = audio if phase == "aligned" else np.roll(audio, -(i * audio.shape[1]) // len(ids), 1)
        await stream_call(producer, x, sr, meta, chunk_ms=settings.chunk_ms, speed=1.0)

    t0 = time.time()
    try:
        await asyncio.gather(
            *(one(i, c, d) for i, (c, d) in enumerate(zip(ids, offsets, strict=True)))
        )
    finally:
        await producer.stop()
    return t0, time.time()


def _window_rows(engine: Any, ids: list[str]) -> list[Any]:
    """Every stored window of ``ids``: call_id, speaker, start_ms, end_ms, its write time and
    its call's start (the ingest clock)."""
    import sqlalchemy as sa

    from callsense.storage.schema import Call, EmotionWindow

    q = (
        sa.select(EmotionWindow.call_id, EmotionWindow.speaker, EmotionWindow.start_ms,
                  EmotionWindow.end_ms, EmotionWindow.created_at, Call.started_at)
        .join(Call, Call.call_id == EmotionWindow.call_id)
        .where(EmotionWindow.call_id.in_(ids))
    )  # fmt: skip
    with engine.connect() as conn:
        return list(conn.execute(q).all())


def _latencies(rows: list[Any]) -> tuple[np.ndarray, float]:
    """(latency of every window row in seconds, epoch of the last row's write)."""
    lat = np.array(
        [w.timestamp() - s.timestamp() - end_ms / 1000.0 for *_, end_ms, w, s in rows], dtype=float
    )
    last = max((r.created_at.timestamp() for r in rows), default=float("nan"))
    return lat, last


async def _window_timings(bootstrap: str, ids: set[str]) -> dict[tuple, dict[str, float]]:
    """(call_id, speaker, start_ms) -> the worker's ``timing`` of every window event of ``ids``
    on the windows topic."""
    from callsense.processors.events import WINDOWS_TOPIC, read_records

    out: dict[tuple, dict[str, float]] = {}
    async for r in read_records(bootstrap, WINDOWS_TOPIC):
        e = json.loads(r.value)
        if e.get("kind") == "window" and e.get("call_id") in ids and "timing" in e:
            out[(e["call_id"], e["speaker"], e["start_ms"])] = e["timing"]
    return out


def _latency_parts(rows: list[Any], timings: dict[tuple, dict[str, float]]) -> dict[str, Any]:
    """Each window's latency in three parts, p50 and p95 of each: ``to_worker`` (the audio's
    end to the worker taking the micro-batch that completes the window: ingest, the audio
    topic hop, batch gathering, waiting behind earlier batches), ``in_worker`` (stages and
    inference of that batch), ``to_row`` (the windows topic hop, persistence batching and the
    database write). ``rows``: :func:`_window_rows`; ``timings``: :func:`_window_timings`."""
    parts: dict[str, list[float]] = {"to_worker": [], "in_worker": [], "to_row": []}
    for cid, spk, start_ms, end_ms, written, started in rows:
        t = timings.get((cid, spk, start_ms))
        if t is None:
            continue
        spoken = started.timestamp() + end_ms / 1000.0
        parts["to_worker"].append(t["batch_at"] - spoken)
        parts["in_worker"].append(t["emitted_at"] - t["batch_at"])
        parts["to_row"].append(written.timestamp() - t["emitted_at"])
    return {
        k: {"p50": round(float(np.percentile(v, 50)), 3),
            "p95": round(float(np.percentile(v, 95)), 3)}
        for k, v in parts.items() if v
    }  # fmt: skip


def one_run(
    calls: int,
    workers: int,
    partitions: int,
    roles: str,
    stagger: float,
    broker_kind: str,
    sample: dict[str, Any],
    audio: np.ndarray,
    sr: int,
    phase: str = "spread",
) -> dict[str, Any]:
    """One measured run (fresh broker, database and consumer group) of N copies of ``audio``
    (the stereo ``sample`` call), in ``phase`` (see :func:`_ingest`)."""
    with worker_stack(broker_kind, workers, partitions, roles) as stack:
        broker, engine, procs = stack.broker, stack.engine, stack.workers
        split = _wait_for_split(engine, workers, partitions, 120)
        cpu0 = {p.pid: _proc_cpu_s(p.pid) for p in procs}
        broker_cpu0 = sum(_proc_cpu_s(pid) for pid in broker.pids)
        tag = uuid.uuid4().hex[:4]
        ids = [f"bench-{tag}-{i:03d}" for i in range(calls)]
        agent = int(sample.get("agent_channel", 0))
        t0, t_end = asyncio.run(_ingest(audio, sr, ids, agent, broker.bootstrap, stagger, phase))
        ended = wait_for_summaries(engine, ids, 600, poll_s=0.25)
        wall = time.time() - t0
        rows = _window_rows(engine, ids)
        lat, last = _latencies(rows)
        parts = _latency_parts(rows, asyncio.run(_window_timings(broker.bootstrap, set(ids))))
        cpu = [(_proc_cpu_s(p.pid) - cpu0[p.pid]) / wall for p in procs]
        rss = [_proc_peak_rss_mb(p.pid) for p in procs]
        broker_cores = (sum(_proc_cpu_s(pid) for pid in broker.pids) - broker_cpu0) / wall
    backlog = float(last - t_end)

    def pct(q: float) -> float | None:
        return round(float(np.percentile(lat, q)), 3) if len(lat) else None

    return {
        "calls": calls,
        "workers": workers,
        "all_calls_ended": ended,
        "windows": int(len(lat)),
        "ingest_s": round(t_end - t0, 2),
        "backlog_s": round(backlog, 2),
        "kept_up": bool(ended and backlog <= KEPT_UP_BACKLOG_S),
        "latency_s": {"p50": pct(50), "p95": pct(95), "p99": pct(99), "max": pct(100)},
        "latency_parts_s": parts,
        "partition_split": split,
        "even_split": bool(split) and max(split) - min(split) <= 1 and len(split) == workers,
        "worker_cores": [round(c, 2) for c in cpu],
        "worker_peak_rss_mb": [round(r, 1) for r in rss],
        "broker_cores": round(broker_cores, 2),
    }


def stage_latency(
    audio: np.ndarray, sr: int, agent_channel: int, roles: str, copies: int = 1
) -> dict[str, Any]:
    """The part of the latency the stages cause by design: each window's end (call time) to the
    end of the chunk that completes it, with the worker's chunking and stage settings (no
    broker, no model), over ``copies`` copies of the call rotated as ``--phase spread`` rotates
    them. A call's last window waits for the call's end (speech not yet covered by a window
    waits for more speech, or the end). The rest of the measured latency is transport,
    batching, inference and the database write."""
    from callsense.processors.stages import SpeakerPipeline, StageConfig, chunk_audio, speakers_for

    from callsense.settings import Settings

    cfg = StageConfig.from_settings(Settings(emotion_roles=roles))
    lat: list[float] = []
    last: list[float] = []  # windows emitted when the call ends
    for i in range(copies):
        x = np.roll(audio, -(i * audio.shape[1]) // copies, 1)
        pipes = [
            (SpeakerPipeline(cfg, sr, spk, role), ch)
            for spk, role, ch in speakers_for(x.shape[0], agent_channel)
        ]
        for _seq, start, chunk in chunk_audio(x, sr, cfg.chunk_ms):
            done = (start + chunk.shape[1]) / sr
            for pipe, ch in pipes:
                lat += [done - w.end_ms / 1000.0 for w in pipe.push(chunk[ch or 0], start)]
        end = x.shape[1] / sr
        for pipe, _ch in pipes:
            last += [end - w.end_ms / 1000.0 for w in pipe.flush()]

    def pct(xs: list[float], q: float) -> float | None:
        return round(float(np.percentile(xs, q)), 3) if xs else None

    return {
        "chunk_ms": cfg.chunk_ms,
        "vad_block_ms": cfg.vad_block_frames * cfg.vad_frame_ms,
        "copies": copies,
        "p50": pct(lat, 50),
        "p95": pct(lat, 95),
        "at_call_end": {"windows": len(last), "p50": pct(last, 50), "max": pct(last, 100),
                        "share": round(len(last) / max(1, len(lat) + len(last)), 4)},
    }  # fmt: skip


def _median(runs: list[dict[str, Any]], *path: str) -> float | None:
    vals = []
    for r in runs:
        v: Any = r
        for p in path:
            v = v[p]
        if v is not None:
            vals.append(v)
    return round(statistics.median(vals), 3) if vals else None


def plot(results: dict[str, Any], out: Path) -> None:
    """Median p50/p95 latency and backlog against the number of calls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["by_calls"]
    ns = [r["calls"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^--")):
        ax.plot(ns, [r["median_latency_s"][key] for r in rows], style, label=f"latency {key}")
    ax.plot(ns, [r["median_backlog_s"] for r in rows], "x:", color="k", label="backlog")
    ax.axhline(KEPT_UP_BACKLOG_S, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("concurrent stereo calls")
    ax.set_ylabel("seconds")
    ax.set_title(
        f"{results['workers']} worker(s), {results['partitions']} partitions, "
        f"roles {results['emotion_roles']}, {results['broker']}, {results.get('phase', 'aligned')}"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


@bench_group.command("pipeline")
@click.option("--calls", default="1,20,40,60", show_default=True, help="N values (comma list).")
@click.option("--workers", default=2, show_default=True)
@click.option("--runs", default=3, show_default=True, help="Runs per N (medians reported).")
@click.option("--partitions", default=8, show_default=True)
@click.option(
    "--roles", default="customer", show_default=True, help="CALLSENSE_EMOTION_ROLES of the workers."
)
@click.option(
    "--stagger-s", default=1.0, show_default=True, help="Call starts spread over this many seconds."
)
@click.option(
    "--phase",
    default="spread",
    show_default=True,
    type=click.Choice(["spread", "aligned"]),
    help="spread: call i is the sample rotated by i/N (turns at different moments); "
    "aligned: every copy from its start (all customers speak at once).",
)
@click.option(
    "--broker",
    "broker_kind",
    default="tansu",
    show_default=True,
    type=click.Choice(["tansu", "noida", "kafka"]),
    help="kafka: Apache Kafka, one node.",
)
@click.option(
    "--out", default=Path("bench-results"), type=click.Path(path_type=Path), show_default=True
)
@click.option("--name", default="pipeline", show_default=True, help="Result file stem.")
@click.option(
    "--call-seconds", type=float, default=None, help="Cut the sample call (default: all 51 s)."
)
def bench_pipeline(
    calls: str,
    workers: int,
    runs: int,
    partitions: int,
    roles: str,
    stagger_s: float,
    phase: str,
    broker_kind: str,
    out: Path,
    name: str,
    call_seconds: float | None,
) -> None:
    """Pipeline at real-time pace: N stereo calls, W workers; latency, backlog, CPU, RSS."""
    from callsense.ingest.producer import load_call_audio
    from tqdm import tqdm

    from callsense.demo import sample_calls

    ns = [int(n) for n in calls.split(",") if n.strip()]
    sample = next(c for c in sample_calls() if int(c.get("channels", 1)) == 2)
    audio, sr = load_call_audio(sample["path"])
    copies = 12 if phase == "spread" else 1
    stages = stage_latency(audio, sr, int(sample.get("agent_channel", 0)), roles, copies)
    if call_seconds:
        audio = audio[:, : int(call_seconds * sr)]
    load_before = host_load()
    machine = host_info()  # before the runs: the model's ms per window on an idle host
    all_runs: list[dict[str, Any]] = []
    bar = tqdm(total=len(ns) * runs, desc="pipeline runs", unit="run")
    for n in ns:
        for _ in range(runs):
            r = one_run(
                n, workers, partitions, roles, stagger_s, broker_kind, sample, audio, sr, phase
            )
            all_runs.append(r)
            bar.write(
                f"{n} calls: backlog {r['backlog_s']} s, p50 {r['latency_s']['p50']} s, "
                f"p95 {r['latency_s']['p95']} s, split {r['partition_split']}"
            )
            bar.update()
    bar.close()
    by_calls = []
    for n in ns:
        rs = [r for r in all_runs if r["calls"] == n]
        by_calls.append(
            {
                "calls": n,
                "runs": len(rs),
                "kept_up_runs": sum(r["kept_up"] for r in rs),
                "median_backlog_s": _median(rs, "backlog_s"),
                "median_latency_s": {
                    q: _median(rs, "latency_s", q) for q in ("p50", "p95", "p99", "max")
                },
                "even_split_runs": sum(r["even_split"] for r in rs),
                "median_worker_cores": _median([{"c": sum(r["worker_cores"])} for r in rs], "c"),
                "max_worker_peak_rss_mb": max(max(r["worker_peak_rss_mb"]) for r in rs),
            }
        )
    kept = [b["calls"] for b in by_calls if b["kept_up_runs"] == b["runs"]]
    result = {
        "benchmark": "pipeline",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "workers": workers,
        "partitions": partitions,
        "emotion_roles": roles,
        "broker": broker_kind,
        "stagger_s": stagger_s,
        "phase": phase,
        "call_seconds": call_seconds or "all",
        "kept_up_rule": f"every call ended and backlog ≤ {KEPT_UP_BACKLOG_S} s",
        "largest_n_kept_up": max(kept) if kept else None,
        "stage_latency_s": stages,
        "host_machine": machine,
        "host_before": load_before,
        "host_after": host_load(),
        "by_calls": by_calls,
        "runs": all_runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / f"{name}.png")
    click.echo(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
