"""Measure worker capacity: CPU time per second of call audio (input to deploy/SIZING.md).

Runs the stream's own stage code offline (``processors.offline.analyze_path``: decode,
resample, optional denoise, VAD, per-speaker windows, emotion model) on the shipped sample
calls with one torch thread, several times, and reports the median real-time factor
(processing seconds / call seconds) and the concurrent calls one worker core sustains at a
given utilisation target. Kafka, JSON and database overheads are not included here; the
streaming test suite covers them functionally, and SIZING.md adds headroom for them.

    python deploy/measure_capacity.py --repeats 3 [--out bench-results/capacity.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parents[1] / "ingest" / "samples"


def measure(files: list[Path], repeats: int, utilisation: float) -> dict[str, Any]:
    import soundfile as sf
    import torch
    from callsense.models.inference import EmotionModel
    from callsense.processors.offline import analyze_path

    from callsense.settings import Settings

    torch.set_num_threads(1)
    settings = Settings(model_threads=1)
    t0 = time.perf_counter()
    model = EmotionModel.load(settings.model_dir, int8=settings.model_int8, threads=1)
    load_s = time.perf_counter() - t0
    per_file = []
    for path in files:
        info = sf.info(str(path))
        duration = info.frames / info.samplerate
        analyze_path(path, settings, "warmup", 0, model)  # warm-up (allocations, caches)
        runs = []
        windows = 0
        for _ in range(repeats):
            c0, w0 = time.process_time(), time.perf_counter()
            res = analyze_path(path, settings, "bench", 0, model)
            runs.append({"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0})
            windows = len(res.results)
        per_file.append(
            {
                "file": path.name,
                "channels": info.channels,
                "duration_s": round(duration, 2),
                "windows": windows,
                "rtf_cpu_median": round(statistics.median(r["cpu_s"] for r in runs) / duration, 4),
                "rtf_wall_median": round(
                    statistics.median(r["wall_s"] for r in runs) / duration, 4
                ),
            }
        )
    rtf = statistics.median(f["rtf_cpu_median"] for f in per_file)
    return {
        "what": "CPU seconds per second of stereo call audio, stage code + model, 1 thread",
        "repeats": repeats,
        "statistic": "median over repeats per file, then median over files",
        "model_dir": str(settings.model_dir),
        "model_int8": settings.model_int8,
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "model_load_s": round(load_s, 2),
        "files": per_file,
        "rtf_cpu": round(rtf, 4),
        "utilisation_target": utilisation,
        "calls_per_core": round(utilisation / rtf, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--utilisation", type=float, default=0.7, help="planned CPU share per core")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("files", nargs="*", type=Path, help="default: the shipped sample calls")
    args = p.parse_args()
    files = args.files or sorted(SAMPLES.glob("*.flac"))
    if not files:
        raise SystemExit(f"no audio files given and none in {SAMPLES}")
    res = measure(files, args.repeats, args.utilisation)
    text = json.dumps(res, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
