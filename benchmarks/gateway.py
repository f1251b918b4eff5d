"""``callsense bench gateway``: many concurrent telephony sockets at real-time pace against the
gateway on the embedded stack (pip-installed broker), counting every frame per socket.

The gateway runs as its own process (``callsense gateway``) so its CPU time and memory are
measured alone (sampled from /proc every second); the clients run in this process, each one a
real WebSocket speaking the chosen protocol at real time (Twilio: two 20 ms track messages per
20 ms; AudioHook: one 200 ms stereo frame per 200 ms). Afterwards the audio topic is read back
and, per call, the samples that arrived are compared with the samples sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.core import _write, bench_group, host_load, start_cli

RATE = 8000
TICK = os.sysconf("SC_CLK_TCK")


def _proc_sample(pid: int) -> tuple[float, float]:
    """(CPU seconds so far, resident MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
               .splitlines() if line.startswith("VmRSS:")) / 1024  # fmt: skip
    return cpu, rss


def _twilio_media(seconds: float) -> list[tuple[float, list[str]]]:
    """(time, the two track messages) every 20 ms: a tone on each track (shared by all
    sockets; only the start message names the call)."""
    from callsense.models.g711 import mulaw_encode

    t = np.arange(int(seconds * RATE)) / RATE
    tracks = {"outbound": 0.2 * np.sin(2 * np.pi * 220 * t),
              "inbound": 0.2 * np.sin(2 * np.pi * 330 * t)}  # fmt: skip
    step = RATE // 50
    out = []
    for i, s in enumerate(range(0, len(t) - step + 1, step)):
        msgs = []
        for track, x in tracks.items():
            pcm = (x[s : s + step] * 32767).astype(np.int16)
            msgs.append(json.dumps({"event": "media", "streamSid": "MZbench", "media": {
                "track": track, "chunk": str(i + 1), "timestamp": str(s * 1000 // RATE),
                "payload": base64.b64encode(mulaw_encode(pcm)).decode()}}))  # fmt: skip
        out.append((s / RATE, msgs))
    return out


async def _twilio_socket(url: str, call_id: str, media: list, lag: list[float]) -> int:
    """One Twilio stream at real time; returns the media messages sent."""
    from websockets.asyncio.client import connect

    start = {"event": "start", "streamSid": "MZbench", "start": {
        "callSid": "CA" + call_id, "tracks": ["inbound", "outbound"],
        "customParameters": {"call_id": call_id},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1}}}
    sent = 0
    async with connect(url) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps(start))
        t0 = time.monotonic()
        for at, msgs in media:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag.append(-delay)
            for m in msgs:
                await ws.send(m)
                sent += 1
        await ws.send(json.dumps({"event": "stop", "streamSid": "MZbench"}))
        await ws.close()
    return sent


async def _run_clients(url: str, sockets: int, seconds: float, tag: str) -> dict[str, Any]:
    media = _twilio_media(seconds)
    lag: list[float] = []
    ids = [f"{tag}-{i:03d}" for i in range(sockets)]
    t0 = time.monotonic()
    # staggered starts, as calls do not all begin on the same 20 ms tick
    async def staggered(i: int, cid: str) -> int:
        await asyncio.sleep(i * 0.02)
        return await _twilio_socket(url + "/twilio", cid, media, lag)

    sent = await asyncio.gather(*(staggered(i, c) for i, c in enumerate(ids)))
    return {"ids": ids, "sent": dict(zip(ids, sent, strict=True)),
            "wall_s": time.monotonic() - t0, "late_sends": len(lag),
            "max_lag_ms": round(1000 * max(lag, default=0.0), 1)}  # fmt: skip


async def _measured(
    pid: int, url: str, sockets: int, seconds: float, tag: str
) -> tuple[dict[str, Any], list[tuple[float, float, float]]]:
    """The clients' run, and (time, CPU s, RSS MB) of the gateway process every second."""
    samples: list[tuple[float, float, float]] = []
    done = asyncio.Event()

    async def sampler() -> None:
        while not done.is_set():
            samples.append((time.monotonic(), *_proc_sample(pid)))
            await asyncio.sleep(1.0)

    task = asyncio.create_task(sampler())
    res = await _run_clients(url, sockets, seconds, tag)
    done.set()
    await task
    return res, samples


def _arrived(bootstrap: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    """Per call on the audio topic: chunks, samples, contiguous sequence, call_end totals."""
    from callsense.processors.events import (
        AUDIO_TOPIC,
        AudioChunk,
        CallEnd,
        parse_audio_event,
        read_records,
    )

    async def read() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        # until every call's end is read (or two minutes: then the rest counts as lost)
        records = read_records(
            bootstrap, AUDIO_TOPIC, poll_ms=1000, timeout_s=120, fetch_max_bytes=50 << 20,
            done=lambda: all(out.get(i, {}).get("end") for i in ids),
        )  # fmt: skip
        async for r in records:
            e = parse_audio_event(r.value)
            if e.call_id not in ids:
                continue
            d = out.setdefault(e.call_id, {"chunks": 0, "samples": 0, "seqs": [], "end": None})
            if isinstance(e, AudioChunk):
                d["chunks"] += 1
                d["seqs"].append(e.seq)
                d["samples"] += e.n_samples
            elif isinstance(e, CallEnd):
                d["end"] = asdict(e)
        return out

    return asyncio.run(read())


def run(sockets: int, seconds: float, repeats: int) -> dict[str, Any]:
    from callsense.processors.events import ensure_topics
    from tqdm import tqdm

    from callsense.broker import EmbeddedBroker, free_port
    from callsense.settings import Settings

    runs = []
    for r in tqdm(range(repeats), desc="gateway runs", unit="run"):
        with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker("noida", data_dir=tmp) as b:
            ensure_topics(b.bootstrap, Settings())
            port = free_port()
            env = {**os.environ, "CALLSENSE_KAFKA_BOOTSTRAP": b.bootstrap}
            gw = start_cli(["gateway", "--port", str(port)], env, Path(tmp) / "gateway.log",
                           "listening", 60)  # fmt: skip
            try:
                url = f"ws://127.0.0.1:{port}"
                res, samples = asyncio.run(_measured(gw.pid, url, sockets, seconds, f"r{r}"))
                time.sleep(2)  # the last chunks' acks
            finally:
                gw.terminate()
                gw.wait(30)
            arrived = _arrived(b.bootstrap, set(res["ids"]))
        per_socket = []
        for cid in res["ids"]:
            a = arrived.get(cid, {"chunks": 0, "samples": 0, "seqs": [], "end": None})
            want = res["sent"][cid] // 2 * (RATE // 50)  # samples per track
            end = a["end"] or {}
            per_socket.append({
                "call_id": cid, "media_messages_sent": res["sent"][cid],
                "samples_sent_per_track": want, "samples_arrived": a["samples"],
                "contiguous": sorted(a["seqs"]) == list(range(len(a["seqs"]))),
                "call_end_total": end.get("total_samples"),
            })  # fmt: skip
        lost = [p for p in per_socket if p["samples_arrived"] != p["samples_sent_per_track"]
                or not p["contiguous"] or p["call_end_total"] != p["samples_arrived"]]  # fmt: skip
        busy = [(c2 - c1) / (t2 - t1) for (t1, c1, _), (t2, c2, _) in
                zip(samples, samples[1:], strict=False) if t2 > t1]  # fmt: skip
        runs.append({
            "sockets": sockets, "seconds": seconds, "wall_s": round(res["wall_s"], 1),
            "sockets_with_loss": len(lost), "lost_examples": lost[:3],
            "media_messages_sent": sum(res["sent"].values()),
            "client_late_sends": res["late_sends"], "client_max_lag_ms": res["max_lag_ms"],
            "gateway_cpu_cores_median": round(statistics.median(busy), 3) if busy else None,
            "gateway_cpu_cores_max": round(max(busy), 3) if busy else None,
            "gateway_rss_mb_max": round(max(s[2] for s in samples), 1) if samples else None,
        })  # fmt: skip
    return {
        "protocol": "twilio (both tracks, 20 ms media messages)",
        "broker": "noida (embedded)",
        "host": host_load(),
        "runs": runs,
        "frames_lost_total": sum(r["sockets_with_loss"] for r in runs),
        "gateway_cpu_cores_median": statistics.median(
            r["gateway_cpu_cores_median"] for r in runs if r["gateway_cpu_cores_median"]
        ),
        "gateway_rss_mb_max": max(r["gateway_rss_mb_max"] or 0 for r in runs),
    }


def plot(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].bar(range(len(runs)), [r["gateway_cpu_cores_median"] for r in runs])
    ax[0].set(xlabel="run", ylabel="gateway CPU (cores, median)", ylim=(0, 2),
              title=f"{runs[0]['sockets']} sockets at real time")  # fmt: skip
    ax[1].bar(range(len(runs)), [r["gateway_rss_mb_max"] for r in runs], color="tab:orange")
    ax[1].set(xlabel="run", ylabel="gateway RSS max (MB)",
              title=f"frames lost: {result['frames_lost_total']}")  # fmt: skip
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


@bench_group.command("gateway")
@click.option("--sockets", default=100, show_default=True)
@click.option("--seconds", default=60.0, show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--out", default=Path("bench-results"), type=click.Path(path_type=Path),
              show_default=True)  # fmt: skip
def bench_gateway(sockets: int, seconds: float, repeats: int, out: Path) -> None:
    """Gateway: N concurrent Twilio sockets at real time, frames counted per socket."""
    result = run(sockets, seconds, repeats)
    _write("gateway", result, out)
    plot(result, out / "gateway.png")
