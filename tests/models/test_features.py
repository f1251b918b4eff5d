"""``models/features.py``: the pooled-state cache equals pooling the full-state cache.

A small randomly initialised wav2vec2 (saved and loaded by path, offline) stands in for the
encoder: the test checks the caching and pooling code path, not the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from callsense.models.data import Item
from callsense.models.encoder import build_backbone, parse_encoder
from callsense.models.features import extract, extract_pooled
from callsense.models.train import pool_states


def test_pooled_cache_matches_pooled_states(tmp_path: Path, monkeypatch) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )  # fmt: skip
    Wav2Vec2Model(cfg).save_pretrained(tmp_path / "w2v")
    backbone = build_backbone(parse_encoder(f"hf:{tmp_path / 'w2v'}", layers=[1, 2])).eval()
    rng = np.random.default_rng(0)
    items = []
    for i, seconds in enumerate([1.0, 0.6, 1.4]):  # different lengths: masks matter
        path = tmp_path / f"clip{i}.wav"
        t = np.arange(int(seconds * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (150 + 50 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(path, x.astype(np.float32), 16000)
        items.append(Item(path, f"s{i}", "neutral"))
    cache = tmp_path / "cache"
    states, masks = extract(items, backbone, "clean", 16000, -26.0, cache, batch=2)
    pooled = extract_pooled(items, backbone, "clean", 16000, -26.0, cache, batch=2)
    assert pooled.shape == (3, 2 * 2 * 16)
    # the full-state cache is float16; pooling it gives the same features to that precision
    np.testing.assert_allclose(pooled, pool_states(states, masks), rtol=2e-2, atol=2e-2)
    assert not np.allclose(pooled[0], pooled[1])
    # cached: a second call reads the file and encodes nothing
    files = sorted(p.name for p in cache.rglob("*.pooled.npy"))
    assert files == ["clean.pooled.npy"]

    def no_encoding(*_args: object, **_kw: object) -> None:
        raise AssertionError("encoded again instead of reading the cache")

    monkeypatch.setattr("callsense.models.features._encode", no_encoding)
    again = extract_pooled(items, backbone, "clean", 16000, -26.0, cache, batch=2)
    np.testing.assert_array_equal(again, pooled)
