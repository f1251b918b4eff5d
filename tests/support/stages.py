"""Stage-level driver for tests: a recording through the speaker pipelines alone (no model,
no call processor), to check what the stages cut. The product analyses files through the call
processor (``callsense.processors.offline.analyze_audio``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from callsense.processors.stages import (
    SpeakerPipeline,
    StageConfig,
    Window,
    chunk_audio,
    speakers_for,
)


def extract_windows(
    audio: np.ndarray, sr: int, cfg: StageConfig, agent_channel: int = 0, diarize: bool = False
) -> tuple[list[Window], list[dict[str, Any]]]:
    """Stage part of the analysis (no model): windows in stream order + per-speaker info.

    ``diarize``: a mono call is split into speakers by the streaming diarizer first
    (docs/diarization.md); stereo calls always keep one speaker per channel.
    """
    from tqdm import tqdm

    if diarize and audio.shape[0] == 1:
        from callsense.processors.diarization.route import diarized_windows

        return diarized_windows(audio, sr, cfg)
    speakers = speakers_for(audio.shape[0], agent_channel)
    pipes = [(SpeakerPipeline(cfg, sr, spk, role), ch or 0) for spk, role, ch in speakers]
    windows: list[Window] = []
    n_chunks = -(-audio.shape[1] // max(1, int(round(sr * cfg.chunk_ms / 1000))))
    for _seq, start, chunk in tqdm(
        chunk_audio(audio, sr, cfg.chunk_ms), total=n_chunks, desc="stages", disable=None
    ):
        for pipe, ch in pipes:
            windows += pipe.push(chunk[ch], start)
    for pipe, _ch in pipes:
        windows += pipe.flush()
    info = [
        {"speaker": spk, "role": role, "channel": ch, "talk_time_s": pipe.talk_time_s}
        for (spk, role, ch), (pipe, _c) in zip(speakers, pipes, strict=True)
    ]
    return windows, info
