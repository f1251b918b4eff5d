"""How far one temperature can take out-of-corpus calibration (leave-one-corpus-out).

    python -m benchmarks.calibration_bound --manifest var/corpora/loco5.csv

For the shipped head configuration (speaker-normalised, corpora balanced; its encoder layers,
statistics, training copies, C and prior read from the shipped ``model.json``, as ``callsense
train --protocol loco --head refnorm --balance corpus --calibration corpus`` with those
options; ``--layers/--stats/--variants/--c`` override them), per left-out corpus: the temperature
the protocol fits (on the training corpus with the fewest speakers), the temperature that would
be best *on the test corpus itself* (hindsight, not a method), and the ECE of each; then the
single temperature that minimises the mean ECE over all left-out corpora in hindsight. If even
that misses a bar, no global temperature can meet it. JSON and a plot in
``benchmarks/results/models/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.model_card import RESULTS


def shipped_config() -> dict[str, Any]:
    """The shipped artefact's head configuration (the settings' model directory)."""
    from callsense.settings import get_settings

    cfg = json.loads((get_settings().model_dir / "model.json").read_text())
    train = cfg["training"]["config"]
    return {
        "layers": list(cfg["encoder"]["layers"]),
        "stats": cfg["head"].get("stats", "mean_std"),
        "variants": list(train["train_variants"]),
        "c": float(train["C"]),
        "prior": float(cfg["head"]["prior"]),
    }


def loco_logits(
    manifest: Path,
    cache: Path,
    c: float,
    prior: float,
    layers: tuple[int, ...],
    stats: str,
    variants: tuple[str, ...],
) -> list[dict]:
    """Per LOCO fold: the validation logits the temperature is fitted on and the clean test
    logits (head refitted on training + validation, as the CLI does)."""
    import torch
    from callsense.models.audio import TARGET_LEVEL_DBFS
    from callsense.models.data import read_manifest, split_unknown_speakers
    from callsense.models.encoder import build_backbone, parse_encoder
    from callsense.models.features import extract, extract_pooled
    from callsense.models.labels import get_label_set
    from callsense.models.speaker_norm import fit_refnorm_head, refnorm_logits
    from callsense.models.train import build_featureset, fold_indices, make_folds, row_weights
    from tqdm import tqdm

    torch.set_num_threads(1)
    labels = list(get_label_set("callcenter4").labels)
    spec = parse_encoder("whisper-base", list(layers))
    backbone = build_backbone(spec).eval()
    items = split_unknown_speakers(read_manifest(manifest))

    def states(its: list, v: str) -> Any:
        return extract(its, backbone, v, 48000, TARGET_LEVEL_DBFS, cache)

    def pooled_states(its: list, v: str) -> Any:
        return extract_pooled(its, backbone, v, 48000, TARGET_LEVEL_DBFS, cache)

    fs, _ = build_featureset(items, get_label_set("callcenter4"), states, list(variants),
                             pooled_loader=pooled_states, layers=len(layers))  # fmt: skip
    pooled = fs.pooled()
    ref = [labels.index("neutral")]
    out = []
    for fold in tqdm(make_folds(fs, 6, 0, "loco", "corpus"), desc="LOCO folds", unit="fold"):
        tr, va, te = fold_indices(fs, fold)

        def fit(rows: np.ndarray) -> Any:
            w = row_weights(fs, rows, "corpus", len(labels))
            return fit_refnorm_head(pooled, rows, fs.y, fs.speakers, len(layers), len(labels),
                                    ref, c, prior, list(variants), weights=w,
                                    stats=stats)  # fmt: skip

        def logits(head: Any, rows: np.ndarray, seed: int = fold.index) -> np.ndarray:
            return refnorm_logits(head, pooled["clean"][rows], fs.speakers[rows], seed=seed)

        val = logits(fit(tr), va)
        test = logits(fit(np.concatenate([tr, va])), te)
        out.append({"corpus": fold.name, "val_corpora": sorted(set(fs.corpora[va].tolist())),
                    "val": (val, fs.y[va]), "test": (test, fs.y[te])})  # fmt: skip
    return out


def bound(folds: list[dict]) -> dict[str, Any]:
    from callsense.models.confidence import fit_temperature, softmax
    from callsense.models.metrics import expected_calibration_error as ece

    grid = np.round(np.arange(1.0, 12.01, 0.25), 2)
    per = []
    for f in folds:
        (vl, vy), (tl, ty) = f["val"], f["test"]
        t_fit, t_best = fit_temperature(vl, vy), fit_temperature(tl, ty)
        acc = float((tl.argmax(1) == ty).mean())
        per.append({
            "corpus": f["corpus"], "calibration_corpora": f["val_corpora"], "accuracy": acc,
            "t_fitted": round(t_fit, 2), "ece_fitted": ece(softmax(tl, t_fit), ty),
            "confidence_fitted": float(softmax(tl, t_fit).max(1).mean()),
            "t_hindsight": round(t_best, 2), "ece_hindsight": ece(softmax(tl, t_best), ty),
            "ece_by_t": [ece(softmax(tl, t), ty) for t in grid],
        })  # fmt: skip
    mean_by_t = np.mean([p["ece_by_t"] for p in per], axis=0)
    k = int(mean_by_t.argmin())
    return {
        "grid": grid.tolist(),
        "per_corpus": per,
        "mean_ece_fitted": float(np.mean([p["ece_fitted"] for p in per])),
        "mean_ece_hindsight_per_corpus": float(np.mean([p["ece_hindsight"] for p in per])),
        "best_single_t_hindsight": float(grid[k]),
        "mean_ece_best_single_t": float(mean_by_t[k]),
        "ece_at_best_single_t": {p["corpus"]: p["ece_by_t"][k] for p in per},
    }


def plot(res: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for p in res["per_corpus"]:
        ax.plot(res["grid"], p["ece_by_t"], lw=1, label=p["corpus"])
        ax.plot([p["t_fitted"]], [p["ece_fitted"]], "o", color=ax.lines[-1].get_color(), ms=4)
    ax.plot(res["grid"], np.mean([p["ece_by_t"] for p in res["per_corpus"]], axis=0), "k", lw=2,
            label=f"mean (best {res['mean_ece_best_single_t']:.3f})")  # fmt: skip
    ax.axhline(0.08, ls="--", color="grey", lw=1, label="bar 0.08")
    ax.set_xlabel("temperature")
    ax.set_ylabel("ECE on the left-out corpus")
    ax.set_title("One temperature for every corpus (dots: the fitted one)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path("var/features"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--layers", help="Encoder layers (default: the shipped model's)")
    ap.add_argument("--stats", choices=["mean", "mean_std"])
    ap.add_argument("--variants", help="Training copies, e.g. clean,tel")
    ap.add_argument("--c", type=float)
    args = ap.parse_args()
    t0 = time.time()
    cfg = shipped_config()
    if args.layers:
        cfg["layers"] = [int(v) for v in args.layers.split(",")]
    if args.variants:
        cfg["variants"] = args.variants.split(",")
    cfg.update({k: getattr(args, k) for k in ("stats", "c") if getattr(args, k) is not None})
    folds = loco_logits(args.manifest, args.cache, cfg["c"], cfg["prior"], tuple(cfg["layers"]),
                        cfg["stats"], tuple(cfg["variants"]))  # fmt: skip
    res = bound(folds)
    res["config"] = cfg
    res["seconds"] = round(time.time() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "calibration_bound.json").write_text(json.dumps(res, indent=1) + "\n")
    plot(res, args.out / "calibration_bound.png")
    for p in res["per_corpus"]:
        print(f"{p['corpus']:<11} acc {p['accuracy']:.2f}  fitted T {p['t_fitted']:5.2f} "
              f"(on {','.join(p['calibration_corpora'])}) ECE {p['ece_fitted']:.3f}  "
              f"hindsight T {p['t_hindsight']:5.2f} ECE {p['ece_hindsight']:.3f}")  # fmt: skip
    print(f"mean ECE fitted {res['mean_ece_fitted']:.3f}; best single T in hindsight "
          f"{res['best_single_t_hindsight']} -> mean ECE {res['mean_ece_best_single_t']:.3f}")


if __name__ == "__main__":
    main()
