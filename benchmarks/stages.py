"""``callsense bench stages``: cost of the per-speaker stage code (no model, no Kafka).

For one channel of a shipped sample call at several input rates, with noise reduction off and
on: real-time factor (seconds of audio processed per second of CPU, median over repeats), the
median and 95th-percentile time of one ``push`` of a 250 ms chunk, and the size and time of a
``to_state`` / ``from_state`` round trip.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import numpy as np
from callsense.processors.stages import SpeakerPipeline, StageConfig, chunk_audio

from benchmarks.core import benchmark, peak_rss_mb


def _one_run(x: np.ndarray, rate: int, cfg: StageConfig) -> tuple[float, list[float], int]:
    pipe = SpeakerPipeline(cfg, rate, "ch1", "customer")
    pushes = []
    windows = 0
    t0 = time.perf_counter()
    for _seq, start, chunk in chunk_audio(x[None, :], rate, cfg.chunk_ms):
        t = time.perf_counter()
        windows += len(pipe.push(chunk[0], start))
        pushes.append((time.perf_counter() - t) * 1000)
    windows += len(pipe.flush())
    return time.perf_counter() - t0, pushes, windows


@benchmark("stages")
def bench_stages(repeats: int) -> dict[str, Any]:
    """Stage code: real-time factor, per-chunk push time and state size per speaker."""
    from callsense.ingest.samples import sample_calls
    from callsense.models.audio import resample
    from callsense.processors.offline import load_call_audio

    call = next(c for c in sample_calls() if c["call_id"] == "sample-escalation")
    audio, sr = load_call_audio(call["path"])
    x16 = audio[1 - call["agent_channel"]]  # the customer channel
    seconds = len(x16) / sr
    rows = []
    for nr in (False, True):
        cfg = StageConfig(noise_reduction=nr)
        for rate in (8000, 16000, 44100):
            x = x16 if rate == sr else resample(x16, sr, rate)
            runs = [_one_run(x, rate, cfg) for _ in range(max(1, repeats if not nr else 3))]
            totals = [r[0] for r in runs]
            pushes = [p for r in runs for p in r[1]]
            # state size and round-trip time half way through the call
            pipe = SpeakerPipeline(cfg, rate, "ch1", "customer")
            chunks = list(chunk_audio(x[None, :], rate, cfg.chunk_ms))
            for _seq, start, chunk in chunks[: len(chunks) // 2]:
                pipe.push(chunk[0], start)
            t = time.perf_counter()
            blob = json.dumps(pipe.to_state())
            SpeakerPipeline.from_state(cfg, json.loads(blob))
            rt_ms = (time.perf_counter() - t) * 1000
            rows.append(
                {
                    "noise_reduction": nr,
                    "input_rate": rate,
                    "windows": runs[0][2],
                    "realtime_factor": round(seconds / statistics.median(totals), 1),
                    "push_ms_median": round(statistics.median(pushes), 3),
                    "push_ms_p95": round(float(np.percentile(pushes, 95)), 3),
                    "state_bytes": len(blob),
                    "state_round_trip_ms": round(rt_ms, 2),
                    "runs": len(runs),
                }
            )
    return {
        "audio": f"{call['file']} customer channel, {seconds:.1f} s",
        "chunk_ms": StageConfig().chunk_ms,
        "statistic": "median over runs (noise reduction on: 3 runs)",
        "results": rows,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "target": "stage code ≥ 50x real time per speaker without noise reduction",
    }
