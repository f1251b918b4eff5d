"""Regenerate the model card's leave-one-corpus-out tables and plot from committed results.

    python -m benchmarks.model_card

Reads every ``benchmarks/results/models/loco_*.json`` (written by ``callsense train --protocol
loco``, copied here under the configuration's name), writes the tables between the
``<!-- loco:start -->`` and ``<!-- loco:end -->`` markers of ``models/MODEL_CARD.md`` and the
plot ``benchmarks/results/models/loco_configs.png``. The card's bars come from the issue that
asked for LOCO: mean UA >= 55, no corpus below 40, mean angry-vs-rest AUC >= 0.85, mean ECE <= 0.08.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "models"
CARD = REPO / "models" / "MODEL_CARD.md"
START, END = "<!-- loco:start -->", "<!-- loco:end -->"
BARS = {"ua_mean": 0.55, "ua_min": 0.40, "auc_mean": 0.85, "ece_mean": 0.08}


def load(results: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """Configuration name (file stem without ``loco_``) -> results, in name order."""
    out = {}
    for f in sorted(results.glob("loco_*.json")):
        out[f.stem.removeprefix("loco_")] = json.loads(f.read_text())
    return out


def per_corpus(res: dict[str, Any], variant: str = "clean") -> dict[str, dict[str, Any]]:
    return {f["corpus"]: f[variant] for f in res["folds"] if variant in f}


def summary(res: dict[str, Any], variant: str = "clean") -> dict[str, float]:
    rows = per_corpus(res, variant).values()
    aucs = [r["angry_auc"] for r in rows if r.get("angry_auc") is not None]
    return {
        "ua_mean": float(np.mean([r["ua"] for r in rows])),
        "ua_min": float(min(r["ua"] for r in rows)),
        "f1_mean": float(np.mean([r["macro_f1"] for r in rows])),
        "auc_mean": float(np.mean(aucs)) if aucs else float("nan"),
        "ece_mean": float(np.mean([r["ece"] for r in rows])),
    }


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def _meets(s: dict[str, float]) -> str:
    ok = (
        s["ua_mean"] >= BARS["ua_mean"]
        and s["ua_min"] >= BARS["ua_min"]
        and s["auc_mean"] >= BARS["auc_mean"]
        and s["ece_mean"] <= BARS["ece_mean"]
    )
    return "yes" if ok else "no"


def _tel(res: dict[str, Any]) -> str:
    if not per_corpus(res, "tel"):
        return "–"
    s = summary(res, "tel")
    return f"{_pct(s['ua_mean'])} / {_pct(s['ua_min'])}"


def configs_table(runs: dict[str, dict[str, Any]], variant: str = "clean") -> str:
    corpora = sorted({c for r in runs.values() for c in per_corpus(r, variant)})
    head = ["configuration", "trained on", "head", "layers", "statistics", "C", "balance",
            "calibration", "mean UA", "min UA", "macro-F1", "angry AUC", "ECE",
            *[f"UA {c}" for c in corpora], "telephone mean / min UA", "bars met"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in runs.items():
        s = summary(r, variant)
        pc = per_corpus(r, variant)
        cfg = r.get("config", {})
        lines.append(
            "| " + " | ".join([
                name, ", ".join(r.get("corpora", [])), cfg.get("head", "?"),
                ",".join(map(str, r.get("encoder", {}).get("layers", []))),
                cfg.get("stats", "mean_std").replace("_", "+"),
                f"{cfg['C']:g}" if "C" in cfg else "–",
                cfg.get("balance", "?"), r.get("calibration", "speakers"), _pct(s["ua_mean"]),
                _pct(s["ua_min"]),
                _pct(s["f1_mean"]), f"{s['auc_mean']:.3f}", f"{s['ece_mean']:.3f}",
                *[_pct(pc[c]["ua"]) if c in pc else "–" for c in corpora], _tel(r),
                _meets(s),
            ]) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def corpus_table(res: dict[str, Any], variant: str = "clean") -> str:
    head = ["left-out corpus", "clips", "classes", "UA", "macro-F1", "ECE", "angry AUC",
            "alert precision", "alert recall"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for corpus, m in per_corpus(res, variant).items():
        alert = m.get("angry_alert") or {}
        auc = m.get("angry_auc")
        lines.append(
            "| " + " | ".join([
                corpus, str(m["n"]), ", ".join(m["classes_present"]), _pct(m["ua"]),
                _pct(m["macro_f1"]), f"{m['ece']:.3f}", "–" if auc is None else f"{auc:.3f}",
                _pct(alert.get("precision")), _pct(alert.get("recall")),
            ]) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def plot(runs: dict[str, dict[str, Any]], out: Path, variant: str = "clean") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = sorted({c for r in runs.values() for c in per_corpus(r, variant)})
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(corpora), 3.8))
    width = 0.8 / max(1, len(runs))
    for i, (name, r) in enumerate(runs.items()):
        pc = per_corpus(r, variant)
        xs = [j + i * width for j, c in enumerate(corpora) if c in pc]
        ax.bar(xs, [100 * pc[c]["ua"] for c in corpora if c in pc], width, label=name)
    ax.axhline(40, color="k", lw=0.8, ls=":", label="no corpus below 40")
    ax.axhline(25, color="grey", lw=0.8, ls="--", label="chance (4 classes)")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(corpora))], corpora)
    ax.set_ylabel("UA on the left-out corpus (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Leave-one-corpus-out: each corpus scored by a model trained without it")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def render(runs: dict[str, dict[str, Any]], chosen: str) -> str:
    return "\n\n".join([
        f"Configurations (clean test audio; mean over left-out corpora):\n\n{configs_table(runs)}",
        f"Per left-out corpus, configuration `{chosen}` (alert = windows the anger rules count: "
        f"arg-max angry at confidence ≥ 0.45):\n\n{corpus_table(runs[chosen])}",
        f"Telephone channel (8 kHz mu-law), configuration `{chosen}`:\n\n"
        f"{corpus_table(runs[chosen], 'tel')}"
        if any("tel" in f for f in runs[chosen]["folds"]) else "",
        "![UA per left-out corpus](../benchmarks/results/models/loco_configs.png)",
    ]).replace("\n\n\n\n", "\n\n")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chosen", help="configuration detailed per corpus (default: best mean)")
    parser.add_argument("--check", action="store_true", help="fail if the card is not current")
    args = parser.parse_args()
    runs = load()
    if not runs:
        raise SystemExit(f"no loco_*.json in {RESULTS}")
    chosen = args.chosen or max(runs, key=lambda n: summary(runs[n])["ua_mean"])
    block = f"{START}\n{render(runs, chosen)}\n{END}"
    text = CARD.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{CARD} has no {START} ... {END} block")
    new = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    if args.check:
        stale = f"{CARD} is out of date: python -m benchmarks.model_card"
        raise SystemExit(0 if new == text else stale)
    CARD.write_text(new)
    plot(runs, RESULTS / "loco_configs.png")
    print(block)


if __name__ == "__main__":  # pragma: no cover
    main()
