"""Offline analysis: a recorded call is one more source of the stream's events.

:func:`analyze_audio` turns the file into the ``callsense.audio`` events ingest would send
(:func:`~callsense.processors.events.call_events`: call start, 250 ms chunks, call end) and runs
them through the stream's own :class:`~callsense.processors.callstate.CallProcessor` with an
in-process :class:`~callsense.processors.inference.BatchClassifier`, in the stream's micro-batch
size. A file analysed here and the same call streamed through Kafka give the same windows
because they are the same code, not two drivers kept equal by tests. The upload page and
``callsense analyze`` both use it.

``callsense analyze FILE [--json|--csv] [--call-id ID] [--agent-channel 0|1]``
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
from callsense.processors.stages import (
    StageConfig,
    StageError,
    WindowResult,
)

from callsense.palette import emotion_color

if TYPE_CHECKING:
    from callsense.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    call_id: str
    source: str
    sample_rate: int
    channels: int
    duration_s: float
    speakers: list[dict[str, Any]]  # speaker, role, channel, talk_time_s
    results: list[WindowResult] = field(default_factory=list)
    conversation: dict[str, Any] | None = None  # conversation_metrics of the call

    def rows(self) -> list[dict[str, Any]]:
        return [r.to_row(self.call_id) for r in self.results]

    def summary(self) -> dict[str, Any]:
        from callsense.storage.summary import summarize_call

        talk = {s["speaker"]: s["talk_time_s"] for s in self.speakers}
        return summarize_call(self.duration_s, self.rows(), talk, self.conversation)


def load_call_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read and validate a call recording: ``(channels, T)`` float32 and its rate.

    Raises ``AudioError`` / :class:`StageError` with a clear message for unreadable, empty,
    non-finite or more-than-stereo input.
    """
    from callsense.models.audio import AudioError, load_audio

    audio, sr = load_audio(path)
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    if audio.shape[0] > 2:
        raise StageError(f"{path}: calls must be mono or stereo, got {audio.shape[0]} channels")
    return audio, sr


def analyze_audio(
    audio: np.ndarray,
    sr: int,
    settings: Settings,
    call_id: str = "call",
    agent_channel: int = 0,
    model: Any = None,
    source: str = "",
) -> Analysis:
    """The file as a source: its ``callsense.audio`` events (the ones ingest sends) through the
    stream's own :class:`~callsense.processors.callstate.CallProcessor`, micro-batch by
    micro-batch, with an in-process classifier. Stream and file windows are the same code."""
    from callsense.processors.callstate import CallProcessor, Incoming
    from callsense.processors.events import AUDIO_TOPIC, CallStart, call_events
    from callsense.processors.inference import BatchClassifier
    from tqdm import tqdm

    cfg = StageConfig.from_settings(settings)
    if notice := cfg.roles_notice():
        log.warning(notice)
    start = CallStart(
        call_id, int(sr), int(audio.shape[0]), agent_channel, source=Path(source).name or None
    )
    classifier = BatchClassifier(settings, model=model)
    processor = CallProcessor(settings, classifier)
    key = call_id.encode()
    states: dict[str, Any] = {}
    outputs: list[dict[str, Any]] = []
    batch: list[Incoming] = []

    def step() -> None:
        res = processor.process(batch, states)
        if res.deadletters:
            raise StageError(res.deadletters[0].get("reason", "the audio was rejected"))
        states.update(res.states)
        outputs.extend(res.outputs)
        batch.clear()

    n_events = -(-audio.shape[1] // max(1, int(round(sr * cfg.chunk_ms / 1000)))) + 2
    try:
        for offset, (ev, _end) in enumerate(
            tqdm(call_events(start, audio, cfg.chunk_ms), total=n_events, desc="analyze",
                 unit="chunk", disable=None)
        ):  # fmt: skip
            batch.append(Incoming(ev.encode(), key, AUDIO_TOPIC, 0, offset))
            if len(batch) >= settings.stream_batch_events:
                step()
        step()
    finally:
        classifier.close()
    ended = next((o for o in outputs if o.get("kind") == "call_ended"), None)
    if ended is None:
        raise StageError("the call did not end (no call_ended event)")
    talk = ended.get("talk_time_s", {})
    speakers = [
        {**s, "talk_time_s": float(talk.get(s["speaker"], 0.0))}
        for s in ended.get("speakers") or []
    ]
    fields = set(WindowResult.__dataclass_fields__)
    results = [
        WindowResult(**{k: v for k, v in o.items() if k in fields})
        for o in outputs
        if o.get("kind") == "window"
    ]
    return Analysis(
        call_id=call_id,
        source=source,
        sample_rate=sr,
        channels=int(audio.shape[0]),
        duration_s=audio.shape[1] / sr,
        speakers=speakers,
        results=results,
        conversation=ended.get("conversation"),
    )


def analyze_file(
    path: str | Path,
    settings: Settings,
    call_id: str | None = None,
    agent_channel: int = 0,
    model: Any = None,
) -> list[WindowResult]:
    """Window results for one file, computed exactly as the stream computes them."""
    return analyze_path(path, settings, call_id, agent_channel, model).results


def analyze_path(
    path: str | Path,
    settings: Settings,
    call_id: str | None = None,
    agent_channel: int = 0,
    model: Any = None,
) -> Analysis:
    audio, sr = load_call_audio(path)
    return analyze_audio(
        audio,
        sr,
        settings,
        call_id=call_id or Path(path).stem,
        agent_channel=agent_channel,
        model=model,
        source=str(path),
    )


# --------------------------------------------------------------------------- output


def analysis_json(a: Analysis) -> str:
    by_speaker: dict[str, list[dict[str, Any]]] = {s["speaker"]: [] for s in a.speakers}
    for r in a.rows():
        by_speaker[r["speaker"]].append(
            {k: r[k] for k in r if k not in ("call_id", "speaker", "role")}
        )
    doc = {
        "call_id": a.call_id,
        "source": a.source,
        "sample_rate": a.sample_rate,
        "channels": a.channels,
        "duration_s": round(a.duration_s, 3),
        "speakers": [dict(s, windows=by_speaker[s["speaker"]]) for s in a.speakers],
        "summary": a.summary()["summary"],
    }
    return json.dumps(doc, indent=2)


def _labels(a: Analysis) -> list[str]:
    return sorted({k for r in a.results for k in r.probabilities})


def analysis_csv(a: Analysis) -> str:
    labels = _labels(a)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["call_id", "speaker", "role", "start_ms", "end_ms", "label", "raw_label", "confidence",
         "uncertain", "smoothed_label"] + [f"p_{lab}" for lab in labels]
    )  # fmt: skip
    for r in a.results:
        w.writerow(
            [a.call_id, r.speaker, r.role, r.start_ms, r.end_ms, r.label, r.raw_label,
             f"{r.confidence:.4f}", int(r.uncertain), r.smoothed_label]
            + [f"{r.probabilities.get(lab, 0.0):.4f}" for lab in labels]
        )  # fmt: skip
    return buf.getvalue()


def _ms(ms: int) -> str:
    return f"{ms // 60000:d}:{(ms % 60000) / 1000:06.3f}"


def _as_table(a: Analysis) -> str:
    from callsense.storage.summary import describe_conversation

    labels = _labels(a)
    lines = [f"{a.call_id}: {a.duration_s:.1f} s, {a.channels} channel(s), {a.sample_rate} Hz"]
    for s in a.speakers:
        rs = [r for r in a.results if r.speaker == s["speaker"]]
        lines.append("")
        lines.append(
            f"{s['speaker']} ({s['role']}): {s['talk_time_s']:.1f} s of speech, {len(rs)} windows"
        )
        head = f"  {'start':>9} {'end':>9}  {'label':<10} {'conf':>5}  {'smoothed':<10}"
        lines.append(head + "".join(f" {lab[:7]:>7}" for lab in labels))
        for r in rs:
            lines.append(
                f"  {_ms(r.start_ms):>9} {_ms(r.end_ms):>9}  {r.label:<10} {r.confidence:5.2f}  "
                f"{(r.smoothed_label or ''):<10}"
                + "".join(f" {r.probabilities.get(lab, 0.0):7.2f}" for lab in labels)
            )
    summ = a.summary()
    lines += ["", f"anger share {summ['anger_share']:.2f}, peak anger {summ['peak_anger']:.2f}"]
    if a.conversation:
        lines += describe_conversation(a.conversation)
    return "\n".join(lines)


def plot_trajectories(a: Analysis, path: Path) -> None:
    """PNG: per speaker, each class's probability (smoothed) over call time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _labels(a)
    speakers = a.speakers or [{"speaker": "-", "role": ""}]
    fig, axes = plt.subplots(len(speakers), 1, figsize=(9, 2.4 * len(speakers)), sharex=True,
                             squeeze=False)  # fmt: skip
    for ax, s in zip(axes[:, 0], speakers, strict=True):
        rs = [r for r in a.results if r.speaker == s["speaker"]]
        t = [(r.start_ms + r.end_ms) / 2000.0 for r in rs]
        for lab in labels:
            ys = [(r.smoothed_probabilities or r.probabilities).get(lab, 0.0) for r in rs]
            ax.plot(t, ys, marker="o", markersize=3, label=lab, color=emotion_color(lab))
        for r, x in zip(rs, t, strict=True):
            if r.uncertain:
                ax.axvline(x, color="0.85", lw=4, zorder=0)
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.set_title(f"{s['speaker']} ({s['role']})", fontsize=9, loc="left")
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=len(labels))
    axes[-1, 0].set_xlabel("call time (s); grey: uncertain window")
    axes[-1, 0].set_xlim(0, max(a.duration_s, 1.0))
    fig.suptitle(f"{a.call_id}: smoothed emotion probabilities", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@click.command("analyze")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (per speaker windows).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (one row per window).")
@click.option("--call-id", default=None, help="Call id in the output (default: file name).")
@click.option(
    "--agent-channel",
    type=click.IntRange(0, 1),
    default=None,
    help="Stereo channel of the agent (default: CALLSENSE_AGENT_CHANNEL).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a PNG of each speaker's emotion trajectory.",
)
def analyze_cmd(
    file: Path,
    as_json: bool,
    as_csv: bool,
    call_id: str | None,
    agent_channel: int | None,
    plot_path: Path | None,
) -> None:
    """Analyse FILE (WAV, FLAC, MP3, OGG; mono or stereo) with the stream's stage code."""
    from callsense.models.audio import AudioError

    from callsense.settings import get_settings

    if as_json and as_csv:
        raise click.UsageError("--json and --csv are mutually exclusive")
    settings = get_settings()
    channel = settings.agent_channel if agent_channel is None else agent_channel
    try:
        analysis = analyze_path(file, settings, call_id=call_id, agent_channel=channel)
    except (AudioError, StageError) as exc:
        raise click.ClickException(str(exc)) from exc
    except FileNotFoundError as exc:  # no model artefact
        raise click.ClickException(f"emotion model not found: {exc}") from exc
    if plot_path is not None:
        plot_trajectories(analysis, plot_path)
    if as_json:
        click.echo(analysis_json(analysis))
    elif as_csv:
        click.echo(analysis_csv(analysis), nl=False)
    else:
        click.echo(_as_table(analysis))
