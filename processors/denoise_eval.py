"""Does noise reduction help the emotion model? Measured on RAVDESS, clean and noisy.

    python -m callsense.processors.denoise_eval [--data ../shared/data] [--snr 10]
        [--actors 1,2,...] [--out processors/results]

A fixed set of RAVDESS utterances (every clip of the chosen actors whose emotion maps onto the
model's classes; by default the actors the shipped model held out, when its artefact records
them) goes through the real stage code (:class:`~callsense.processors.stages.SpeakerPipeline`:
VAD, windows, with ``noise_reduction`` off and on) and the shipped model, in two conditions:

* clean: the recording as is (silence trimmed, 0.5 s of silence on both sides);
* noisy: the same plus additive noise at ``--snr`` dB relative to the speech (white or pink,
  seeded per clip, so every run sees the same noise).

A clip's prediction is the arg-max of its windows' mean probabilities; a clip for which the VAD
keeps no window counts as wrong. Reported: unweighted accuracy (UA, mean per-class recall),
weighted accuracy, macro-F1, per-class recall, clips without windows. Results go to
``denoise.json`` and ``denoise.png``.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from callsense.processors.stages import SpeakerPipeline, StageConfig, chunk_audio

SR = 16000
HERE = Path(__file__).resolve().parent


def add_noise_at_speech_snr(x: np.ndarray, speech: slice, snr_db: float, seed: int) -> np.ndarray:
    """``x`` plus white or pink noise whose power is ``snr_db`` below the speech part's."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(x) + 512)
    if seed % 2:  # pink-ish: integrated white noise with the drift removed
        noise = np.cumsum(noise)
        noise = noise - np.convolve(noise, np.ones(256) / 256, mode="same")
    noise = noise[256:-256]  # drop the edges, where the moving average is zero-padded
    p_speech = float(np.mean(x[speech].astype(np.float64) ** 2)) + 1e-12
    p_noise = float(np.mean(noise**2)) + 1e-12
    scale = np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return np.clip(x + scale * noise, -1.0, 1.0).astype(np.float32)


def load_set(data: Path, actors: list[int], labels: list[str]) -> list[tuple[np.ndarray, int, str]]:
    """(clip with 0.5 s silence each side, class index, source path) for the chosen actors."""
    import soundfile as sf
    from callsense.models.audio import trim_silence

    with open(data / "ravdess" / "MANIFEST.csv", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["path"])
    names = {f"ravdess_{a:02d}" for a in actors}
    out = []
    pad = np.zeros(SR // 2, np.float32)
    for r in rows:
        if r["speaker"] not in names:
            continue
        emo = r["emotion"]
        if emo not in labels and emo == "calm" and "neutral" in labels:
            emo = "neutral"
        if emo not in labels:
            continue
        x, sr = sf.read(data / "ravdess" / r["path"], dtype="float32")
        assert sr == SR
        out.append((np.concatenate([pad, trim_silence(x), pad]), labels.index(emo), r["path"]))
    return out


def clip_windows(x: np.ndarray, cfg: StageConfig) -> list[np.ndarray]:
    pipe = SpeakerPipeline(cfg, SR)
    wins = []
    for _seq, start, chunk in chunk_audio(x[None, :], SR, cfg.chunk_ms):
        wins += pipe.push(chunk[0], start)
    wins += pipe.flush()
    return [w.samples for w in wins]


def scores(y: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    recall, f1 = [], []
    for c in range(n_classes):
        tp = int(np.sum((pred == c) & (y == c)))
        pos, called = int(np.sum(y == c)), int(np.sum(pred == c))
        r = tp / pos if pos else 0.0
        p = tp / called if called else 0.0
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    return {
        "ua": float(np.mean(recall)),
        "wa": float(np.mean(pred == y)),
        "macro_f1": float(np.mean(f1)),
        "recall": recall,
    }


def evaluate(
    model: Any, clips: list[tuple[np.ndarray, int, str]], cfg: StageConfig
) -> dict[str, Any]:
    from tqdm import tqdm

    n_classes = len(model.labels)
    y = np.array([c[1] for c in clips])
    pred = np.full(len(clips), -1)
    windowless = 0
    n_windows = 0
    t0 = time.perf_counter()
    for i, (x, _label, _src) in enumerate(tqdm(clips, desc=f"nr={cfg.noise_reduction}")):
        wins = clip_windows(x, cfg)
        if not wins:
            windowless += 1
            continue
        n_windows += len(wins)
        probs = model.predict(wins, sample_rate=SR)
        pred[i] = int(np.argmax(probs.mean(axis=0)))
    out = scores(y, pred, n_classes)
    out["recall"] = dict(zip(model.labels, out["recall"], strict=True))
    out.update(clips=len(clips), windows=n_windows, windowless_clips=windowless,
               seconds=round(time.perf_counter() - t0, 1))  # fmt: skip
    return out


def default_actors(model: Any) -> list[int]:
    """Actors the model did not train on, if its artefact says; else a fixed set of four."""
    prov = model.config.get("provenance") or model.config.get("training") or {}
    for key in ("heldout_speakers", "test_speakers", "heldout_actors"):
        ids = prov.get(key) if isinstance(prov, dict) else None
        if ids:
            return sorted(int(str(s).rsplit("_", 1)[-1]) for s in ids)
    return [3, 8, 15, 20]


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = result["conditions"]
    names = ["clean", f"noisy {result['snr_db']:g} dB"]
    off = [conds["clean_off"]["ua"], conds["noisy_off"]["ua"]]
    on = [conds["clean_on"]["ua"], conds["noisy_on"]["ua"]]
    xs = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.bar(xs - 0.18, off, 0.36, label="noise reduction off")
    ax.bar(xs + 0.18, on, 0.36, label="noise reduction on")
    for x0, v in list(zip(xs - 0.18, off, strict=True)) + list(zip(xs + 0.18, on, strict=True)):
        ax.text(x0, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_xticks(xs, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("unweighted accuracy")
    ax.set_title(f"RAVDESS, {result['clips']} clips, {len(result['labels'])} classes")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              default=Path("..") / "shared" / "data", show_default=True)  # fmt: skip
@click.option("--actors", default=None, help="Comma-separated RAVDESS actor numbers.")
@click.option("--snr", "snr_db", type=float, default=10.0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=HERE / "results", show_default=True)  # fmt: skip
def main(data: Path, actors: str | None, snr_db: float, out: Path) -> None:
    """Emotion accuracy with noise reduction off/on, on clean and noisy RAVDESS speech."""
    import torch
    from callsense.models import EmotionModel

    from callsense.settings import get_settings

    torch.set_num_threads(1)
    settings = get_settings()
    model = EmotionModel.load(settings.model_dir, threads=1)
    ids = [int(a) for a in actors.split(",")] if actors else default_actors(model)
    clean = load_set(data, ids, list(model.labels))
    if not clean:
        raise click.ClickException(f"no RAVDESS clips for actors {ids} under {data}")
    half = SR // 2
    noisy = [
        (add_noise_at_speech_snr(x, slice(half, len(x) - half), snr_db, seed=i), y, src)
        for i, (x, y, src) in enumerate(clean)
    ]
    base = StageConfig.from_settings(settings)
    conditions = {}
    for name, clips in (("clean", clean), ("noisy", noisy)):
        for nr in (False, True):
            cfg = StageConfig(**{**base.__dict__, "noise_reduction": nr})
            conditions[f"{name}_{'on' if nr else 'off'}"] = evaluate(model, clips, cfg)
    d_clean = conditions["clean_on"]["ua"] - conditions["clean_off"]["ua"]
    d_noisy = conditions["noisy_on"]["ua"] - conditions["noisy_off"]["ua"]
    keep = d_clean >= 0 and d_noisy >= 0
    result = {
        "protocol": __doc__.strip().splitlines()[0],
        "model_dir": settings.model_dir.name,
        "labels": list(model.labels),
        "actors": [f"ravdess_{a:02d}" for a in ids],
        "clips": len(clean),
        "snr_db": snr_db,
        "stage_config": {k: v for k, v in base.__dict__.items() if k != "noise_reduction"},
        "conditions": conditions,
        "delta_ua_clean": d_clean,
        "delta_ua_noisy": d_noisy,
        "decision": (
            "noise reduction ON by default: it does not lower UA on clean or noisy speech"
            if keep
            else "noise reduction OFF by default: it lowers UA on "
            + " and ".join(n for n, d in (("clean", d_clean), ("noisy", d_noisy)) if d < 0)
            + " speech"
        ),
        "default_noise_reduction": keep,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "denoise.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / "denoise.png")
    click.echo(json.dumps({k: v for k, v in result.items() if k != "stage_config"}, indent=2))


if __name__ == "__main__":
    main()
