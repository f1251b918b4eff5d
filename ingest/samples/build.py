"""Build the sample calls (stereo FLAC, 16 kHz) from RAVDESS speech, deterministically.

    python -m callsense.ingest.samples.build [--data ../shared/data] [--out ingest/samples]
    python -m callsense.ingest.samples.build --check   # rebuild in memory, compare with files

Each call alternates turns like a phone call: an agent turn (one utterance) on the agent's
channel, a pause, a customer turn (two utterances) on the other channel, a pause, and so on.
Utterances are RAVDESS recordings with their leading/trailing silence trimmed; the emotion of the
customer follows a per-call script (e.g. neutral → angry). Nothing is random: clips are taken in
manifest order, so the same corpus gives the same samples. Levels are left as recorded
(normalisation is the model's job). ``calls.json`` holds each call's metadata and its timeline
(which clip, emotion and channel plays when) as ground truth.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

SR = 16000
HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path("..") / "shared" / "data"
PAUSE_S = (0.6, 0.9, 0.5, 0.8)  # pauses between turns, cycled (deterministic)


@dataclass(frozen=True)
class Phase:
    emotions: tuple[str, ...]
    intensity: str | None  # None: any
    turns: int


@dataclass(frozen=True)
class CallSpec:
    call_id: str
    description: str
    agent_actor: int
    customer_actor: int
    agent_channel: int
    agent_id: str
    customer_id: str
    queue: str
    customer_phases: tuple[Phase, ...]
    agent_emotions: tuple[str, ...] = ("neutral", "calm")


CALLS: tuple[CallSpec, ...] = (
    CallSpec(
        "sample-escalation",
        "Billing dispute: the customer starts neutral and becomes angry; the agent stays calm.",
        agent_actor=2,
        customer_actor=11,
        agent_channel=0,
        agent_id="agent-017",
        customer_id="cust-48213",
        queue="billing",
        customer_phases=(
            Phase(("neutral", "calm"), "normal", 2),
            Phase(("angry",), "normal", 2),
            Phase(("angry",), "strong", 3),
        ),
    ),
    CallSpec(
        "sample-neutral",
        "Address change: both sides neutral or calm throughout.",
        agent_actor=6,
        customer_actor=9,
        agent_channel=0,
        agent_id="agent-022",
        customer_id="cust-10477",
        queue="support",
        customer_phases=(Phase(("neutral", "calm"), None, 6),),
    ),
    CallSpec(
        "sample-sad",
        "Bereavement claim: the customer is sad; the agent is calm.",
        agent_actor=4,
        customer_actor=15,
        agent_channel=0,
        agent_id="agent-031",
        customer_id="cust-77302",
        queue="claims",
        customer_phases=(Phase(("sad",), "normal", 3), Phase(("sad",), "strong", 3)),
    ),
    CallSpec(
        "sample-deescalation",
        "Outage complaint, agent on the right channel (1): the customer starts angry and calms "
        "down.",
        agent_actor=8,
        customer_actor=13,
        agent_channel=1,
        agent_id="agent-017",
        customer_id="cust-55120",
        queue="technical",
        customer_phases=(
            Phase(("angry",), "strong", 3),
            Phase(("angry",), "normal", 1),
            Phase(("neutral", "calm"), "normal", 2),
        ),
    ),
)


class Corpus:
    """RAVDESS clips by (actor, emotion, intensity), in manifest order, trimmed and cached."""

    def __init__(self, data: Path) -> None:
        self.root = data / "ravdess"
        manifest = self.root / "MANIFEST.csv"
        if not manifest.is_file():
            raise click.ClickException(f"RAVDESS manifest not found at {manifest}")
        with open(manifest, newline="") as fh:
            self.rows = sorted(csv.DictReader(fh), key=lambda r: r["path"])
        self._used: dict[tuple, int] = {}

    def next_clip(
        self, actor: int, emotions: Sequence[str], intensity: str | None
    ) -> tuple[np.ndarray, dict[str, str]]:
        """The next unused clip of this actor/emotion pool (cycling when exhausted)."""
        import soundfile as sf
        from callsense.models.audio import trim_silence

        pool = [
            r
            for r in self.rows
            if r["speaker"] == f"ravdess_{actor:02d}"
            and r["emotion"] in emotions
            and (intensity is None or r["intensity"] == intensity)
        ]
        if not pool:
            raise click.ClickException(f"no RAVDESS clips for actor {actor} {emotions}")
        key = (actor, tuple(emotions), intensity)
        i = self._used.get(key, 0)
        self._used[key] = i + 1
        row = pool[i % len(pool)]
        x, sr = sf.read(self.root / row["path"], dtype="float32")
        if sr != SR or x.ndim != 1:
            raise click.ClickException(f"{row['path']}: expected 16 kHz mono")
        return trim_silence(x, rel_db=35.0, pad_s=0.1), row


def build_call(spec: CallSpec, corpus: Corpus) -> tuple[np.ndarray, dict]:
    """(2, T) float32 audio and the call's metadata with its timeline."""
    agent_ch, cust_ch = spec.agent_channel, 1 - spec.agent_channel
    parts: list[tuple[int, np.ndarray]] = []  # (channel, samples); one channel active at a time
    timeline: list[dict] = []
    t = 0
    turn = 0

    def add(ch: int, role: str, x: np.ndarray, row: dict[str, str]) -> None:
        nonlocal t
        parts.append((ch, x))
        timeline.append(
            {
                "channel": ch,
                "role": role,
                "start_s": round(t / SR, 3),
                "end_s": round((t + len(x)) / SR, 3),
                "emotion": row["emotion"],
                "intensity": row["intensity"],
                "source": f"ravdess/{row['path']}",
            }
        )
        t += len(x)

    def pause() -> None:
        nonlocal t, turn
        n = int(PAUSE_S[turn % len(PAUSE_S)] * SR)
        parts.append((-1, np.zeros(n, np.float32)))
        t += n
        turn += 1

    for phase in spec.customer_phases:
        for _ in range(phase.turns):
            x, row = corpus.next_clip(spec.agent_actor, spec.agent_emotions, None)
            add(agent_ch, "agent", x, row)
            pause()
            for _k in range(2):
                x, row = corpus.next_clip(spec.customer_actor, phase.emotions, phase.intensity)
                add(cust_ch, "customer", x, row)
            pause()
    audio = np.zeros((2, t), np.float32)
    pos = 0
    for ch, x in parts:
        if ch >= 0:
            audio[ch, pos : pos + len(x)] = x
        pos += len(x)
    meta = {
        "call_id": spec.call_id,
        "file": f"{spec.call_id}.flac",
        "description": spec.description,
        "agent_id": spec.agent_id,
        "customer_id": spec.customer_id,
        "queue": spec.queue,
        "agent_channel": spec.agent_channel,
        "channels": 2,
        "sample_rate": SR,
        "duration_s": round(t / SR, 3),
        "agent_actor": f"ravdess_{spec.agent_actor:02d}",
        "customer_actor": f"ravdess_{spec.customer_actor:02d}",
        "timeline": timeline,
    }
    return audio, meta


def build_all(data: Path) -> list[tuple[np.ndarray, dict]]:
    corpus = Corpus(data)
    return [build_call(spec, corpus) for spec in CALLS]


@click.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA,
    show_default=True,
    help="Shared data folder holding ravdess/ (relative paths: from the repository root).",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=HERE, show_default=True
)
@click.option("--check", is_flag=True, help="Only verify that the files match a fresh build.")
def main(data: Path, out: Path, check: bool) -> None:
    """Build (or --check) the sample calls and calls.json."""
    import soundfile as sf

    built = build_all(data)
    metas = [m for _a, m in built]
    if check:
        bad = []
        for audio, m in built:
            got, sr = sf.read(out / m["file"], dtype="int16", always_2d=True)
            want = np.clip(np.rint(audio.T * 32768), -32768, 32767).astype(np.int16)
            if sr != SR or got.shape != want.shape or not np.array_equal(got, want):
                bad.append(m["file"])
        if json.loads((out / "calls.json").read_text()) != metas:
            bad.append("calls.json")
        if bad:
            raise click.ClickException(f"sample calls differ from a fresh build: {bad}")
        click.echo(f"{len(built)} sample calls match a fresh build")
        return
    out.mkdir(parents=True, exist_ok=True)
    for audio, m in built:
        sf.write(out / m["file"], audio.T, SR, subtype="PCM_16", format="FLAC")
        size = (out / m["file"]).stat().st_size
        click.echo(f"{m['file']}: {m['duration_s']:.1f} s, {size / 1e6:.2f} MB")
    (out / "calls.json").write_text(json.dumps(metas, indent=2) + "\n")
    click.echo(f"wrote {out / 'calls.json'}")


if __name__ == "__main__":
    main()
