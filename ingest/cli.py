"""``callsense ingest PATH...``: stream audio files to Kafka as calls."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--call-id", default=None, help="Call id (one file only; default: name + random).")
@click.option(
    "--speed",
    default="1",
    show_default=True,
    help="1 = real time, N = N times faster, max = as fast as possible.",
)
@click.option(
    "--agent-channel",
    type=click.IntRange(0, 1),
    default=None,
    help="Stereo channel of the agent (default: CALLSENSE_AGENT_CHANNEL).",
)
@click.option("--agent-id", default=None, help="Agent id stored with the call.")
@click.option("--customer-id", default=None, help="Customer id stored with the call.")
@click.option("--queue", default=None, help="Queue / skill stored with the call.")
@click.option("--bootstrap", default=None, help="Kafka bootstrap (default: KAFKA_BOOTSTRAP).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per call.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def ingest_cmd(
    paths: tuple[Path, ...],
    call_id: str | None,
    speed: str,
    agent_channel: int | None,
    agent_id: str | None,
    customer_id: str | None,
    queue: str | None,
    bootstrap: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Stream WAV/FLAC/MP3/OGG files (any rate, mono or stereo) as calls to Kafka.

    Each file becomes one call: a call_start event, 250 ms PCM16 chunks with sequence numbers
    and sample offsets, and a call_end event, keyed by call id. Several files stream
    concurrently.
    """
    from aiokafka.errors import KafkaError
    from callsense.ingest.producer import (
        CallMeta,
        IngestError,
        ingest_files,
        new_call_id,
        parse_speed,
    )

    from callsense.settings import get_settings

    settings = get_settings()
    if bootstrap:
        settings = settings.model_copy(update={"kafka_bootstrap": bootstrap})
    if call_id and len(paths) > 1:
        raise click.UsageError("--call-id needs exactly one PATH")
    try:
        pace = parse_speed(speed)
    except ValueError as exc:
        raise click.BadParameter(f"{speed!r}: {exc}", param_hint="--speed") from exc
    channel = settings.agent_channel if agent_channel is None else agent_channel
    metas = [
        CallMeta(call_id or new_call_id(p), channel, agent_id, customer_id, queue) for p in paths
    ]
    try:
        results = asyncio.run(ingest_files(list(paths), settings, metas, pace, not quiet))
    except IngestError as exc:
        raise click.ClickException(f"cannot ingest: {exc}") from exc
    except (OSError, KafkaError) as exc:
        raise click.ClickException(
            f"cannot reach the broker at {settings.kafka_bootstrap}: {exc}"
        ) from exc
    for r in results:
        if as_json:
            click.echo(json.dumps(r.__dict__))
        else:
            click.echo(
                f"{r.call_id}: {r.chunks} chunks, {r.seconds:.1f} s of {r.channels}-channel "
                f"{r.sample_rate} Hz audio sent in {r.wall_s:.1f} s"
            )
