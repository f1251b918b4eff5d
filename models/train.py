"""Training and speaker-independent cross-validation of the emotion head.

The encoder is frozen; its hidden states come from the on-disk cache
(:mod:`callsense.models.features`), one array per augmentation variant. Each epoch draws one
variant per training clip at random, so augmentation costs no extra encoder time. Early stopping
watches validation UA (validation speakers are disjoint from training and test speakers),
temperature scaling is fitted on the validation logits.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from callsense.models.confidence import fit_temperature, softmax
from callsense.models.data import Fold, Item, corpus_folds, filter_items, speaker_folds
from callsense.models.head import EmotionHead, StatsLinearHead
from callsense.models.labels import LabelSet
from callsense.models.metrics import evaluate_predictions, unweighted_accuracy
from tqdm import tqdm


@dataclass
class TrainConfig:
    epochs: int = 40
    patience: int = 10
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    proj: int = 256
    dropout: float = 0.3
    frame_drop: float = 0.15  # fraction of frames hidden from pooling during training
    label_smoothing: float = 0.05
    seed: int = 0
    train_variants: tuple[str, ...] = ("clean", "tel", "aug1", "aug2")

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["train_variants"] = list(self.train_variants)
        return d


@dataclass
class FeatureSet:
    """Cached states for N clips, several variants, plus integer labels."""

    states: dict[str, np.ndarray]  # variant -> (N, L, T, D) float16 (empty: pooled only)
    masks: dict[str, np.ndarray]  # variant -> (N, T) bool
    y: np.ndarray
    speakers: np.ndarray
    items: list[Item] = field(default_factory=list)
    pooled_states: dict[str, np.ndarray] = field(default_factory=dict)  # variant -> (N, L*2D)
    layers: int = 0  # encoder layers (read from the states when there are any)

    @property
    def n_layers(self) -> int:
        return self.layers or next(iter(self.states.values())).shape[1]

    @property
    def corpora(self) -> np.ndarray:
        """Corpus of every clip (the speaker prefix when the manifest names none)."""
        return np.array([it.corpus or it.speaker.split("_")[0] for it in self.items])

    def subset(self, rows: np.ndarray) -> FeatureSet:
        """The clips ``rows`` only (same variants)."""
        return FeatureSet(
            {v: st[rows] for v, st in self.states.items()},
            {v: mk[rows] for v, mk in self.masks.items()},
            self.y[rows],
            self.speakers[rows],
            [self.items[i] for i in rows],
            {v: p[rows] for v, p in self.pooled_states.items()},
            self.layers,
        )

    def pooled(self) -> dict[str, np.ndarray]:
        """Per-layer mean ‖ std of every variant (pooled from the states once, if needed)."""
        for v in self.states:
            if v not in self.pooled_states:
                self.pooled_states[v] = pool_states(self.states[v], self.masks[v])
        return self.pooled_states

    def batch(
        self, idx: np.ndarray, variants: list[str] | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(variants, str):
            variants = [variants] * len(idx)
        st = np.stack([self.states[v][i] for i, v in zip(idx, variants, strict=True)])
        mk = np.stack([self.masks[v][i] for i, v in zip(idx, variants, strict=True)])
        return torch.from_numpy(st.astype(np.float32)).permute(1, 0, 2, 3), torch.from_numpy(mk)


def _logits(head: EmotionHead, fs: FeatureSet, idx: np.ndarray, variant: str) -> np.ndarray:
    head.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(idx), 64):
            st, mk = fs.batch(idx[s : s + 64], variant)
            out.append(head(st, mk).numpy())
    return np.concatenate(out).astype(np.float64)


def train_head(
    fs: FeatureSet,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    n_classes: int,
    cfg: TrainConfig,
    desc: str = "train",
) -> tuple[EmotionHead, float, list[dict[str, float]]]:
    """Train one head; returns (best head, fitted temperature, per-epoch history)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    any_states = next(iter(fs.states.values()))
    head = EmotionHead(any_states.shape[1], any_states.shape[3], n_classes, cfg.proj, cfg.dropout)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    counts = np.bincount(fs.y[train_idx], minlength=n_classes).astype(float)
    weights = torch.tensor(counts.sum() / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    variants = [v for v in cfg.train_variants if v in fs.states]
    best_ua, best_loss, best_state, bad = -1.0, float("inf"), None, 0
    history: list[dict[str, float]] = []
    bar = tqdm(range(cfg.epochs), desc=desc, unit="epoch", leave=False)
    for epoch in bar:
        head.train()
        order = rng.permutation(train_idx)
        total, n = 0.0, 0
        for s in range(0, len(order), cfg.batch):
            idx = order[s : s + cfg.batch]
            vs = [variants[k] for k in rng.integers(0, len(variants), len(idx))]
            st, mk = fs.batch(idx, vs)
            if cfg.frame_drop > 0:
                keep = torch.rand(mk.shape) > cfg.frame_drop
                dropped = mk & keep
                mk = torch.where(dropped.any(1, keepdim=True), dropped, mk)
            y = torch.from_numpy(fs.y[idx])
            loss = F.cross_entropy(
                head(st, mk), y, weight=weights, label_smoothing=cfg.label_smoothing
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
            n += len(idx)
        sched.step()
        val_logits = _logits(head, fs, val_idx, "clean")
        yv = fs.y[val_idx]
        val_loss = float(F.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(yv)))
        val_ua = unweighted_accuracy(yv, val_logits.argmax(1), n_classes)
        history.append(
            {"epoch": epoch + 1, "train_loss": total / n, "val_loss": val_loss, "val_ua": val_ua}
        )
        bar.set_postfix(val_ua=f"{val_ua:.3f}")
        if val_ua > best_ua + 1e-9 or (abs(val_ua - best_ua) < 1e-9 and val_loss < best_loss):
            best_ua, best_loss, best_state, bad = (
                val_ua,
                val_loss,
                copy.deepcopy(head.state_dict()),
                0,
            )
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    assert best_state is not None
    head.load_state_dict(best_state)
    temperature = fit_temperature(_logits(head, fs, val_idx, "clean"), fs.y[val_idx])
    return head.eval(), temperature, history


def fold_indices(fs: FeatureSet, fold: Fold) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def pick(group: tuple[str, ...]) -> np.ndarray:
        return np.flatnonzero(np.isin(fs.speakers, list(group)))

    return pick(fold.train), pick(fold.val), pick(fold.test)


def cross_validate(
    fs: FeatureSet,
    labels: list[str],
    folds: list[Fold],
    cfg: TrainConfig,
    test_variants: tuple[str, ...] = ("clean", "tel"),
    seeds: int = 1,
) -> dict[str, Any]:
    """Per-fold metrics (each test variant) and mean ± std; heads kept for an ensemble."""
    results: dict[str, Any] = {"folds": [], "config": cfg.to_dict(), "labels": labels}
    all_probs: dict[str, list[np.ndarray]] = {v: [] for v in test_variants}
    all_y: list[np.ndarray] = []
    heads, temps, histories = [], [], []
    for fold in folds:
        tr, va, te = fold_indices(fs, fold)
        t0 = time.time()
        fold_heads, fold_temps = [], []
        for s in range(seeds):
            c = copy.copy(cfg)
            c.seed = cfg.seed + 100 * s + fold.index
            head, temp, hist = train_head(fs, tr, va, len(labels), c, f"fold {fold.index} s{s}")
            fold_heads.append(head)
            fold_temps.append(temp)
            histories.append({"fold": fold.index, "seed": s, "history": hist})
        entry = {**_fold_entry(fold, tr), "seconds": round(time.time() - t0, 1)}
        val_logits = np.mean([_logits(h, fs, va, "clean") for h in fold_heads], axis=0)
        temp = fit_temperature(val_logits, fs.y[va])
        for v in test_variants:
            if v not in fs.states:
                continue
            logits = np.mean([_logits(h, fs, te, v) for h in fold_heads], axis=0)
            probs = softmax(logits, temp)
            entry[v] = evaluate_predictions(probs, fs.y[te], labels)
            all_probs[v].append(probs)
        all_y.append(fs.y[te])
        results["folds"].append(entry)
        heads.extend(fold_heads)
        temps.append(temp)
        msg = " ".join(f"{v} UA {entry[v]['ua']:.3f}" for v in test_variants if v in entry)
        tqdm.write(f"fold {fold.index}: {msg} ({entry['seconds']} s)")
    results["summary"] = _summarise(results["folds"], all_probs, all_y, labels, test_variants)
    results["histories"] = histories
    results["_heads"] = heads
    results["temperature"] = float(np.mean(temps))
    return results


def build_featureset(
    items: list[Item],
    label_set: LabelSet,
    loader: Any,
    variants: list[str],
    pooled_loader: Any = None,
    layers: int = 0,
) -> tuple[FeatureSet, dict[str, int]]:
    """Filter items to the label set and load cached states for each variant.

    ``loader(items, variant)`` → (states, mask) for the items kept; or, with ``pooled_loader``
    (items, variant) → (N, L*2D) pooled states only (``layers`` = L), for the linear heads.
    """
    kept, excluded = filter_items(items, label_set)
    y = np.array([label_set.index(it.emotion) for it in kept], dtype=np.int64)
    speakers = np.array([it.speaker for it in kept])
    if pooled_loader is not None:
        pooled = {v: pooled_loader(kept, v) for v in variants}
        return FeatureSet({}, {}, y, speakers, kept, pooled, layers), excluded
    keep_paths = {it.path for it in kept}
    rows = np.array([i for i, it in enumerate(items) if it.path in keep_paths])
    states, masks = {}, {}
    for v in variants:
        st, mk = loader(items, v)
        states[v] = np.asarray(st[rows]) if len(rows) != len(items) else np.asarray(st)
        masks[v] = mk[rows]
    return FeatureSet(states, masks, y, speakers, kept), excluded


def balance_weights(y: np.ndarray, groups: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-row weights under which every group (corpus) present weighs the same and, within
    it, every class it has; then rescaled so the classes weigh the same overall. Mean 1."""
    w = np.zeros(len(y), dtype=np.float64)
    names = np.unique(groups)
    for g in names:
        in_g = groups == g
        classes = np.unique(y[in_g])
        for k in classes:
            cell = in_g & (y == k)
            w[cell] = 1.0 / (len(names) * len(classes) * cell.sum())
    for k in range(n_classes):
        total = w[y == k].sum()
        if total > 0:
            w[y == k] /= total * n_classes
    return w * len(y)


def row_weights(
    fs: FeatureSet, rows: np.ndarray, balance: str, n_classes: int
) -> np.ndarray | None:
    """``class``: None (the solver balances classes); ``corpus``: :func:`balance_weights` over
    the corpora of ``rows``."""
    if balance == "class":
        return None
    if balance == "corpus":
        return balance_weights(fs.y[rows], fs.corpora[rows], n_classes)
    raise ValueError(f"unknown balance {balance!r} (class or corpus)")


def make_folds(
    fs: FeatureSet, k: int, seed: int, protocol: str = "speakers", calibration: str = "speakers"
) -> list[Fold]:
    """``speakers``: k speaker-disjoint folds; ``loco``: one fold per corpus (leave one corpus
    out; ``k`` is unused; ``calibration`` as in :func:`corpus_folds`)."""
    corpus_of = (
        dict(zip(fs.speakers.tolist(), fs.corpora.tolist(), strict=True))
        if len(fs.items) == len(fs.y)
        else None
    )
    unknown = {it.speaker for it in fs.items if it.extra.get("unknown_speaker") == "1"}
    if protocol == "speakers":
        return speaker_folds(
            fs.speakers.tolist(), k=k, n_val=2, seed=seed, corpus_of=corpus_of, no_val=unknown
        )
    if protocol == "loco":
        if not corpus_of:
            raise ValueError("leave-one-corpus-out needs the corpus of every clip")
        return corpus_folds(
            fs.speakers.tolist(), corpus_of, seed=seed, no_val=unknown, calibration=calibration
        )
    raise ValueError(f"unknown protocol {protocol!r} (speakers or loco)")


def plot_curves(histories: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for h in histories:
        ep = [r["epoch"] for r in h["history"]]
        lab = f"fold {h['fold']}" + (f" s{h['seed']}" if h.get("seed") else "")
        axes[0].plot(ep, [r["train_loss"] for r in h["history"]], alpha=0.6, label=lab)
        axes[0].plot(ep, [r["val_loss"] for r in h["history"]], "--", alpha=0.6)
        axes[1].plot(ep, [r["val_ua"] for r in h["history"]], alpha=0.7, label=lab)
    axes[0].set_title("loss (solid train, dashed validation)")
    axes[1].set_title("validation UA")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def dump_results(results: dict[str, Any], out: Path) -> None:
    clean = {k: v for k, v in results.items() if not k.startswith("_")}
    out.write_text(json.dumps(clean, indent=2) + "\n")


# ------------------------------------------------------------------ linear head on pooled stats


def pool_states(states: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N, L, T, D) states + (N, T) masks → (N, L*2D) per-layer mean ‖ std over valid frames
    (same layout as :func:`callsense.models.head.masked_stats`)."""
    out = []
    for i in tqdm(range(len(states)), desc="pool", unit="clip", leave=False):
        x = np.asarray(states[i][:, masks[i]], dtype=np.float32)
        out.append(np.concatenate([x.mean(1), x.std(1)], axis=-1).reshape(-1))
    return np.stack(out)


def fit_linear(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    n_layers: int,
    c: float,
    seed: int = 0,
    warm_from: StatsLinearHead | None = None,
    sample_weight: np.ndarray | None = None,
) -> StatsLinearHead:
    """L2 logistic regression on standardised stats → a StatsLinearHead, class-balanced unless
    ``sample_weight`` carries the balance. ``warm_from`` starts the solver from another head's
    solution (same features)."""
    from sklearn.linear_model import LogisticRegression

    mu = x.mean(0)
    sigma = x.std(0) + 1e-5
    clf = LogisticRegression(
        C=c,
        max_iter=500,
        class_weight="balanced" if sample_weight is None else None,
        random_state=seed,
        warm_start=warm_from is not None,
    )
    if warm_from is not None:
        clf.coef_ = warm_from.out.weight.detach().numpy().astype(np.float64).copy()
        clf.intercept_ = warm_from.out.bias.detach().numpy().astype(np.float64).copy()
    clf.fit((x - mu) / sigma, y, sample_weight=sample_weight)
    if clf.coef_.shape[0] != n_classes:
        raise ValueError(f"training data covers {clf.coef_.shape[0]} of {n_classes} classes")
    head = StatsLinearHead(n_layers, x.shape[1] // (2 * n_layers), n_classes)
    with torch.no_grad():
        head.mu.copy_(torch.from_numpy(mu.astype(np.float32)))
        head.sigma.copy_(torch.from_numpy(sigma.astype(np.float32)))
        head.out.weight.copy_(torch.from_numpy(clf.coef_.astype(np.float32)))
        head.out.bias.copy_(torch.from_numpy(clf.intercept_.astype(np.float32)))
    return head.eval()


def _fold_entry(fold: Fold, train_rows: np.ndarray) -> dict[str, Any]:
    """The speakers of a fold's results entry (training speakers are all the others)."""
    return {
        "fold": fold.index,
        **({"corpus": fold.name} if fold.name else {}),
        "test_speakers": list(fold.test),
        "val_speakers": list(fold.val),
        "n_train": int(len(train_rows)),
    }


def _cv_results(
    labels: list[str], head: str, c: float, train_variants: tuple[str, ...], **config: Any
) -> dict[str, Any]:
    """The empty results of a linear-head cross-validation (filled fold by fold)."""
    cfg = {"head": head, "C": c, "train_variants": list(train_variants), **config}
    return {"folds": [], "config": cfg, "labels": labels, "histories": []}


def cross_validate_linear(
    fs: FeatureSet,
    labels: list[str],
    folds: list[Fold],
    c: float,
    train_variants: tuple[str, ...],
    test_variants: tuple[str, ...] = ("clean", "tel"),
    refit_train_val: bool = True,
    balance: str = "class",
    calibration: str = "speakers",
) -> dict[str, Any]:
    """Per fold: fit on training speakers (all training variants stacked), temperature on
    validation speakers (clean); with ``refit_train_val`` the head is then refitted on training
    + validation speakers (same C, warm start) and keeps that temperature. With
    ``calibration="corpora"`` the temperature is :func:`nested_corpus_temperature` instead.
    Metrics on the test speakers, which are never used, for each test variant."""
    n_layers = fs.n_layers
    pooled = fs.pooled()
    results = _cv_results(
        labels, "stats_linear", c, train_variants, refit_train_val=refit_train_val, balance=balance
    )
    nv = len(train_variants)
    all_probs: dict[str, list[np.ndarray]] = {v: [] for v in test_variants}
    all_y, heads, temps = [], [], []
    test_rows: list[np.ndarray] = []

    def fit_rows(rows: np.ndarray, warm_from: StatsLinearHead | None = None) -> StatsLinearHead:
        """A head on ``rows`` (every training variant stacked, balanced as asked)."""
        x = np.concatenate([pooled[v][rows] for v in train_variants])
        y = np.concatenate([fs.y[rows]] * nv)
        w = _tile(row_weights(fs, rows, balance, len(labels)), nv)
        return fit_linear(x, y, len(labels), n_layers, c, warm_from=warm_from, sample_weight=w)

    for fold in tqdm(folds, desc="folds", unit="fold"):
        tr, va, te = fold_indices(fs, fold)
        t0 = time.time()
        head = fit_rows(tr)
        logits = {v: _linear_logits(head, pooled[v]) for v in pooled}
        if calibration == "corpora":
            temp, inner = nested_corpus_temperature(
                fs, tr, fit_rows, lambda h, rows: _linear_logits(h, pooled["clean"][rows])
            )
            val_ua = float(np.mean(list(inner.values())))
        else:
            temp = fit_temperature(logits["clean"][va], fs.y[va])
            val_ua = unweighted_accuracy(fs.y[va], logits["clean"][va].argmax(1), len(labels))
        if refit_train_val and len(va):
            head = fit_rows(np.concatenate([tr, va]), warm_from=head)
            logits = {v: _linear_logits(head, pooled[v]) for v in pooled}
        entry = {**_fold_entry(fold, tr), "val_ua": val_ua}
        test_logits = {v: logits[v][te] for v in test_variants}
        _score_fold(results, entry, test_logits, fs.y[te], temp, labels, all_probs, all_y, t0)
        heads.append(head)
        temps.append(temp)
        test_rows.append(te)
    results["summary"] = _summarise(results["folds"], all_probs, all_y, labels, test_variants)
    _add_by_corpus(results["summary"], fs, test_rows, all_probs, labels)
    results["_heads"] = heads
    results["temperature"] = float(np.mean(temps))
    results["_pooled"] = pooled
    return results


def nested_corpus_temperature(
    fs: FeatureSet,
    rows: np.ndarray,
    fit: Any,
    logits_of: Any,
) -> tuple[float, dict[str, float]]:
    """One temperature for a head trained on ``rows``, fitted on out-of-corpus speech: each
    training corpus in turn is held out of a nested fit (``fit(rows) -> head``) and scored by
    it (``logits_of(head, rows) -> logits``); the temperature minimises the NLL over all held-out
    corpora, each weighted equally. A corpus whose removal leaves a class untrained is skipped.
    Returns the temperature and each held-out corpus's UA."""
    corpora = fs.corpora[rows]
    logits, ys, weights, uas = [], [], [], {}
    for name in sorted(set(corpora.tolist())):
        held, rest = rows[corpora == name], rows[corpora != name]
        try:
            head = fit(rest)
        except ValueError:  # the rest lacks a class
            continue
        lg = logits_of(head, held)
        logits.append(lg)
        ys.append(fs.y[held])
        weights.append(np.full(len(held), 1.0 / len(held)))
        uas[name] = unweighted_accuracy(fs.y[held], lg.argmax(1), int(fs.y.max()) + 1)
    if not logits:
        raise ValueError("no training corpus can be held out (each removal leaves a class out)")
    temp = fit_temperature(np.concatenate(logits), np.concatenate(ys), np.concatenate(weights))
    return temp, uas


def _tile(w: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if w is None else np.tile(w, n)


def _score_fold(
    results: dict[str, Any],
    entry: dict[str, Any],
    logits: dict[str, np.ndarray],
    y_test: np.ndarray,
    temp: float,
    labels: list[str],
    all_probs: dict[str, list[np.ndarray]],
    all_y: list[np.ndarray],
    t0: float,
) -> None:
    """Metrics of one fold's test logits per variant into ``entry``; progress line."""
    for v, lg in logits.items():
        probs = softmax(lg, temp)
        entry[v] = evaluate_predictions(probs, y_test, labels)
        all_probs[v].append(probs)
    entry["seconds"] = round(time.time() - t0, 1)
    all_y.append(y_test)
    results["folds"].append(entry)
    msg = " ".join(f"{v} UA {entry[v]['ua']:.3f}" for v in logits)
    tqdm.write(f"fold {entry['fold']}: {msg} ({entry['seconds']} s)")


def _linear_logits(head: StatsLinearHead, pooled: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        x = (torch.from_numpy(pooled) - head.mu) / head.sigma
        return head.out(x).numpy().astype(np.float64)


def _summarise(
    folds: list[dict[str, Any]],
    all_probs: dict[str, list[np.ndarray]],
    all_y: list[np.ndarray],
    labels: list[str],
    test_variants: tuple[str, ...],
) -> dict[str, Any]:
    summary = {}
    for v in test_variants:
        if not all_probs[v]:
            continue
        uas = [f[v]["ua"] for f in folds]
        pooled = evaluate_predictions(np.concatenate(all_probs[v]), np.concatenate(all_y), labels)
        summary[v] = {
            "ua_mean": float(np.mean(uas)),
            "ua_std": float(np.std(uas)),
            "macro_f1_mean": float(np.mean([f[v]["macro_f1"] for f in folds])),
            "wa_mean": float(np.mean([f[v]["wa"] for f in folds])),
            "ece_mean": float(np.mean([f[v]["ece"] for f in folds])),
            **_mean_auc([f[v]["angry_auc"] for f in folds]),
            "pooled": pooled,
        }
    return summary


def _add_by_corpus(
    summary: dict[str, Any],
    fs: FeatureSet,
    test_rows: list[np.ndarray],
    all_probs: dict[str, list[np.ndarray]],
    labels: list[str],
) -> None:
    """When a fold tests speakers of several corpora (speaker folds over a multi-corpus
    manifest): each variant's metrics per corpus, pooled over the folds (every speaker is tested
    once), as ``summary[variant]["by_corpus"]`` — e.g. the within-RAVDESS score of a head
    trained on several corpora. Nothing when the clips carry no corpus."""
    corpora = fs.corpora
    if len(corpora) != len(fs.y) or all(len(set(corpora[te].tolist())) < 2 for te in test_rows):
        return
    rows = np.concatenate(test_rows)
    for v, probs in all_probs.items():
        if not probs or v not in summary:
            continue
        p = np.concatenate(probs)
        summary[v]["by_corpus"] = {
            c: evaluate_predictions(p[corpora[rows] == c], fs.y[rows][corpora[rows] == c], labels)
            for c in sorted(set(corpora[rows].tolist()))
        }


def _mean_auc(aucs: list[float | None]) -> dict[str, float]:
    known = [a for a in aucs if a is not None]
    return {"angry_auc_mean": float(np.mean(known))} if known else {}


def plot_folds(results: dict[str, Any], out: Path, title: str) -> None:
    """Per-fold UA for each test variant (bars) with the mean (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(results["summary"])
    folds = results["folds"]
    width = 0.8 / max(1, len(variants))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for k, v in enumerate(variants):
        xs = np.arange(len(folds)) + k * width
        ax.bar(xs, [100 * f[v]["ua"] for f in folds], width, label=v)
        mean = 100 * results["summary"][v]["ua_mean"]
        ax.axhline(mean, ls="--", lw=1, color=f"C{k}", label=f"{v} mean {mean:.1f}")
    ax.set_xticks(np.arange(len(folds)) + width * (len(variants) - 1) / 2)
    ax.set_xticklabels([f.get("corpus") or f"fold {f['fold']}" for f in folds])
    ax.set_ylabel("UA %")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# ------------------------------------------------------ linear head with speaker normalisation


def homogeneous_logits(
    head: Any, pooled: np.ndarray, speakers: np.ndarray, y: np.ndarray, seed: int, history: int = 7
) -> np.ndarray:
    """Worst case for speaker normalisation: every row is classified after up to ``history``
    other rows of the same speaker *and the same emotion* (a caller who keeps one emotion)."""
    from callsense.models.speaker_norm import ReferenceNormalizer

    rng = np.random.default_rng(seed)
    out = np.zeros((len(pooled), head.out.out_features))
    for i in range(len(pooled)):
        same = np.flatnonzero((speakers == speakers[i]) & (y == y[i]))
        same = rng.permutation(same[same != i])[:history]
        rows = [*same.tolist(), i]
        norm = ReferenceNormalizer(head.feature_dim)
        out[i] = head.logits_from_pooled(pooled[rows], [norm] * len(rows))[-1]
    return out


def cross_validate_refnorm(
    fs: FeatureSet,
    labels: list[str],
    folds: list[Fold],
    c: float,
    train_variants: tuple[str, ...],
    prior: float,
    test_variants: tuple[str, ...] = ("clean", "tel"),
    balance: str = "class",
    calibration: str = "speakers",
    stats: str = "mean_std",
) -> dict[str, Any]:
    """As :func:`cross_validate_linear` (fit on training speakers, temperature on validation
    speakers or nested held-out corpora, refit on both), with per-speaker reference
    normalisation of the ``stats`` the head reads (every layer's mean and std, or mean only).
    Each test speaker's clips are classified in a random order as one causal stream; also
    scored: ``first`` (every clip with no history) and ``homogeneous`` (history of the same
    emotion only, the worst case)."""
    from callsense.models.speaker_norm import fit_refnorm_head, refnorm_logits

    n_layers = fs.n_layers
    ref = [labels.index(lab) for lab in ("neutral", "calm") if lab in labels]
    if not ref:
        raise ValueError("speaker normalisation needs a 'neutral' (or 'calm') class as reference")
    pooled = fs.pooled()
    results = _cv_results(
        labels, "stats_linear_refnorm", c, train_variants,
        prior=prior,
        reference=[labels[i] for i in ref],
        refit_train_val=True,
        balance=balance,
        stats=stats,
        test_order="each test speaker's clips in a random order (seed = fold), causal",
    )  # fmt: skip
    extra = ("first", "homogeneous")
    all_probs: dict[str, list[np.ndarray]] = {v: [] for v in (*test_variants, *extra)}
    all_y, heads, temps = [], [], []
    test_rows: list[np.ndarray] = []

    def fit(rows: np.ndarray) -> Any:
        return fit_refnorm_head(
            pooled, rows, fs.y, fs.speakers, n_layers, len(labels), ref, c, prior, train_variants,
            weights=row_weights(fs, rows, balance, len(labels)), stats=stats,
        )  # fmt: skip

    for fold in tqdm(folds, desc="folds", unit="fold"):
        tr, va, te = fold_indices(fs, fold)
        t0 = time.time()
        head = fit(tr)
        if calibration == "corpora":
            temp, inner = nested_corpus_temperature(
                fs, tr, fit,
                lambda h, rows, seed=fold.index: refnorm_logits(
                    h, pooled["clean"][rows], fs.speakers[rows], seed=seed
                ),
            )  # fmt: skip
            val_ua = float(np.mean(list(inner.values())))
        else:
            val_logits = refnorm_logits(head, pooled["clean"][va], fs.speakers[va], seed=fold.index)
            temp = fit_temperature(val_logits, fs.y[va])
            val_ua = unweighted_accuracy(fs.y[va], val_logits.argmax(1), len(labels))
            head = fit(np.concatenate([tr, va]))
        entry = {**_fold_entry(fold, tr), "val_ua": val_ua}
        logits = {
            v: refnorm_logits(head, pooled[v][te], fs.speakers[te], seed=fold.index)
            for v in test_variants
        }
        logits["first"] = refnorm_logits(
            head, pooled["clean"][te], fs.speakers[te], seed=fold.index, history=False
        )
        logits["homogeneous"] = homogeneous_logits(
            head, pooled["clean"][te], fs.speakers[te], fs.y[te], seed=fold.index
        )
        _score_fold(results, entry, logits, fs.y[te], temp, labels, all_probs, all_y, t0)
        heads.append(head)
        temps.append(temp)
        test_rows.append(te)
    results["summary"] = _summarise(
        results["folds"], all_probs, all_y, labels, (*test_variants, *extra)
    )
    _add_by_corpus(results["summary"], fs, test_rows, all_probs, labels)
    results["_heads"] = heads
    results["temperature"] = float(np.mean(temps))
    results["_pooled"] = pooled
    results["_reference"] = ref
    return results
