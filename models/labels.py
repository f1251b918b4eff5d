"""Label sets: which classes a model predicts and how corpus labels map onto them.

Corpus readers write canonical emotion names (``CANONICAL``). A :class:`LabelSet` names its
classes and maps every canonical (or aliased) label onto one of them, or marks it as outside the
set. The model file stores its label set, so everything downstream reads it from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CANONICAL = ("angry", "boredom", "calm", "disgust", "fear", "happy", "neutral", "sad", "surprise")

# spellings used by corpora and by people → canonical
ALIASES: dict[str, str] = {
    "anger": "angry",
    "ang": "angry",
    "happiness": "happy",
    "joy": "happy",
    "hap": "happy",
    "sadness": "sad",
    "fearful": "fear",
    "fea": "fear",
    "disgusted": "disgust",
    "dis": "disgust",
    "surprised": "surprise",
    "ps": "surprise",
    "pleasant_surprise": "surprise",
    "neu": "neutral",
    "bored": "boredom",
}


def canonical(label: str) -> str:
    key = label.strip().lower().replace(" ", "_")
    return ALIASES.get(key, key)


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: tuple[str, ...]
    mapping: dict[str, str] = field(default_factory=dict)  # canonical -> class in ``labels``

    def map(self, label: str) -> str | None:
        """The class for a corpus label, or None when it lies outside this set."""
        c = canonical(label)
        if c in self.labels:
            return c
        return self.mapping.get(c)

    def index(self, label: str) -> int | None:
        mapped = self.map(label)
        return None if mapped is None else self.labels.index(mapped)

    def to_dict(self) -> dict:
        return {"name": self.name, "labels": list(self.labels), "mapping": dict(self.mapping)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelSet:
        return cls(d["name"], tuple(d["labels"]), dict(d.get("mapping", {})))


LABEL_SETS: dict[str, LabelSet] = {
    "ravdess8": LabelSet(
        "ravdess8",
        ("angry", "calm", "disgust", "fear", "happy", "neutral", "sad", "surprise"),
    ),
    # default call-center set: calm folds into neutral; fear/disgust/surprise/boredom excluded
    "callcenter4": LabelSet(
        "callcenter4", ("angry", "happy", "neutral", "sad"), {"calm": "neutral"}
    ),
}


def get_label_set(name: str) -> LabelSet:
    """A predefined set by name, or an ad-hoc one: ``"a,b,c"`` with optional ``src=dst`` maps,
    e.g. ``"angry,happy,neutral,sad,calm=neutral"``."""
    if name in LABEL_SETS:
        return LABEL_SETS[name]
    items = [s.strip() for s in name.split(",") if s.strip()]
    labels = tuple(canonical(s) for s in items if "=" not in s)
    mapping = {canonical(s.split("=")[0]): canonical(s.split("=")[1]) for s in items if "=" in s}
    if len(labels) < 2:
        raise ValueError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}")
    bad = [v for v in mapping.values() if v not in labels]
    if bad:
        raise ValueError(f"label set {name!r} maps onto classes it does not have: {bad}")
    return LabelSet("custom", labels, mapping)
