"""``callsense bench diarize``: real-time factor per stream on one thread, latency, memory.

Each configuration streams the three 2-speaker AMI evaluation recordings (``dev00``,
``dev01``, ``sample``: 90 s) through a fresh :class:`StreamingDiarizer` in 250 ms chunks, as
the stream worker does, ``repeats`` times. Reported per configuration:

* ``rtf_cpu_median`` - CPU time of the streaming thread / audio duration for one stream
  (median over repeats): the cost of a stream on one core, which is what sizes a worker;
  ``rtf_wall_median`` - the same with wall time, which other processes on a shared machine
  inflate (``load_average`` is recorded next to it);
* ``label_latency_s`` - the configured bound on how late a label becomes final, and
  ``step_cpu_ms`` / ``step_wall_ms`` - p50/p95 time of one analysis step, which adds to it;
* ``state_kb_end_of_stream`` - pickled per-call state (what a worker checkpoints);
* ``peak_rss_mb`` / ``rss_mb`` - process memory after the runs (models loaded once).
"""

from __future__ import annotations

import os
import pickle
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

FILES = (
    "diarization/ami_pyannote/tests_data/dev00.wav",
    "diarization/ami_pyannote/tests_data/dev01.wav",
    "diarization/ami_pyannote/sample.wav",
)
CONFIGS = (
    {"latency_s": 1.0, "step_s": 1.0},
    {"latency_s": 2.5, "step_s": 1.25},
    {"latency_s": 5.0, "step_s": 2.5},
)


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository, or ``CALLSENSE_SHARED_DATA``."""
    env = os.environ.get("CALLSENSE_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")  # pragma: no cover


def run(repeats: int = 5, data_dir: Path | None = None) -> dict[str, Any]:
    import soundfile as sf
    import torch
    from callsense.processors.diarization.streaming import DiarizerConfig, StreamingDiarizer
    from callsense.processors.diarization.weights import load_models

    torch.set_num_threads(1)
    root = data_dir or shared_data_dir()
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"benchmark audio not found under {root}: {missing}")
    audio = [sf.read(str(root / f), dtype="float32")[0] for f in FILES]
    t0 = time.perf_counter()
    models = load_models()
    load_s = time.perf_counter() - t0
    chunk = 4000  # 250 ms
    rows = []
    for cfg_kw in CONFIGS:
        rtfs: list[float] = []
        cpu_rtfs: list[float] = []
        steps_ms: list[float] = []
        steps_cpu_ms: list[float] = []
        state_kb: list[float] = []
        for _ in range(repeats):
            for x in audio:
                diarizer = StreamingDiarizer(models, DiarizerConfig(**cfg_kw))
                start = time.perf_counter()
                cpu_start = time.thread_time()
                for s in range(0, len(x), chunk):
                    before = diarizer.next_step
                    t = time.perf_counter()
                    c = time.thread_time()
                    diarizer.push(x[s : s + chunk], s)
                    if diarizer.next_step != before:
                        steps_ms.append((time.perf_counter() - t) * 1000)
                        steps_cpu_ms.append((time.thread_time() - c) * 1000)
                state_kb.append(len(pickle.dumps(diarizer.to_state())) / 1024)
                diarizer.flush()
                rtfs.append((time.perf_counter() - start) / (len(x) / 16000))
                cpu_rtfs.append((time.thread_time() - cpu_start) / (len(x) / 16000))
        rows.append(
            {
                **cfg_kw,
                "buffer_s": DiarizerConfig().buffer_s,
                "label_latency_s": cfg_kw["latency_s"],
                "rtf_cpu_median": round(statistics.median(cpu_rtfs), 4),
                "rtf_cpu_max": round(max(cpu_rtfs), 4),
                "rtf_wall_median": round(statistics.median(rtfs), 4),
                "rtf_wall_max": round(max(rtfs), 4),
                "step_cpu_ms_p50": round(float(np.percentile(steps_cpu_ms, 50)), 1),
                "step_cpu_ms_p95": round(float(np.percentile(steps_cpu_ms, 95)), 1),
                "step_wall_ms_p50": round(float(np.percentile(steps_ms, 50)), 1),
                "step_wall_ms_p95": round(float(np.percentile(steps_ms, 95)), 1),
                "state_kb_end_of_stream": round(max(state_kb), 1),
                "streams": len(rtfs),
            }
        )
    return {
        "what": "streaming diarization, one stream at a time, torch at 1 thread",
        "audio": [Path(f).name for f in FILES],
        "audio_s": round(sum(len(x) for x in audio) / 16000, 1),
        "chunk_ms": 250,
        "repeats": repeats,
        "statistic": "median real-time factor over repeats x files",
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "model_load_s": round(load_s, 2),
        "results": rows,
        "rss_mb": round(_rss_mb(), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "target": "real-time factor <= 0.1 per stream on one thread",
        "torch_threads": torch.get_num_threads(),
    }


def _register() -> None:
    from benchmarks.core import benchmark

    @benchmark("diarize")
    def bench_diarize(repeats: int) -> dict[str, Any]:
        """Streaming diarization: real-time factor per stream at 1 thread, latency, RSS."""
        return run(repeats)


_register()
