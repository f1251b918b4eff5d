"""DER of the streaming diarizer on the shared AMI recordings (an evaluation, not runtime code).

    python -m benchmarks.diarization_eval --out benchmarks/results/diarization.json \
        --plot docs/img/diarization_timelines.png

Scoring as in :mod:`callsense.processors.diarization.rttm` (collar 0 s, overlap scored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from callsense.processors.diarization.rttm import SCORING, der, read_rttm

# -- evaluation on the shared AMI recordings ---------------------------------------------------
EVAL_SET = {
    # uri: (audio, reference RTTM), relative to ../shared/data
    "dev00": (
        "diarization/ami_pyannote/tests_data/dev00.wav",
        "diarization/ami_pyannote/tests_data/debug.development.rttm",
    ),
    "dev01": (
        "diarization/ami_pyannote/tests_data/dev01.wav",
        "diarization/ami_pyannote/tests_data/debug.development.rttm",
    ),
    "sample": ("diarization/ami_pyannote/sample.wav", "diarization/ami_pyannote/sample.rttm"),
}
LATENCIES = ((1.0, 1.0), (2.5, 1.25), (5.0, 2.5))  # (latency_s, step_s)
# more than two speakers, scored with max_speakers = number of reference speakers (default
# latency); pyAudioAnalysis references are coarse hand-made turn lists without overlap
OTHER_SET = {
    "mixture": (
        "diarization/ami_pyannote/seriously/mixture.wav",
        "diarization/ami_pyannote/seriously/mixture.rttm",
    ),
    "diarizationExample": (
        "diarization/pyaudioanalysis/diarizationExample.wav",
        "diarization/pyaudioanalysis/diarizationExample.rttm",
    ),
    "diarizationExample2": (
        "diarization/pyaudioanalysis/diarizationExample2.wav",
        "diarization/pyaudioanalysis/diarizationExample2.rttm",
    ),
}


def evaluate_shared(data_dir: Path, latencies=LATENCIES) -> dict[str, Any]:  # noqa: ANN001
    """DER per recording and mean for each latency (collar 0, overlap scored)."""
    import numpy as np
    import soundfile as sf
    import torch
    from callsense.processors.diarization.streaming import DiarizerConfig, diarize_array
    from callsense.processors.diarization.weights import load_models
    from tqdm import tqdm

    torch.set_num_threads(1)
    models = load_models()
    rows = []
    timelines: list = []
    for latency, step in latencies:
        per: dict[str, dict[str, float]] = {}
        for uri, (wav, rttm) in tqdm(EVAL_SET.items(), desc=f"latency {latency}s"):
            audio = sf.read(str(data_dir / wav), dtype="float32")[0]
            ref = read_rttm(data_dir / rttm)[uri]
            config = DiarizerConfig(latency_s=latency, step_s=step)
            diarizer, _ = diarize_array(models, audio, config)
            scores = der(ref, diarizer.turns, len(audio) / 16000, uri)
            scores["speakers"] = diarizer.num_speakers
            per[uri] = {k: round(float(v), 4) for k, v in scores.items()}
            timelines.append((f"{uri} (latency {latency} s)", ref, list(diarizer.turns)))
        mean = {
            k: round(float(np.mean([p[k] for p in per.values()])), 4)
            for k in ("der", "false_alarm", "missed", "confusion")
        }
        rows.append({"latency_s": latency, "step_s": step, "files": per, "mean": mean})
    other: dict[str, dict[str, float]] = {}
    for uri, (wav, rttm) in tqdm(OTHER_SET.items(), desc="more speakers"):
        audio = sf.read(str(data_dir / wav), dtype="float32")[0]
        ref = next(iter(read_rttm(data_dir / rttm).values()))
        n_ref = len({t[0] for t in ref})
        diarizer, _ = diarize_array(models, audio, DiarizerConfig(max_speakers=n_ref))
        scores = der(ref, diarizer.turns, len(audio) / 16000, uri)
        scores["speakers"] = diarizer.num_speakers
        scores["reference_speakers"] = n_ref
        other[uri] = {k: round(float(v), 4) for k, v in scores.items()}
    return {
        "other_recordings": other,
        "scoring": SCORING,
        "metric": "pyannote.metrics DiarizationErrorRate(collar=0.0, skip_overlap=False)",
        "config": {k: v for k, v in vars(DiarizerConfig()).items()},
        "results": rows,
        "_timelines": timelines,
    }


def markdown_other(result: dict[str, Any]) -> str:
    lines = [
        "| recording | speakers (ref / found) | DER % | false alarm % | missed % | confusion % |",
        "|---|---|---|---|---|---|",
    ]
    for uri, s in result["other_recordings"].items():
        lines.append(
            f"| {uri} | {s['reference_speakers']:.0f} / {s['speakers']:.0f} | "
            f"{100 * s['der']:.1f} | {100 * s['false_alarm']:.1f} | {100 * s['missed']:.1f} | "
            f"{100 * s['confusion']:.1f} |"
        )
    return "\n".join(lines)


def markdown_table(result: dict[str, Any]) -> str:
    lines = [
        "| latency (s) | step (s) | recording | DER % | false alarm % | missed % | confusion % |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["results"]:
        items = list(row["files"].items()) + [("**mean**", row["mean"])]
        for uri, s in items:
            lines.append(
                f"| {row['latency_s']} | {row['step_s']} | {uri} | {100 * s['der']:.1f} | "
                f"{100 * s['false_alarm']:.1f} | {100 * s['missed']:.1f} | "
                f"{100 * s['confusion']:.1f} |"
            )
    return "\n".join(lines)


def plot_timelines(
    rows: list[tuple[str, list[tuple[str, float, float]], list[tuple[str, float, float]]]],
    out: Path,
) -> None:
    """PNG: reference vs. streaming hypothesis, one panel per recording."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 1.6 * len(rows)), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (uri, ref, hyp) in zip(axes[:, 0], rows, strict=True):
        for y, turns in ((1, ref), (0, hyp)):
            names = sorted({t[0] for t in turns})
            for spk, a, b in turns:
                k = names.index(spk)
                ax.broken_barh([(a, b - a)], (y + 0.05 + 0.4 * k, 0.35), color=colours(k))
        ax.set_yticks([0.45, 1.45], ["streaming", "reference"])
        ax.set_ylim(0, 2)
        ax.set_title(uri, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time (s); colours = speakers of each row (labels differ by row)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:  # pragma: no cover - exercised by the documented command
    import argparse
    import json

    from benchmarks.diarization import shared_data_dir

    parser = argparse.ArgumentParser(description="DER of the streaming diarizer on shared AMI")
    parser.add_argument("--data", type=Path, default=None, help="shared data dir")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diarization.json"))
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the 2.5 s timelines")
    args = parser.parse_args()
    result = evaluate_shared(args.data or shared_data_dir())
    timelines = result.pop("_timelines")
    if args.plot:
        plot_timelines([t for t in timelines if "latency 2.5" in t[0]], args.plot)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))
    print()
    print(markdown_other(result))


if __name__ == "__main__":  # pragma: no cover
    main()
