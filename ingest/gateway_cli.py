"""``callsense gateway``: run the telephony media gateway; ``callsense gateway replay``: play an
audio file as a Twilio Media Streams or generic ``/stream`` client does (tests, demos, checking
a telephony setup)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import click
import numpy as np

FRAME_MS = 20  # Twilio sends 20 ms of audio per media message


def _as_int16(audio: np.ndarray) -> np.ndarray:
    from callsense.processors.stages import to_pcm16

    return to_pcm16(np.asarray(audio, dtype=np.float32))


def twilio_frames(
    audio: np.ndarray, sr: int, call_sid: str, params: dict[str, str], agent_channel: int = 0
) -> list[tuple[float, str]]:
    """(send time in s, text frame) of a Twilio Media Stream of ``audio`` ((C, T) float):
    the agent channel as the outbound track, the other (or the only one) as inbound."""
    from callsense.ingest.gateway import mulaw_encode
    from callsense.models.audio import resample

    rate = 8000
    chans = [resample(ch, sr, rate) if sr != rate else ch for ch in audio]
    if len(chans) == 1:
        tracks = {"inbound": chans[0]}
    else:
        tracks = {"outbound": chans[agent_channel], "inbound": chans[1 - agent_channel]}
    sid = "MZ" + uuid.uuid4().hex
    out: list[tuple[float, str]] = [(0.0, json.dumps({"event": "connected", "protocol": "Call",
                                                       "version": "1.0.0"}))]  # fmt: skip
    out.append((0.0, json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": sid,
        "start": {"streamSid": sid, "accountSid": "AC" + "0" * 32, "callSid": call_sid,
                  "tracks": sorted(tracks), "customParameters": params,
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": rate,
                                  "channels": 1}},
    })))  # fmt: skip
    step = rate * FRAME_MS // 1000
    n = max(len(x) for x in tracks.values())
    seq = 1
    for i, start in enumerate(range(0, n, step)):
        for track, x in tracks.items():
            pcm = _as_int16(x[start : start + step])
            if not len(pcm):
                continue
            seq += 1
            out.append((start / rate, json.dumps({
                "event": "media", "sequenceNumber": str(seq), "streamSid": sid,
                "media": {"track": track, "chunk": str(i + 1),
                          "timestamp": str(start * 1000 // rate),
                          "payload": base64.b64encode(mulaw_encode(pcm)).decode()},
            })))  # fmt: skip
    out.append((n / rate, json.dumps({"event": "stop", "sequenceNumber": str(seq + 1),
                                      "streamSid": sid, "stop": {"callSid": call_sid}})))
    return out


def stream_frames(
    audio: np.ndarray, sr: int, call_id: str, meta: dict[str, Any], agent_channel: int = 0
) -> list[tuple[float, str | bytes]]:
    """(send time in s, frame) of the generic protocol: start, 20 ms PCM16 frames, stop."""
    start = {"type": "start", "call_id": call_id, "sample_rate": sr,
             "channels": int(audio.shape[0]), "encoding": "pcm16",
             "agent_channel": agent_channel, **meta}  # fmt: skip
    out: list[tuple[float, str | bytes]] = [(0.0, json.dumps(start))]
    step = sr * FRAME_MS // 1000
    pcm = _as_int16(audio)
    for s in range(0, pcm.shape[1], step):
        out.append((s / sr, np.ascontiguousarray(pcm[:, s : s + step].T).astype("<i2").tobytes()))
    out.append((pcm.shape[1] / sr, json.dumps({"type": "stop"})))
    return out


async def replay(
    frames: list[tuple[float, Any]], url: str, speed: float | None, headers: dict[str, str]
) -> None:
    """Send ``frames`` to ``url`` at ``speed`` x real time (None: as fast as possible), then
    wait for the server to close."""
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers=headers, max_size=1 << 20) as ws:
        t0 = time.monotonic()
        for at, frame in frames:
            if speed:
                delay = t0 + at / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await ws.send(frame)
        await ws.close()


@click.group("gateway", invoke_without_command=True)
@click.option("--host", default=None, help="Bind address (default CALLSENSE_GATEWAY_HOST).")
@click.option("--port", type=int, default=None, help="Port (default CALLSENSE_GATEWAY_PORT).")
@click.pass_context
def gateway_group(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Telephony media gateway: /twilio (Twilio Media Streams), /stream (generic)."""
    if ctx.invoked_subcommand is not None:
        return
    import logging

    from callsense.ingest.gateway import serve

    from callsense.settings import get_settings

    settings = get_settings()
    host = host or settings.gateway_host
    port = port or settings.gateway_port
    if host not in ("127.0.0.1", "localhost", "::1") and settings.gateway_token is None:
        raise click.ClickException(
            "the gateway is bound beyond loopback: set CALLSENSE_GATEWAY_TOKEN for /stream "
            "(and CALLSENSE_TWILIO_AUTH_TOKEN for /twilio)"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    click.echo(f"callsense gateway on ws://{host}:{port}/ (/twilio, /stream)", err=True)
    try:
        asyncio.run(serve(settings, host, port))
    except KeyboardInterrupt:
        pass


@gateway_group.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("url")
@click.option("--protocol", type=click.Choice(["twilio", "stream"]), default="stream",
              show_default=True)  # fmt: skip
@click.option("--speed", default="1", show_default=True, help="1 = real time, N, or max.")
@click.option("--call-id", default=None, help="Call id (default: file name + random suffix).")
@click.option("--agent-channel", type=click.Choice(["0", "1"]), default="0", show_default=True)
@click.option("--agent-id", default=None)
@click.option("--customer-id", default=None)
@click.option("--queue", default=None)
@click.option("--token", envvar="CALLSENSE_GATEWAY_TOKEN", default=None,
              help="Bearer token for /stream (default CALLSENSE_GATEWAY_TOKEN).")  # fmt: skip
def replay_cmd(
    file: Path, url: str, protocol: str, speed: str, call_id: str | None, agent_channel: str,
    agent_id: str | None, customer_id: str | None, queue: str | None, token: str | None,
) -> None:  # fmt: skip
    """Play FILE to the gateway at URL (ws://host:port/twilio or /stream) as that protocol's
    client does."""
    from callsense.ingest.producer import IngestError, load_call_audio, new_call_id, parse_speed

    try:
        audio, sr = load_call_audio(file)
    except IngestError as exc:
        raise click.ClickException(str(exc)) from exc
    cid = call_id or new_call_id(file)
    meta = {k: v for k, v in (("agent_id", agent_id), ("customer_id", customer_id),
                              ("queue", queue)) if v}  # fmt: skip
    ach = int(agent_channel)
    if protocol == "twilio":
        frames: list[tuple[float, Any]] = twilio_frames(
            audio, sr, "CA" + uuid.uuid4().hex, {"call_id": cid, **meta}, ach
        )  # type: ignore[assignment]
    else:
        frames = stream_frames(audio, sr, cid, meta, ach)
    headers = {"Authorization": f"Bearer {token}"} if token and protocol == "stream" else {}
    t0 = time.monotonic()
    try:
        asyncio.run(replay(frames, url, parse_speed(speed), headers))
    except OSError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from exc
    except Exception as exc:
        if type(exc).__name__ in ("InvalidStatus", "InvalidHandshake"):
            raise click.ClickException(f"{url} refused the stream: {exc}") from exc
        raise
    click.echo(f"{cid}: {audio.shape[1] / sr:.1f} s sent as {protocol} in "
               f"{time.monotonic() - t0:.1f} s")  # fmt: skip
