"""Encoder hidden states per clip and per augmentation, cached on disk so head experiments and
cross-validation do not re-run the encoder.

Cache layout: ``<cache>/<key>/<variant>.npy`` (N, L, T, D) float16 memory-mappable,
``<variant>.mask.npy`` (N, T) bool, ``<variant>.json`` (paths, provenance). ``key`` hashes the
encoder spec, window length, level target and the list of clips.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from callsense.models.audio import load_audio, prepare, trim_silence
from callsense.models.augment import random_augment, telephone
from callsense.models.data import Item
from callsense.models.encoder import Backbone
from callsense.models.head import masked_stats
from callsense.models.inference import preprocess
from tqdm import tqdm

VARIANTS_HELP = "clean | tel (8 kHz mu-law telephone) | aug<k> (random chain, seed k)"


def load_clip(item: Item) -> np.ndarray:
    """16 kHz mono, leading/trailing silence trimmed (as a VAD would in the pipeline)."""
    audio, sr = load_audio(item.path)
    return trim_silence(prepare(audio, sr))


def variant_fn(variant: str) -> Callable[[np.ndarray, str], np.ndarray]:
    if variant == "clean":
        return lambda x, _key: x
    if variant == "tel":
        return lambda x, _key: telephone(x)
    if variant.startswith("aug"):
        k = int(variant[3:])

        def _aug(x: np.ndarray, key: str) -> np.ndarray:
            rng = np.random.default_rng([k, zlib.crc32(key.encode())])
            return random_augment(x, rng)

        return _aug
    raise ValueError(f"unknown variant {variant!r} ({VARIANTS_HELP})")


def cache_key(spec: dict, window: int, level: float, items: list[Item]) -> str:
    h = hashlib.sha1(json.dumps([spec, window, level], sort_keys=True).encode())
    for it in items:
        h.update(str(it.path).encode())
    return h.hexdigest()[:16]


def _encode(
    items: list[Item], backbone: Backbone, variant: str, window: int, level: float, batch: int
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(first row, (L, B, T, D) states, (B, T) mask) for successive batches of ``items``."""
    fn = variant_fn(variant)
    with torch.inference_mode():
        for s in tqdm(range(0, len(items), batch), desc=f"encode {variant}", unit="batch"):
            xs, lens = [], []
            for it in items[s : s + batch]:
                x, n = preprocess(fn(load_clip(it), str(it.path)), window, level)
                xs.append(x)
                lens.append(n)
            states, mask = backbone(torch.from_numpy(np.stack(xs)), torch.as_tensor(lens))
            yield s, states, mask


def extract_pooled(
    items: list[Item],
    backbone: Backbone,
    variant: str,
    window: int,
    level: float,
    cache: Path,
    batch: int = 8,
) -> np.ndarray:
    """(N, L * 2D) float32 per-layer mean ‖ std of the states over valid frames: all that the
    linear heads read, in a cache ~40 times smaller than :func:`extract`'s states."""
    d = cache / cache_key(backbone.spec(), window, level, items)
    path = d / f"{variant}.pooled.npy"
    if path.is_file():
        return np.load(path)
    d.mkdir(parents=True, exist_ok=True)
    parts = [masked_stats(st, m).numpy() for _s, st, m in
             _encode(items, backbone, variant, window, level, batch)]  # fmt: skip
    pooled = np.concatenate(parts).astype(np.float32)
    tmp = d / f"{variant}.pooled.tmp{os.getpid()}.npy"
    np.save(tmp, pooled)
    tmp.replace(path)
    return pooled


def extract(
    items: list[Item],
    backbone: Backbone,
    variant: str,
    window: int,
    level: float,
    cache: Path,
    batch: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """States (N, L, T, D) float16 (memory-mapped) and mask (N, T) for every item."""
    key = cache_key(backbone.spec(), window, level, items)
    d = cache / key
    states_path, mask_path = d / f"{variant}.npy", d / f"{variant}.mask.npy"
    if states_path.is_file() and mask_path.is_file():
        return np.load(states_path, mmap_mode="r"), np.load(mask_path)
    d.mkdir(parents=True, exist_ok=True)
    out = None
    masks = None
    tmp = d / f"{variant}.tmp{os.getpid()}.npy"
    for s, states, m in _encode(items, backbone, variant, window, level, batch):
        st = states.permute(1, 0, 2, 3).numpy().astype(np.float16)
        if out is None:
            shape = (len(items), *st.shape[1:])
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
            masks = np.zeros((len(items), st.shape[2]), dtype=bool)
        out[s : s + len(st)] = st
        masks[s : s + len(st)] = m.numpy()
    assert out is not None and masks is not None
    out.flush()
    del out
    tmp.replace(states_path)
    np.save(mask_path, masks)
    (d / f"{variant}.json").write_text(
        json.dumps(
            {"spec": backbone.spec(), "window": window, "level": level, "n": len(items)}, indent=1
        )
    )
    return np.load(states_path, mmap_mode="r"), masks
