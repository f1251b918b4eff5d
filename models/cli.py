"""``callsense train``, ``callsense evaluate`` and ``callsense manifest``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

LABEL_HELP = "Label set: callcenter4 (angry/happy/neutral/sad, calm→neutral), ravdess8, or a,b,c."


def _csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command("manifest")
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def manifest_cmd(sources: tuple[str, ...], out: Path) -> None:
    """Write a manifest CSV (path,speaker,emotion,corpus) for downloaded corpora.

    SOURCES are CORPUS DIRECTORY pairs, e.g. ``ravdess ~/ravdess ased ~/ASED_V1``: several
    pairs give one manifest over all of them (for training on a union and for
    ``train --protocol loco``). A CORPUS may also be ``manifest`` with a CSV path, to include an
    existing manifest. Corpora: ravdess, cremad, tess, savee, emodb, ased, emospeech,
    emotiontts."""
    from callsense.models.data import READERS, manifest_rows, write_manifest

    if len(sources) % 2:
        raise click.UsageError("SOURCES must be CORPUS DIRECTORY pairs")
    rows: list[dict[str, str]] = []
    for corpus, where in zip(sources[::2], sources[1::2], strict=True):
        if corpus != "manifest" and corpus not in READERS:
            raise click.BadParameter(f"unknown corpus {corpus!r}; known: {', '.join(READERS)}")
        if not Path(where).exists():
            raise click.BadParameter(f"{where} does not exist")
        try:
            got = manifest_rows(corpus, Path(where))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{corpus}: {len(got)} clips, {len({r['speaker'] for r in got})} speakers")
        rows += got
    n = write_manifest(rows, out, out.parent)
    click.echo(f"wrote {n} rows to {out}")


@click.command("train")
@click.option("--manifest", "manifest", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--labels", "label_set", default="callcenter4", show_default=True, help=LABEL_HELP)
@click.option("--folds", default=6, show_default=True, help="Speaker-disjoint folds (≥ 2).")
@click.option(
    "--protocol",
    type=click.Choice(["speakers", "loco"]),
    default="speakers",
    show_default=True,
    help="speakers: --folds speaker-disjoint folds; loco: leave one corpus out (one fold per "
    "corpus of the manifest, its speakers scored as causal streams).",
)
@click.option(
    "--corpora",
    default="",
    help="Only these corpora of the manifest (comma separated), e.g. the licence-compatible "
    "ones for a shipped model; the encoder cache is the whole manifest's, so subsets reuse it.",
)
@click.option(
    "--calibration",
    type=click.Choice(["speakers", "corpus", "corpora"]),
    default="speakers",
    show_default=True,
    help="loco: the temperature is fitted on validation speakers of every training corpus "
    "(speakers), or on one whole training corpus held out of the first fit (corpus: the one "
    "with the fewest speakers), i.e. on speech of a corpus the head has not seen; corpora: "
    "every training corpus in turn held out of a nested fit, each weighted equally.",
)
@click.option(
    "--balance",
    type=click.Choice(["class", "corpus"]),
    default="class",
    show_default=True,
    help="linear/refnorm heads: class: classes weigh the same; corpus: every training corpus "
    "weighs the same, and within it every class it has.",
)
@click.option(
    "--encoder",
    default="whisper-base",
    show_default=True,
    help="whisper-base, or hf:<name or local path> (offline).",
)
@click.option("--layers", default="1,2,3,4", show_default=True, help="Encoder layers to mix.")
@click.option(
    "--variants",
    default="clean,tel,aug1,aug2",
    show_default=True,
    help="Training augmentation variants (clean, tel, aug<k>).",
)
@click.option(
    "--head",
    "head_kind",
    type=click.Choice(["refnorm", "linear", "attentive"]),
    default="refnorm",
    show_default=True,
    help="refnorm: mean/std stats + logistic regression with per-speaker neutral-reference "
    "normalisation (see models/speaker_norm.py); linear: the same without it; attentive: "
    "attentive pooling MLP.",
)
@click.option(
    "--prior",
    default=4.0,
    show_default=True,
    help="refnorm: pseudo-windows of the training neutral mean in each speaker's reference.",
)
@click.option(
    "--stats",
    type=click.Choice(["mean_std", "mean"]),
    default="mean_std",
    show_default=True,
    help="refnorm: pooled statistics the head reads: every encoder layer's mean and standard "
    "deviation over time, or its mean only.",
)
@click.option("--c", "c_reg", default=0.01, show_default=True, help="Inverse L2 strength (linear).")
@click.option(
    "--refit/--no-refit",
    default=True,
    show_default=True,
    help="linear: after the temperature is fitted on validation speakers, refit the "
    "head on training + validation speakers.",
)
@click.option("--epochs", default=40, show_default=True, help="Max epochs (attentive).")
@click.option("--seeds", default=1, show_default=True, help="Heads per fold (ensembled).")
@click.option("--seed", default=0, show_default=True)
@click.option("--window-s", default=3.0, show_default=True)
@click.option(
    "--out",
    "out_dir",
    default=Path("var/train"),
    type=click.Path(path_type=Path),
    show_default=True,
    help="Results: cv.json, curves.png, confusion PNGs.",
)
@click.option(
    "--save-model",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the ensemble of fold heads as a model directory.",
)
@click.option(
    "--cache",
    default=Path("var/features"),
    type=click.Path(path_type=Path),
    show_default=True,
    help="Encoder hidden-state cache.",
)
def train_cmd(
    manifest: Path,
    label_set: str,
    folds: int,
    protocol: str,
    corpora: str,
    calibration: str,
    balance: str,
    encoder: str,
    layers: str,
    variants: str,
    head_kind: str,
    prior: float,
    stats: str,
    c_reg: float,
    refit: bool,
    epochs: int,
    seeds: int,
    seed: int,
    window_s: float,
    out_dir: Path,
    save_model: Path | None,
    cache: Path,
) -> None:
    """Speaker-independent K-fold training: per-fold and mean±std metrics, curves, model."""
    import torch
    from callsense.models.audio import TARGET_LEVEL_DBFS
    from callsense.models.data import read_manifest, split_unknown_speakers
    from callsense.models.encoder import build_backbone, parse_encoder
    from callsense.models.features import extract, extract_pooled
    from callsense.models.inference import save_artifact
    from callsense.models.labels import get_label_set
    from callsense.models.metrics import plot_confusion, write_json
    from callsense.models.train import (
        TrainConfig,
        build_featureset,
        cross_validate,
        cross_validate_linear,
        cross_validate_refnorm,
        dump_results,
        fit_linear,
        make_folds,
        plot_curves,
        plot_folds,
        row_weights,
    )

    torch.set_num_threads(1)
    ls = get_label_set(label_set)
    spec = parse_encoder(encoder, [int(v) for v in _csv_list(layers)])
    backbone = build_backbone(spec).eval()
    window = int(round(window_s * 16000))
    items = split_unknown_speakers(read_manifest(manifest))
    train_variants = _csv_list(variants)
    all_variants = list(dict.fromkeys(["clean", "tel", *train_variants]))

    def loader(its: list, v: str) -> tuple[np.ndarray, np.ndarray]:
        return extract(its, backbone, v, window, TARGET_LEVEL_DBFS, cache)

    def pooled_loader(its: list, v: str) -> np.ndarray:
        return extract_pooled(its, backbone, v, window, TARGET_LEVEL_DBFS, cache)

    linear = head_kind in ("linear", "refnorm")  # these read pooled states only
    fs, excluded = build_featureset(
        items, ls, loader, all_variants,
        pooled_loader=pooled_loader if linear else None, layers=len(spec["layers"]),
    )  # fmt: skip
    if excluded:
        click.echo(f"labels outside {ls.name} (excluded): {json.dumps(excluded)}")
    if corpora:
        wanted = _csv_list(corpora)
        unknown = sorted(set(wanted) - set(fs.corpora.tolist()))
        if unknown:
            missing = ", ".join(unknown)
            raise click.BadParameter(f"not in the manifest: {missing}", param_hint="--corpora")
        fs = fs.subset(np.flatnonzero(np.isin(fs.corpora, wanted)))
    cfg = TrainConfig(epochs=epochs, seed=seed, train_variants=tuple(train_variants))
    fold_list = make_folds(fs, folds, seed, protocol, calibration)
    folds = len(fold_list)
    t0 = time.time()
    if head_kind == "refnorm":
        res = cross_validate_refnorm(
            fs, list(ls.labels), fold_list, c_reg, tuple(train_variants), prior,
            balance=balance, calibration=calibration, stats=stats,
        )  # fmt: skip
    elif head_kind == "linear":
        res = cross_validate_linear(
            fs, list(ls.labels), fold_list, c_reg, tuple(train_variants),
            refit_train_val=refit, balance=balance, calibration=calibration,
        )  # fmt: skip
    else:
        res = cross_validate(fs, list(ls.labels), fold_list, cfg, seeds=seeds)
    res.update(
        {
            "manifest": str(manifest),
            "protocol": protocol,
            "calibration": calibration,
            "corpora": sorted(set(fs.corpora.tolist())),
            "label_set": ls.to_dict(),
            "excluded_labels": excluded,
            "encoder": spec,
            "seconds": round(time.time() - t0, 1),
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_results(res, out_dir / "cv.json")
    plot_folds(res, out_dir / "folds.png", f"{ls.name}: UA per test fold")
    if res["histories"]:
        plot_curves(res["histories"], out_dir / "curves.png", f"{ls.name}: {folds}-fold training")
    for v, s in res["summary"].items():
        plot_confusion(
            np.array(s["pooled"]["confusion"]),
            list(ls.labels),
            out_dir / f"confusion_{v}.png",
            f"{ls.name} {v}: pooled over {folds} test folds",
        )
        click.echo(
            f"{v}: UA {100 * s['ua_mean']:.1f} ± {100 * s['ua_std']:.1f}  "
            f"macro-F1 {100 * s['macro_f1_mean']:.1f}  WA {100 * s['wa_mean']:.1f}  "
            f"ECE {s['ece_mean']:.3f}"
            + (f"  angry AUC {s['angry_auc_mean']:.3f}" if "angry_auc_mean" in s else "")
        )
        for corpus, m in s.get("by_corpus", {}).items():
            click.echo(f"  {corpus}: UA {100 * m['ua']:.1f}  ECE {m['ece']:.3f}  (pooled)")
    for f in res["folds"]:
        tested = f.get("corpus") or ",".join(f["test_speakers"])
        click.echo(
            f"  fold {f['fold']} test {tested}: "
            + "  ".join(f"{v} {100 * f[v]['ua']:.1f}" for v in res["summary"])
        )
    if save_model:
        heads = res["_heads"]
        training_cfg = cfg.to_dict()
        if head_kind == "refnorm":
            from callsense.models.speaker_norm import fit_refnorm_head

            heads = [
                fit_refnorm_head(
                    res["_pooled"],
                    np.arange(len(fs.y)),
                    fs.y,
                    fs.speakers,
                    heads[0].hparams["n_layers"],
                    len(ls.labels),
                    res["_reference"],
                    c_reg,
                    prior,
                    train_variants,
                    weights=row_weights(fs, np.arange(len(fs.y)), balance, len(ls.labels)),
                    stats=stats,
                )
            ]
            training_cfg = {**res["config"], "fit": "all speakers; temperature = mean over folds"}
        elif head_kind == "linear":
            pooled = res["_pooled"]
            x = np.concatenate([pooled[v] for v in train_variants])
            y = np.concatenate([fs.y] * len(train_variants))
            w = row_weights(fs, np.arange(len(fs.y)), balance, len(ls.labels))
            if w is not None:
                w = np.tile(w, len(train_variants))
            n_layers = heads[0].hparams["n_layers"]
            heads = [fit_linear(x, y, len(ls.labels), n_layers, c_reg, sample_weight=w)]
            training_cfg = {**res["config"], "fit": "all speakers; temperature = mean over folds"}
        config = {
            "encoder": {**spec, "layers": sorted(spec["layers"])},
            "labels": list(ls.labels),
            "label_set": ls.to_dict(),
            "window_s": window_s,
            "sample_rate": 16000,
            "level_dbfs": TARGET_LEVEL_DBFS,
            "temperature": res["temperature"],
            "head": heads[0].hparams,
            "ensemble": len(heads),
            "training": {
                "manifest": manifest.name,
                "corpora": sorted(set(fs.corpora.tolist())),
                "protocol": protocol,
                "folds": folds,
                "config": training_cfg,
                "cv_summary": {
                    v: {
                        **{k: s[k] for k in ("ua_mean", "ua_std", "macro_f1_mean")},
                        **(
                            {"ua_by_corpus": {c: m["ua"] for c, m in s["by_corpus"].items()}}
                            if "by_corpus" in s
                            else {}
                        ),
                    }
                    for v, s in res["summary"].items()
                },
            },
        }
        save_artifact(save_model, config, heads)
        write_json({"summary": config["training"]["cv_summary"]}, save_model / "cv_summary.json")
        click.echo(f"saved model ({len(heads)} heads) to {save_model}")


@click.command("evaluate")
@click.option("--manifest", "manifest", required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--model",
    "model_dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Model directory (default: the shipped model).",
)
@click.option(
    "--out",
    "out_dir",
    default=Path("var/evaluate"),
    type=click.Path(path_type=Path),
    show_default=True,
)
@click.option(
    "--channel",
    type=click.Choice(["clean", "telephone"]),
    default="clean",
    show_default=True,
    help="Pass test audio through an 8 kHz mu-law channel first.",
)
@click.option("--int8", is_flag=True, help="Use the int8 encoder path.")
@click.option("--speakers", default="", help="Only these speakers (comma separated).")
@click.option(
    "--speaker-history/--no-speaker-history",
    default=True,
    show_default=True,
    help="Models with per-speaker normalisation: classify each speaker's clips as one causal "
    "stream (random order, --seed); off = every clip as its speaker's first.",
)
@click.option("--seed", default=0, show_default=True, help="Order of each speaker's clips.")
def evaluate_cmd(
    manifest: Path,
    model_dir: Path | None,
    out_dir: Path,
    channel: str,
    int8: bool,
    speakers: str,
    speaker_history: bool,
    seed: int,
) -> None:
    """Evaluate a model on any manifest: UA, WA, macro-F1, per-class P/R/F1, confusion, ECE."""
    import torch
    from callsense.models.data import read_manifest
    from callsense.models.evaluate import evaluate_items
    from callsense.models.inference import EmotionModel
    from callsense.models.metrics import plot_confusion, write_json

    torch.set_num_threads(1)
    model = EmotionModel.load(model_dir, int8=int8, threads=1)
    items = read_manifest(manifest)
    if speakers:
        keep = set(_csv_list(speakers))
        items = [it for it in items if it.speaker in keep]
    metrics = evaluate_items(
        model, items, channel=channel, speaker_history=speaker_history, seed=seed
    )
    metrics["manifest"] = str(manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(metrics, out_dir / "metrics.json")
    plot_confusion(
        np.array(metrics["confusion"]),
        model.labels,
        out_dir / "confusion.png",
        f"{manifest.name} ({channel})",
    )
    click.echo(
        f"n={metrics['n']} UA {100 * metrics['ua']:.1f}  WA {100 * metrics['wa']:.1f}  "
        f"macro-F1 {100 * metrics['macro_f1']:.1f}  ECE {metrics['ece']:.3f}"
    )
    if metrics["excluded"]:
        click.echo(f"excluded (label outside the model's set): {json.dumps(metrics['excluded'])}")
    click.echo(f"wrote {out_dir / 'metrics.json'}")
