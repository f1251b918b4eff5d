"""``callsense diarize FILE [--rttm OUT] [--reference REF.rttm] [--json]``."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np


def load_mono_16k(path: Path) -> tuple[np.ndarray, float]:
    """Read an audio file as mono float32 at 16 kHz (stereo is refused: diarize mono only)."""
    import soundfile as sf

    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types
        raise click.ClickException(f"cannot read audio file {path}: {exc}") from exc
    if audio.shape[1] != 1:
        raise click.ClickException(
            f"{path} has {audio.shape[1]} channels: diarization is for mono calls "
            "(stereo calls keep one speaker per channel)"
        )
    audio = audio[:, 0]
    if sr != 16000:
        import soxr

        audio = soxr.resample(audio, sr, 16000).astype(np.float32)
    return audio, len(audio) / 16000.0


@click.command("diarize")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--rttm",
    "rttm_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the speaker turns (overlap kept) as RTTM here.",
)
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Reference RTTM: print DER, false alarm, missed and confusion.",
)
@click.option("--uri", default=None, help="Recording id in the RTTM (default: file stem).")
@click.option("--latency", type=float, default=None, help="Latency in s (default: settings).")
@click.option("--step", type=float, default=None, help="Step in s (default: settings).")
@click.option("--max-speakers", type=int, default=None, help="Default: settings (2).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def diarize_cmd(
    file: Path,
    rttm_out: Path | None,
    reference: Path | None,
    uri: str | None,
    latency: float | None,
    step: float | None,
    max_speakers: int | None,
    as_json: bool,
) -> None:
    """Diarize a mono FILE by streaming it through the online diarizer."""
    import time

    import torch

    from .rttm import SCORING, der, read_rttm, write_rttm
    from .streaming import DiarizerConfig, diarize_array
    from .weights import ModelFilesMissing, load_models

    torch.set_num_threads(1)
    uri = uri or file.stem
    audio, duration = load_mono_16k(file)
    config = DiarizerConfig.from_settings()
    if latency is not None:
        config.latency_s = latency
    if step is not None:
        config.step_s = step
    if max_speakers is not None:
        config.max_speakers = max_speakers
    try:
        config.validate()
        models = load_models()
    except (ValueError, ModelFilesMissing) as exc:
        raise click.ClickException(str(exc)) from exc
    t0 = time.perf_counter()
    diarizer, segments = diarize_array(models, audio, config)
    elapsed = time.perf_counter() - t0
    rttm = write_rttm(diarizer.turns, uri, rttm_out)
    result: dict = {
        "file": str(file),
        "uri": uri,
        "duration_s": round(duration, 3),
        "speakers": [
            {
                "id": diarizer.speaker_id(i),
                "role": diarizer.role(i),
                "speech_s": round(float(diarizer.speech_frames[i]) * 0.01, 2),
            }
            for i in range(diarizer.num_speakers)
        ],
        "turns": [{"speaker": s, "start": a, "end": b} for s, a, b in diarizer.turns],
        "single_speaker_segments": len(segments),
        "latency_s": config.latency_s,
        "step_s": config.step_s,
        "real_time_factor": round(elapsed / max(duration, 1e-9), 4),
    }
    if reference is not None:
        refs = read_rttm(reference)
        if uri not in refs:
            if len(refs) == 1:
                ref_turns = next(iter(refs.values()))
            else:
                raise click.ClickException(
                    f"reference has no recording '{uri}' (has: {', '.join(sorted(refs))}); "
                    "use --uri"
                )
        else:
            ref_turns = refs[uri]
        scores = der(ref_turns, diarizer.turns, duration, uri)
        result["scoring"] = SCORING
        result["metrics"] = {k: round(v, 4) for k, v in scores.items()}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if rttm_out is None:
        click.echo(rttm, nl=False)
    else:
        click.echo(f"wrote {rttm_out}")
    names = ", ".join(f"{s['id']} ({s['role']}, {s['speech_s']} s)" for s in result["speakers"])
    click.echo(f"{uri}: {duration:.1f} s, {len(result['speakers'])} speaker(s): {names or '-'}")
    if reference is not None:
        m = result["metrics"]
        click.echo(
            f"DER {100 * m['der']:.1f}% = false alarm {100 * m['false_alarm']:.1f}% + "
            f"missed {100 * m['missed']:.1f}% + confusion {100 * m['confusion']:.1f}% "
            f"({SCORING}; pyannote.metrics)"
        )
