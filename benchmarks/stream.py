"""``callsense bench stream``: throughput of the streaming path on the shipped sample calls.

* ``processor``: the per-call state machine alone (decode, stages, batched inference across
  calls, verdicts) on the sample calls' chunks interleaved as concurrent calls, in micro-batches
  of ``STREAM_BATCH_EVENTS``; real-time factor = seconds of call audio per wall second.
* ``end_to_end``: embedded broker + ``callsense worker`` subprocess + ``ingest --speed max`` of
  every sample call at once, timed from the first event sent until every call's summary is in
  the database (worker start-up excluded).

Medians over ``repeats`` runs (at most 3 for end_to_end).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from benchmarks.core import benchmark, peak_rss_mb, wait_for_summaries, worker_stack


def _interleaved_messages(calls: list[dict[str, Any]], chunk_ms: int, tag: str) -> tuple:
    from callsense.ingest.producer import load_call_audio
    from callsense.processors.callstate import Incoming
    from callsense.processors.events import AudioChunk, CallEnd, CallStart
    from callsense.processors.stages import chunk_audio

    per_call = []
    seconds = 0.0
    for c in calls:
        audio, sr = load_call_audio(c["path"])
        seconds += audio.shape[1] / sr
        cid = f"{c['call_id']}-{tag}"
        msgs = [CallStart(cid, sr, audio.shape[0], int(c.get("agent_channel", 0))).encode()]
        msgs += [AudioChunk.from_array(cid, s, st, sr, x).encode()
                 for s, st, x in chunk_audio(audio, sr, chunk_ms)]  # fmt: skip
        msgs.append(CallEnd(cid, len(msgs) - 2, audio.shape[1]).encode())
        per_call.append([Incoming(m, cid.encode()) for m in msgs])
    out = []
    for i in range(max(len(m) for m in per_call)):  # round-robin = calls in flight together
        out += [m[i] for m in per_call if i < len(m)]
    return out, seconds


def _processor_run(settings: Any, classifier: Any, calls: list, tag: str) -> dict[str, float]:
    from callsense.processors.callstate import CallProcessor

    msgs, seconds = _interleaved_messages(calls, settings.chunk_ms, tag)
    proc = CallProcessor(settings, classifier)
    states: dict[str, Any] = {}
    windows = 0
    t0 = time.perf_counter()
    n = settings.stream_batch_events
    for i in range(0, len(msgs), n):
        res = proc.process(msgs[i : i + n], states)
        states.update(res.states)
        windows += res.stats["windows"]
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "audio_s": seconds, "windows": windows, "chunks": len(msgs)}


def _end_to_end(calls: list, repeats: int) -> list[dict[str, float]]:
    with worker_stack("tansu", ready_timeout=120) as stack:
        return [
            _one_e2e(calls, stack.broker.bootstrap, stack.engine, f"e2e{r}")
            for r in range(repeats)
        ]


def _one_e2e(calls: list, bootstrap: str, engine: Any, tag: str) -> dict[str, float]:
    from callsense.ingest.producer import CallMeta, ingest_files

    from callsense.settings import Settings

    settings = Settings(kafka_bootstrap=bootstrap)
    metas = [CallMeta(f"{c['call_id']}-{tag}", int(c.get("agent_channel", 0))) for c in calls]
    ids = [m.call_id for m in metas]
    t0 = time.perf_counter()
    results = asyncio.run(ingest_files([c["path"] for c in calls], settings, metas, None, False))
    sent = time.perf_counter() - t0
    if not wait_for_summaries(engine, ids, 600 - (time.perf_counter() - t0)):
        raise RuntimeError("calls did not finish within 600 s")
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "ingest_s": sent, "audio_s": sum(r.seconds for r in results)}


@benchmark("stream")
def bench_stream(repeats: int) -> dict[str, Any]:
    """Streaming throughput: state machine alone and broker + worker end to end."""
    import torch
    from callsense.processors.inference import BatchClassifier

    from callsense.demo import sample_calls
    from callsense.settings import get_settings

    torch.set_num_threads(1)
    settings = get_settings()
    calls = sample_calls()
    classifier = BatchClassifier(settings)
    _processor_run(settings, classifier, calls[:1], "warmup")
    proc_runs = [_processor_run(settings, classifier, calls, f"p{i}") for i in range(repeats)]
    classifier.close()
    e2e = _end_to_end(calls, min(repeats, 3))

    def med(runs: list[dict[str, float]], key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 3)

    audio = proc_runs[0]["audio_s"]
    return {
        "calls": len(calls),
        "audio_s_per_run": round(audio, 2),
        "stream_batch_events": settings.stream_batch_events,
        "processor": {
            "runs": len(proc_runs),
            "median_wall_s": med(proc_runs, "wall_s"),
            "median_realtime_factor": round(audio / med(proc_runs, "wall_s"), 2),
            "windows": proc_runs[0]["windows"],
            "median_ms_per_window": round(
                1000 * med(proc_runs, "wall_s") / max(proc_runs[0]["windows"], 1), 1
            ),
        },
        "end_to_end": {
            "runs": len(e2e),
            "broker": "tansu",
            "median_wall_s": med(e2e, "wall_s"),
            "median_ingest_s": med(e2e, "ingest_s"),
            "median_realtime_factor": round(audio / med(e2e, "wall_s"), 2),
        },
        "peak_rss_mb_bench_process": round(peak_rss_mb(), 1),
        "torch_threads": 1,
    }
