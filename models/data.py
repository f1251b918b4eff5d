"""Manifest-driven datasets, corpus readers and speaker-independent splits.

A manifest is a CSV with at least ``path,speaker,emotion`` (optional ``corpus`` and any extra
columns); ``path`` is relative to the CSV's folder. Readers turn the file naming of the standard
corpora into such a manifest, so ``callsense manifest CORPUS DIR --out CSV`` is all a user needs
after downloading one.
"""

from __future__ import annotations

import csv
import os
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from callsense.models.labels import LabelSet, canonical

AUDIO_EXT = {".wav", ".flac", ".mp3", ".ogg"}


@dataclass
class Item:
    path: Path  # absolute
    speaker: str
    emotion: str  # canonical corpus label
    corpus: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def read_manifest(csv_path: str | Path) -> list[Item]:
    csv_path = Path(csv_path)
    root = csv_path.resolve().parent
    items: list[Item] = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "speaker", "emotion"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path}: manifest lacks column(s) {sorted(missing)}")
        for row in reader:
            extra = {k: v for k, v in row.items() if k not in {"path", "speaker", "emotion"}}
            items.append(
                Item(
                    path=root / row["path"],
                    speaker=row["speaker"],
                    emotion=canonical(row["emotion"]),
                    corpus=row.get("corpus") or "",
                    extra=extra,
                )
            )
    return items


def split_unknown_speakers(items: list[Item]) -> list[Item]:
    """Items marked ``unknown_speaker=1`` (one id shared by many unknown users) each become a
    speaker of their own, so no per-speaker history or split mixes different people."""
    out = []
    for i, it in enumerate(items):
        if it.extra.get("unknown_speaker") == "1":
            it = Item(it.path, f"{it.speaker}_{i}", it.emotion, it.corpus, it.extra)
        out.append(it)
    return out


def write_manifest(rows: Iterable[dict[str, str]], out: str | Path, root: str | Path) -> int:
    """Write rows with absolute ``path`` as a manifest whose paths are relative to ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    cols = ["path", "speaker", "emotion", "corpus"]
    extra = sorted({k for r in rows for k in r} - set(cols))
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols + extra)
        w.writeheader()
        for r in rows:
            r = dict(r)
            r["path"] = os.path.relpath(Path(r["path"]).resolve(), out.resolve().parent)
            w.writerow(r)
    return len(rows)


# ------------------------------------------------------------------------------ corpus readers

RAVDESS_EMO = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
CREMAD_EMO = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
SAVEE_EMO = {
    "a": "angry",
    "d": "disgust",
    "f": "fear",
    "h": "happy",
    "n": "neutral",
    "sa": "sad",
    "su": "surprise",
}
EMODB_EMO = {
    "W": "angry",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happy",
    "T": "sad",
    "N": "neutral",
}


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXT and p.is_file())


def _row(path: Path, speaker: str, emotion: str, corpus: str) -> dict[str, str]:
    return {"path": str(path), "speaker": speaker, "emotion": emotion, "corpus": corpus}


def read_ravdess(root: Path) -> list[dict[str, str]]:
    """``03-01-EE-II-SS-RR-AA.wav``: modality-channel-emotion-intensity-statement-rep-actor.
    Speech only (channel 01); song files (channel 02) are skipped."""
    rows = []
    for p in _audio_files(root):
        parts = p.stem.split("-")
        if len(parts) != 7 or parts[1] != "01" or parts[2] not in RAVDESS_EMO:
            continue
        actor = int(parts[6])
        rows.append(
            {
                "path": str(p),
                "speaker": f"ravdess_{actor:02d}",
                "emotion": RAVDESS_EMO[parts[2]],
                "corpus": "ravdess",
                "gender": "male" if actor % 2 else "female",
                "intensity": "normal" if parts[3] == "01" else "strong",
            }
        )
    return rows


def read_cremad(root: Path) -> list[dict[str, str]]:
    """``1001_DFA_ANG_XX.wav``: actor_sentence_emotion_level."""
    rows = []
    for p in _audio_files(root):
        parts = p.stem.split("_")
        if len(parts) != 4 or parts[2] not in CREMAD_EMO:
            continue
        rows.append(_row(p, f"cremad_{parts[0]}", CREMAD_EMO[parts[2]], "cremad"))
    return rows


def read_tess(root: Path) -> list[dict[str, str]]:
    """``OAF_back_angry.wav`` / ``YAF_..._ps.wav``: speaker (OAF/YAF)_word_emotion. Copies
    that prefix a running number and ``test`` and append one (``12testYAF_gaze_ps39.wav``) are
    read the same way."""
    rows = []
    for p in _audio_files(root):
        parts = re.sub(r"^\d+test", "", p.stem).split("_")
        if len(parts) < 3:
            continue
        emo = canonical(re.sub(r"\d+$", "", parts[-1]))
        if emo not in {"angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"}:
            continue
        speaker = {"OA": "OAF"}.get(parts[0].upper(), parts[0].upper())  # one misspelt name
        rows.append(_row(p, f"tess_{speaker}", emo, "tess"))
    return rows


def read_savee(root: Path) -> list[dict[str, str]]:
    """``DC_a01.wav`` (flat) or ``DC/a01.wav`` (per-speaker folders); speakers DC, JE, JK, KL."""
    rows = []
    for p in _audio_files(root):
        m = re.fullmatch(r"(?:([A-Z]{2})_)?([a-z]{1,2})(\d{2})", p.stem)
        if not m:
            continue
        speaker = m.group(1) or p.parent.name
        if m.group(2) not in SAVEE_EMO:
            continue
        rows.append(_row(p, f"savee_{speaker}", SAVEE_EMO[m.group(2)], "savee"))
    return rows


def read_emodb(root: Path) -> list[dict[str, str]]:
    """``03a01Fa.wav``: speaker(2) text(3) emotion(1, German initial) version(1)."""
    rows = []
    for p in _audio_files(root):
        m = re.fullmatch(r"(\d{2})([a-z]\d{2})([WLEAFTN])([a-z])", p.stem)
        if not m:
            continue
        rows.append(_row(p, f"emodb_{m.group(1)}", EMODB_EMO[m.group(3)], "emodb"))
    return rows


ASED_EMO = {"n": "neutral", "f": "fear", "h": "happy", "s": "sad", "a": "angry"}


def read_ased(root: Path) -> list[dict[str, str]]:
    """ASED v1 (Amharic): ``<e><folder>-<sentence>-<repetition>-<gender>-<speaker>.wav`` with
    ``e`` one of n/f/h/s/a (one file has it upper case); the speaker id is the last field."""
    rows = []
    for p in _audio_files(root):
        m = re.fullmatch(r"([nfhsaNFHSA])\d+-\d+-\d+-(\d+)-(\d+)", p.stem)
        if not m:
            continue
        gender = {"01": "female", "02": "male"}.get(m.group(2), "")
        row = _row(p, f"ased_{int(m.group(3)):02d}", ASED_EMO[m.group(1).lower()], "ased")
        rows.append({**row, "gender": gender} if gender else row)
    return rows


EMOSPEECH_UNKNOWN = "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f"


def read_emospeech(root: Path) -> list[dict[str, str]]:
    """Indian EmoSpeech commands: ``keyword-environment-emotion-timestamp-userhash.wav``. The
    hash ``d14a028c…`` stands for every unknown user: those clips get the speaker
    ``emospeech_unknown`` and ``unknown_speaker=1`` (keep them out of speaker-disjoint test
    folds). Emotion ``None`` (background noise, no speech) is skipped."""
    rows = []
    for p in _audio_files(root):
        parts = p.stem.split("-")
        if len(parts) != 5 or parts[2].lower() == "none":
            continue
        keyword, env, emo, _ts, user = parts
        unknown = user == EMOSPEECH_UNKNOWN
        speaker = "emospeech_unknown" if unknown else f"emospeech_{user[:12]}"
        row = _row(p, speaker, canonical(emo), "emospeech")
        rows.append({**row, "keyword": keyword, "environment": env,
                     "unknown_speaker": "1" if unknown else "0"})  # fmt: skip
    return rows


def read_emotiontts(root: Path) -> list[dict[str, str]]:
    """The Korean emotional TTS sample (emotiontts_open_db, ``Emotional/.../<spk>/wav``):
    ``<spk><5 digits>.wav``, numbers 1-100 neutral, 101-200 happy, 201-300 sad, 301-400 angry.
    The corpus README swaps the last two; its own scripts and the audio say otherwise (see the
    model card, "Korean sample labels")."""
    bands = ((100, "neutral"), (200, "happy"), (300, "sad"), (400, "angry"))
    rows = []
    for p in _audio_files(root):
        m = re.fullmatch(r"([a-z]+)(\d{5})", p.stem)
        if not m:
            continue
        n = int(m.group(2))
        emo = next((e for hi, e in bands if 1 <= n <= hi), None)
        if emo is not None:
            rows.append(_row(p, f"emotiontts_{m.group(1)}", emo, "emotiontts"))
    return rows


READERS: dict[str, Callable[[Path], list[dict[str, str]]]] = {
    "ased": read_ased,
    "emospeech": read_emospeech,
    "emotiontts": read_emotiontts,
    "ravdess": read_ravdess,
    "cremad": read_cremad,
    "tess": read_tess,
    "savee": read_savee,
    "emodb": read_emodb,
}


def manifest_rows(corpus: str, root: str | Path) -> list[dict[str, str]]:
    """Rows (absolute paths) of a corpus read from its folder, or of an existing manifest CSV
    (``corpus="manifest"``)."""
    if corpus == "manifest":
        return [
            {"path": str(it.path), "speaker": it.speaker, "emotion": it.emotion,
             "corpus": it.corpus or it.speaker.split("_")[0], **it.extra}
            for it in read_manifest(root)
        ]  # fmt: skip
    key = corpus.lower().replace("-", "").replace("_", "")
    if key not in READERS:
        raise ValueError(f"unknown corpus {corpus!r}; known: {', '.join(READERS)}")
    rows = READERS[key](Path(root))
    if not rows:
        raise ValueError(f"no {corpus} audio files with the expected naming under {root}")
    return rows


def build_manifest(corpus: str, root: str | Path, out: str | Path) -> int:
    return write_manifest(manifest_rows(corpus, root), out, root)


# ------------------------------------------------------------------------------ splits


@dataclass(frozen=True)
class Fold:
    index: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    name: str = ""  # the left-out corpus of a leave-one-corpus-out fold


def speaker_folds(
    speakers: Iterable[str],
    k: int = 6,
    n_val: int = 2,
    seed: int = 0,
    corpus_of: dict[str, str] | None = None,
    no_val: Iterable[str] = (),
) -> list[Fold]:
    """K folds disjoint by speaker; inside each, train/val/test speakers are disjoint.

    Speakers are sorted (natural order, so RAVDESS actors 1-4 form fold 0 as in EmoBox) and cut
    into ``k`` contiguous groups that serve as test sets; with ``corpus_of`` naming several
    corpora, each corpus is cut so, and test set *i* joins every corpus's *i*-th group (every
    fold tests and trains on every corpus). Validation speakers are ``n_val`` speakers drawn
    with ``seed`` from the remaining ones (balanced by gender when speaker ids carry RAVDESS's
    odd/even convention), never from ``no_val`` (e.g. one-clip ids of unknown speakers, on
    which a temperature would be fitted to two clips); the rest train.
    """
    spk = sorted(set(speakers), key=_natural_key)
    if k < 2 or len(spk) < k:
        raise ValueError(f"need at least k={k} speakers for {k} folds, got {len(spk)}")

    def cut(group: list[str]) -> list[list[str]]:
        n = len(group)
        return [group[round(i * n / k) : round((i + 1) * n / k)] for i in range(k)]

    corpora = sorted({corpus_of[s] for s in spk}) if corpus_of else []
    if len(corpora) > 1:
        parts = [cut([s for s in spk if corpus_of[s] == c]) for c in corpora]  # type: ignore[index]
        groups = [sorted(sum((p[i] for p in parts), []), key=_natural_key) for i in range(k)]
    else:
        groups = cut(spk)
    excluded = set(no_val)
    folds = []
    for i, test in enumerate(groups):
        rest = [s for s in spk if s not in test]
        rng = random.Random(seed * 1000 + i)
        val = _pick_val([s for s in rest if s not in excluded], n_val, rng)
        train = [s for s in rest if s not in val]
        if not train:
            raise ValueError("no training speakers left; lower n_val or k")
        folds.append(Fold(i, tuple(train), tuple(sorted(val, key=_natural_key)), tuple(test)))
    return folds


def corpus_folds(
    speakers: Iterable[str],
    corpus_of: dict[str, str],
    n_val_per_corpus: int = 1,
    seed: int = 0,
    no_val: Iterable[str] = (),
    calibration: str = "speakers",
) -> list[Fold]:
    """Leave-one-corpus-out folds: fold *c* tests on every speaker of corpus *c* and trains on
    the other corpora. Validation speakers (for the temperature) are ``n_val_per_corpus``
    speakers drawn with ``seed`` from each training corpus that keeps at least two training
    speakers, so calibration sees every training corpus; speakers in ``no_val`` (e.g. one id
    shared by many unknown users) are never drawn. ``calibration="corpus"``: the validation
    speakers are instead every speaker of one training corpus (the one with the fewest
    speakers), so the temperature is fitted on a corpus the head was not trained on, as the
    test corpus will be. ``calibration="corpora"``: no validation speakers; the trainer fits the
    temperature on every training corpus in turn held out of a nested fit
    (:func:`callsense.models.train.nested_corpus_temperature`)."""
    if calibration not in ("speakers", "corpus", "corpora"):
        raise ValueError(f"calibration must be speakers, corpus or corpora, got {calibration!r}")
    spk = sorted(set(speakers), key=_natural_key)
    by_corpus: dict[str, list[str]] = {}
    for s in spk:
        by_corpus.setdefault(corpus_of[s], []).append(s)
    if len(by_corpus) < 2:
        raise ValueError(f"leave-one-corpus-out needs at least 2 corpora, got {sorted(by_corpus)}")
    excluded = set(no_val)
    folds = []
    for i, name in enumerate(sorted(by_corpus)):
        rng = random.Random(seed * 1000 + i)
        val: list[str] = []
        others = [c for c in sorted(by_corpus) if c != name]
        if calibration == "corpus" and len(others) >= 2:
            held = min(others, key=lambda c: (len(by_corpus[c]), c))
            val = [s for s in by_corpus[held] if s not in excluded]
        for other in others if calibration == "speakers" else ():
            pool = [s for s in by_corpus[other] if s not in excluded]
            if len(pool) >= n_val_per_corpus + 2:
                val += rng.sample(pool, n_val_per_corpus)
        train = [s for s in spk if corpus_of[s] != name and s not in val]
        test = by_corpus[name]
        folds.append(Fold(i, tuple(train), tuple(sorted(val, key=_natural_key)), tuple(test), name))
    return folds


def _pick_val(rest: list[str], n_val: int, rng: random.Random) -> list[str]:
    nums = [_trailing_int(s) for s in rest]
    if n_val >= 2 and all(n is not None for n in nums):
        odd = [s for s, n in zip(rest, nums, strict=True) if n % 2]
        even = [s for s, n in zip(rest, nums, strict=True) if not n % 2]
        if odd and even:
            half = n_val // 2
            return rng.sample(odd, half) + rng.sample(even, n_val - half)
    return rng.sample(rest, min(n_val, len(rest) - 1))


def _trailing_int(s: str) -> int | None:
    m = re.search(r"(\d+)$", s)
    return int(m.group(1)) if m else None


def _natural_key(s: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def filter_items(items: list[Item], label_set: LabelSet) -> tuple[list[Item], dict[str, int]]:
    """Items whose label maps into the set, and counts of labels that do not (reported)."""
    kept, excluded = [], {}
    for it in items:
        if label_set.map(it.emotion) is None:
            excluded[it.emotion] = excluded.get(it.emotion, 0) + 1
        else:
            kept.append(it)
    return kept, excluded
