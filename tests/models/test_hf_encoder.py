"""Hugging Face encoder path (wav2vec2 / HuBERT / WavLM by name or local path).

No such weights ship in a package here, so this test builds a small randomly initialised
wav2vec2 config, saves it to a local folder and loads it by path offline. It checks the code
path (loading, masking, layer selection, head on top), not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from callsense.models.encoder import build_backbone, parse_encoder
from callsense.models.inference import EmotionModel, save_artifact
from callsense.models.speaker_norm import build_head


def test_hf_local_path_backbone_and_model(tmp_path: Path, monkeypatch) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    Wav2Vec2Model(cfg).save_pretrained(tmp_path / "w2v")
    spec = parse_encoder(f"hf:{tmp_path / 'w2v'}", layers=[1, 2])
    bb = build_backbone(spec)
    audio = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 8000])
    with torch.no_grad():
        states, mask = bb(audio, lengths)
    assert states.shape[0] == 2 and states.shape[1] == 2 and states.shape[3] == 32
    assert mask[0].sum() > mask[1].sum() > 0  # the shorter clip covers fewer frames
    head = build_head({"kind": "stats_linear", "n_layers": 2, "dim": 32, "n_classes": 4})
    config = {
        "encoder": spec,
        "labels": ["angry", "happy", "neutral", "sad"],
        "label_set": {
            "name": "callcenter4",
            "labels": ["angry", "happy", "neutral", "sad"],
            "mapping": {"calm": "neutral"},
        },
        "window_s": 1.0,
        "level_dbfs": -26.0,
        "temperature": 1.0,
        "head": head.hparams,
    }
    save_artifact(tmp_path / "model", config, [head])
    m = EmotionModel.load(tmp_path / "model")
    p = m.predict(
        np.random.default_rng(0).standard_normal((3, 16000)).astype(np.float32) * 0.1, 16000
    )
    assert p.shape == (3, 4) and np.allclose(p.sum(1), 1)
