"""Does noise reduction help the emotion model? Measured on RAVDESS, clean and noisy.

    python -m benchmarks.denoise_eval [--data ../shared/data] [--snr 10]
        [--folds 0,1,2,3,4,5] [--model-dir DIR] [--out benchmarks/results]

A fixed set of RAVDESS utterances (every clip of the chosen cross-validation folds' test actors
whose emotion maps onto the model's classes) goes through the real stage code
(:class:`~callsense.processors.stages.SpeakerPipeline`: VAD, windows, with ``noise_reduction``
off and on) and is scored by a head of the shipped model's configuration that never saw its
actor (see :func:`fold_models`), in two conditions:

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
    pipe = SpeakerPipeline(cfg, SR, role="customer")
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


def evaluate_sets(
    sets: list[tuple[Any, list[tuple[np.ndarray, int, str]]]], cfg: StageConfig
) -> dict[str, Any]:
    """Pool the clip predictions of every (model, clips) set; score them together."""
    from tqdm import tqdm

    labels = list(sets[0][0].labels)
    ys, preds = [], []
    windowless = n_windows = 0
    t0 = time.perf_counter()
    for model, clips in sets:
        for x, label, _src in tqdm(clips, desc=f"nr={cfg.noise_reduction}"):
            wins = clip_windows(x, cfg)
            ys.append(label)
            if not wins:
                windowless += 1
                preds.append(-1)
                continue
            n_windows += len(wins)
            probs = model.predict(wins, sample_rate=SR)
            preds.append(int(np.argmax(probs.mean(axis=0))))
    out = scores(np.array(ys), np.array(preds), len(labels))
    out["recall"] = dict(zip(labels, out["recall"], strict=True))
    out["correct"] = [int(p == y) for p, y in zip(preds, ys, strict=True)]
    out.update(clips=len(ys), windows=n_windows, windowless_clips=windowless,
               seconds=round(time.perf_counter() - t0, 1))  # fmt: skip
    return out


def paired(off: list[int], on: list[int]) -> dict[str, Any]:
    """Clips only one setting gets right, and the exact McNemar (sign test) two-sided p."""
    from math import comb

    b = sum(1 for x, y in zip(off, on, strict=True) if x and not y)  # right only with NR off
    c = sum(1 for x, y in zip(off, on, strict=True) if y and not x)  # right only with NR on
    n = b + c
    p = min(1.0, 2 * sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n) if n else 1.0
    return {"right_only_off": b, "right_only_on": c, "mcnemar_p": p}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def hash_seed(src: str) -> int:
    """A stable per-clip seed (odd → pink noise, even → white)."""
    import zlib

    return zlib.crc32(src.encode())


def fold_models(
    model: Any, folds: list[int], data: Path, cache: Path
) -> list[tuple[Any, list[int]]]:
    """Speaker-independent views of the shipped model: for each requested fold, a model whose
    heads never saw that fold's test actors, with those actors.

    * A shipped fold ensemble (``ensemble`` = k × seeds): its heads are stored fold by fold and
      fold ``i`` tests the i-th contiguous group of sorted actors
      (``callsense.models.data.speaker_folds``); those heads are used.
    * A shipped linear head refit on all actors (``training.config.fit`` = all speakers): the fold
      heads of that very configuration (same encoder features, C, training variants, folds) are
      re-fitted with the project's training code, ``cross_validate_linear``, on the encoder
      cache (``var/features``; built on first use).

    Scoring the shipped model itself on RAVDESS would test on its training speakers.
    """
    import ast

    from callsense.models.inference import EmotionModel

    training = model.config.get("training") or {}
    if isinstance(training, str):
        training = ast.literal_eval(training)
    n_folds = int(training.get("folds", 0) or 0)
    tcfg = training.get("config") or {}
    if n_folds >= 2 and len(model.heads) % n_folds == 0:
        per_fold = len(model.heads) // n_folds
        actors = list(range(1, 25))
        return [
            (
                EmotionModel(model.backbone, model.heads[i * per_fold : (i + 1) * per_fold],
                             model.config),
                actors[round(i * 24 / n_folds) : round((i + 1) * 24 / n_folds)],
            )
            for i in folds
        ]  # fmt: skip
    if n_folds < 2 or tcfg.get("head") != "stats_linear":
        raise click.ClickException(
            f"the model has {len(model.heads)} head(s) and no fold structure to rebuild; "
            "evaluate a fold ensemble (--model-dir) so no clip is scored by a head trained on "
            "its actor"
        )
    from callsense.models.audio import TARGET_LEVEL_DBFS
    from callsense.models.data import read_manifest
    from callsense.models.features import extract
    from callsense.models.labels import LabelSet
    from callsense.models.train import build_featureset, cross_validate_linear, make_folds

    ls = LabelSet.from_dict(model.config["label_set"])
    window = model.window_samples
    variants = list(tcfg["train_variants"])

    def loader(its: list, v: str) -> tuple[np.ndarray, np.ndarray]:
        return extract(its, model.backbone, v, window, TARGET_LEVEL_DBFS, cache)

    items = read_manifest(data / "ravdess" / "MANIFEST.csv")
    fs, _excluded = build_featureset(
        items, ls, loader, list(dict.fromkeys(["clean", "tel", *variants]))
    )
    fold_list = make_folds(fs, n_folds, 0)
    res = cross_validate_linear(fs, list(ls.labels), fold_list, float(tcfg["C"]), tuple(variants))
    out = []
    for i in folds:
        test = res["folds"][i]["test_speakers"]
        out.append(
            (
                EmotionModel(model.backbone, [res["_heads"][i]], model.config),
                sorted(int(str(t).rsplit("_", 1)[-1]) for t in test),
            )
        )
    return out


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
@click.option(
    "--folds",
    default="0,3",
    show_default=True,
    help="Cross-validation folds to evaluate (fold i = actors 4i+1..4i+4).",
)
@click.option("--snr", "snr_db", type=float, default=10.0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=HERE / "results", show_default=True)  # fmt: skip
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Fold ensemble to evaluate (default: the configured model).")  # fmt: skip
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path),
              default=Path("var/features"), show_default=True,
              help="Encoder hidden-state cache of the training code.")  # fmt: skip
def main(
    data: Path, folds: str, snr_db: float, out: Path, model_dir: Path | None, cache: Path
) -> None:
    """Emotion accuracy with noise reduction off/on, on clean and noisy RAVDESS speech."""
    import torch
    from callsense.models import EmotionModel

    from callsense.settings import get_settings

    torch.set_num_threads(1)
    settings = get_settings()
    model_dir = model_dir or settings.model_dir
    model = EmotionModel.load(model_dir, threads=1)
    fold_ids = [int(f) for f in folds.split(",")]
    views = fold_models(model, fold_ids, data, cache)
    base = StageConfig.from_settings(settings)
    sets = []  # (fold model, clean clips, noisy clips)
    for m, ids in views:
        clean = load_set(data, ids, list(model.labels))
        if not clean:
            raise click.ClickException(f"no RAVDESS clips for actors {ids} under {data}")
        half = SR // 2
        noisy = [
            (add_noise_at_speech_snr(x, slice(half, len(x) - half), snr_db, seed=hash_seed(src)),
             y, src)
            for x, y, src in clean
        ]  # fmt: skip
        sets.append((m, clean, noisy))
    conditions = {}
    for name in ("clean", "noisy"):
        for nr in (False, True):
            cfg = StageConfig(**{**base.__dict__, "noise_reduction": nr})
            conditions[f"{name}_{'on' if nr else 'off'}"] = evaluate_sets(
                [(m, c if name == "clean" else n) for m, c, n in sets], cfg
            )
    tests = {
        name: paired(conditions[f"{name}_off"]["correct"], conditions[f"{name}_on"]["correct"])
        for name in ("clean", "noisy")
    }
    for c in conditions.values():
        c.pop("correct")
    d_clean = conditions["clean_on"]["ua"] - conditions["clean_off"]["ua"]
    d_noisy = conditions["noisy_on"]["ua"] - conditions["noisy_off"]["ua"]
    keep = d_clean >= 0 and d_noisy >= 0
    result = {
        "protocol": __doc__.strip().splitlines()[0],
        "model_config": {k: model.config.get(k) for k in ("encoder", "head", "ensemble")},
        "model_heads_sha256": _sha256(model_dir / "heads.pt")[:16],
        "shipped_model_heads_sha256": _sha256(settings.model_dir / "heads.pt")[:16],
        "labels": list(model.labels),
        "folds": fold_ids,
        "actors": [f"ravdess_{a:02d}" for _m, ids in views for a in ids],
        "clips": sum(len(c) for _m, c, _n in sets),
        "evaluation": "speaker-independent: each fold's clips are scored by the ensemble heads "
        "trained without that fold's actors",
        "snr_db": snr_db,
        "stage_config": {k: v for k, v in base.__dict__.items() if k != "noise_reduction"},
        "conditions": conditions,
        "paired": tests,
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
