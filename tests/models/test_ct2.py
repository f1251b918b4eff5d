"""CTranslate2 model.bin reader and the PyTorch Whisper encoder built from it."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from callsense.models.ct2 import LogMel, WhisperEncoder, read_ct2


def _write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """Independent writer of the CTranslate2 binary layout (version 6) for the test."""
    ids = {
        np.dtype("float32"): 0,
        np.dtype("int8"): 1,
        np.dtype("int16"): 3 - 1,
        np.dtype("float16"): 4,
    }

    def s(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    with open(path, "wb") as fh:
        fh.write(struct.pack("<I", 6) + s("WhisperSpec") + struct.pack("<I", 3))
        fh.write(struct.pack("<I", len(variables)))
        for name, arr in variables.items():
            fh.write(s(name) + struct.pack("<B", arr.ndim))
            fh.write(struct.pack(f"<{arr.ndim}I", *arr.shape))
            fh.write(struct.pack("<BI", ids[arr.dtype], arr.nbytes) + arr.tobytes())
        fh.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            fh.write(s(alias) + s(target))


def _hf_to_ct2(sd: dict[str, torch.Tensor], n_layers: int, heads: int) -> dict[str, np.ndarray]:
    def h(t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy().astype(np.float16)

    v = {
        "encoder/conv1/weight": h(sd["conv1.weight"]),
        "encoder/conv1/bias": h(sd["conv1.bias"]),
        "encoder/conv2/weight": h(sd["conv2.weight"]),
        "encoder/conv2/bias": h(sd["conv2.bias"]),
        "encoder/position_encodings/encodings": h(sd["embed_positions.weight"]),
        "encoder/num_heads": np.array(heads, dtype=np.int16),
    }
    for i in range(n_layers):
        p, a = f"layers.{i}.", f"encoder/layer_{i}/"
        d = sd[p + "self_attn.q_proj.weight"].shape[0]
        v[a + "self_attention/linear_0/weight"] = h(
            torch.cat(
                [
                    sd[p + "self_attn.q_proj.weight"],
                    sd[p + "self_attn.k_proj.weight"],
                    sd[p + "self_attn.v_proj.weight"],
                ]
            )
        )
        v[a + "self_attention/linear_0/bias"] = h(
            torch.cat(
                [sd[p + "self_attn.q_proj.bias"], torch.zeros(d), sd[p + "self_attn.v_proj.bias"]]
            )
        )
        v[a + "self_attention/linear_1/weight"] = h(sd[p + "self_attn.out_proj.weight"])
        v[a + "self_attention/linear_1/bias"] = h(sd[p + "self_attn.out_proj.bias"])
        v[a + "self_attention/layer_norm/gamma"] = h(sd[p + "self_attn_layer_norm.weight"])
        v[a + "self_attention/layer_norm/beta"] = h(sd[p + "self_attn_layer_norm.bias"])
        v[a + "ffn/linear_0/weight"] = h(sd[p + "fc1.weight"])
        v[a + "ffn/linear_0/bias"] = h(sd[p + "fc1.bias"])
        v[a + "ffn/linear_1/weight"] = h(sd[p + "fc2.weight"])
        v[a + "ffn/linear_1/bias"] = h(sd[p + "fc2.bias"])
        v[a + "ffn/layer_norm/gamma"] = h(sd[p + "final_layer_norm.weight"])
        v[a + "ffn/layer_norm/beta"] = h(sd[p + "final_layer_norm.bias"])
    return v


def test_reader_and_encoder_match_transformers(tmp_path: Path) -> None:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

    torch.manual_seed(0)
    cfg = WhisperConfig(
        d_model=64,
        encoder_layers=3,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        num_mel_bins=80,
        max_source_positions=150,
    )
    hf = HFEncoder(cfg).eval()
    # round the reference through float16 like the file does
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(p.half().float())
    variables = _hf_to_ct2(hf.state_dict(), 3, 4)
    _write_ct2(tmp_path / "model.bin", variables, {"encoder/alias_of_conv1": "encoder/conv1/bias"})
    parsed = read_ct2(tmp_path / "model.bin", prefix="encoder/")
    assert parsed.spec == "WhisperSpec" and parsed.version == 6
    assert np.array_equal(
        parsed.variables["encoder/alias_of_conv1"], variables["encoder/conv1/bias"]
    )
    ours = WhisperEncoder.from_ct2(parsed, n_layers=2)
    assert len(ours.blocks) == 2 and ours.n_heads == 4
    mel = torch.randn(2, 80, 300)
    with torch.no_grad():
        ref = hf(mel, output_hidden_states=True).hidden_states
        got = ours(mel)
    assert got.shape == (3, 2, 150, 64)
    for i in range(3):  # embeddings, block 1, block 2 (before any final layer norm)
        torch.testing.assert_close(got[i], ref[i], atol=2e-4, rtol=1e-3)


def test_int8_variables_are_dequantised(tmp_path: Path) -> None:
    w = np.array([[10, -20], [30, 40]], dtype=np.int8)
    scale = np.array([10.0, 20.0], dtype=np.float32)
    _write_ct2(tmp_path / "m.bin", {"x/weight": w, "x/weight_scale": scale}, {})
    m = read_ct2(tmp_path / "m.bin")
    np.testing.assert_allclose(m.get("x/weight"), [[1.0, -2.0], [1.5, 2.0]])


def test_truncated_file_raises(tmp_path: Path) -> None:
    _write_ct2(tmp_path / "m.bin", {"x": np.ones(8, np.float32)}, {})
    raw = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(raw[:-12])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2(tmp_path / "t.bin")


def test_log_mel_matches_whisper_feature_extractor() -> None:
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(0)
    t = np.arange(48000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(48000)).astype(
        np.float32
    )
    fe = WhisperFeatureExtractor(feature_size=80)
    ref = fe(audio, sampling_rate=16000, return_tensors="np", padding="longest").input_features[0]
    ours = LogMel()(torch.from_numpy(audio)[None]).numpy()[0]
    assert ours.shape == (80, 300)
    np.testing.assert_allclose(ours, ref[:, :300], atol=2e-3)


def test_whisper_base_from_registry_package() -> None:
    from callsense.models.ct2 import load_whisper_base

    enc = load_whisper_base(n_layers=2)
    assert enc.config() == {"n_mels": 80, "d": 512, "heads": 8, "ffn": 2048, "n_layers": 2}
    with torch.no_grad():
        out = enc(torch.zeros(1, 80, 300))
    assert out.shape == (3, 1, 150, 512) and torch.isfinite(out).all()


def test_whisper_base_parts_joined_by_concurrent_processes(tmp_path: Path) -> None:
    """Worker processes starting together on a fresh host each join the packaged parts; they
    must not trip over one shared temporary file (this crashed two processes here once)."""
    import subprocess
    import sys

    code = (
        "import sys; from callsense.models.ct2 import whisper_base_path; "
        "print(whisper_base_path(sys.argv[1]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-500:] for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    joined = Path(paths.pop())
    assert joined.is_file() and joined.stat().st_size > 100_000_000
    assert [p.name for p in tmp_path.iterdir()] == [joined.name]  # no temporary file left
