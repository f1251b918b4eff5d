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


def telephone_legs(audio: np.ndarray, sr: int, agent_channel: int) -> dict[str, np.ndarray]:
    """``audio`` ((C, T) float) as the 8 kHz legs of a phone call: ``customer``, and ``agent``
    for a stereo call (a mono file is the customer alone)."""
    from callsense.models.audio import resample

    chans = [resample(ch, sr, 8000) if sr != 8000 else ch for ch in audio]
    if len(chans) == 1:
        return {"customer": chans[0]}
    return {"agent": chans[agent_channel], "customer": chans[1 - agent_channel]}


def twilio_frames(
    audio: np.ndarray, sr: int, call_sid: str, params: dict[str, str], agent_channel: int = 0
) -> list[tuple[float, str]]:
    """(send time in s, text frame) of a Twilio Media Stream of ``audio`` ((C, T) float):
    the agent channel as the outbound track, the other (or the only one) as inbound."""
    from callsense.models.g711 import mulaw_encode

    rate = 8000
    names = {"agent": "outbound", "customer": "inbound"}
    tracks = {names[k]: x for k, x in telephone_legs(audio, sr, agent_channel).items()}
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


AUDIOHOOK_FRAME_MS = 200  # Genesys' reference client sends 200 ms per binary frame


def audiohook_headers(
    url: str, api_key: str, secret: str | None, session_id: str, org_id: str
) -> dict[str, str]:
    """The handshake headers of an AudioHook client (signed when ``secret`` is given)."""
    from urllib.parse import urlsplit

    from callsense.ingest.audiohook import sign_request

    headers = {"Audiohook-Organization-Id": org_id, "Audiohook-Session-Id": session_id,
               "Audiohook-Correlation-Id": str(uuid.uuid4()), "X-API-KEY": api_key}  # fmt: skip
    if secret:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers.update(sign_request(target, parts.netloc, headers, api_key, secret))
    return headers


async def audiohook_client(
    audio: np.ndarray, sr: int, url: str, conversation_id: str, agent_channel: int = 0,
    api_key: str = "", secret: str | None = None, speed: float | None = 1.0,
    participant_id: str | None = None, custom: dict[str, Any] | None = None,
    fmt: str = "PCMU",
) -> dict[str, Any]:  # fmt: skip
    """Play ``audio`` ((C, T) float) to ``url`` as a Genesys AudioHook client: ``open`` with a
    stereo offer (external = the customer, internal = the agent), binary frames in the order of
    the channels the server chose, a ``ping`` every 5 s of audio, then ``close``; waits for
    ``closed``. Returns what the server said (message types, its disconnect reason if any)."""
    from callsense.ingest.audiohook import VERSION, duration
    from callsense.models.g711 import mulaw_encode
    from websockets.asyncio.client import connect

    rate = 8000
    names = {"agent": "internal", "customer": "external"}
    by_name = {names[k]: x for k, x in telephone_legs(audio, sr, agent_channel).items()}
    session_id, org = str(uuid.uuid4()), str(uuid.uuid4())
    headers = audiohook_headers(url, api_key, secret, session_id, org)
    seq, server_seq, got = 0, 0, []

    def msg(kind: str, position_s: float, params: dict[str, Any] | None = None) -> str:
        nonlocal seq
        seq += 1
        return json.dumps({"version": VERSION, "id": session_id, "type": kind, "seq": seq,
                           "serverseq": server_seq, "position": duration(position_s),
                           "parameters": params or {}})  # fmt: skip

    async with connect(url, additional_headers=headers, max_size=1 << 20) as ws:

        async def reader() -> None:
            nonlocal server_seq
            async for frame in ws:
                m = json.loads(frame)
                server_seq = m.get("seq", server_seq)
                got.append(m)

        task = asyncio.create_task(reader())
        offers = [{"type": "audio", "format": fmt, "channels": list(by_name), "rate": rate}]
        await ws.send(msg("open", 0.0, {
            "organizationId": org, "conversationId": conversation_id,
            "participant": {"id": participant_id or str(uuid.uuid4()), "ani": "",
                            "aniName": "", "dnis": ""},
            "media": offers, "language": "en-US", **({"customConfig": custom} if custom else {}),
        }))  # fmt: skip
        while not any(m.get("type") in ("opened", "disconnect") for m in got):
            if task.done():
                break
            await asyncio.sleep(0.01)
        opened = next((m for m in got if m.get("type") == "opened"), None)
        if opened is not None and opened["parameters"].get("media"):
            names = opened["parameters"]["media"][0]["channels"]
            pcm = np.stack([_as_int16(by_name[n]) for n in names], axis=1)  # (T, C)
            step = rate * AUDIOHOOK_FRAME_MS // 1000
            t0, next_ping = time.monotonic(), 5.0
            for s in range(0, len(pcm), step):
                if speed:
                    delay = t0 + s / rate / speed - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                block = pcm[s : s + step]
                data = (mulaw_encode(block.reshape(-1)) if fmt == "PCMU"
                        else block.astype("<i2").tobytes())  # fmt: skip
                await ws.send(data)
                if s / rate >= next_ping:
                    await ws.send(msg("ping", s / rate))
                    next_ping += 5.0
            if not any(m.get("type") == "disconnect" for m in got):
                await ws.send(msg("close", len(pcm) / rate, {"reason": "end"}))
        deadline = time.monotonic() + 10
        while not any(m.get("type") in ("closed", "disconnect") for m in got):
            if task.done() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        await ws.close()
        task.cancel()
    kinds = [m.get("type") for m in got]
    dis = next((m["parameters"] for m in got if m.get("type") == "disconnect"), None)
    return {"session_id": session_id, "server_messages": kinds, "disconnect": dis}


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
    """Telephony media gateway: /twilio (Twilio Media Streams), /audiohook (Genesys AudioHook),
    /stream (generic)."""
    if ctx.invoked_subcommand is not None:
        return
    import logging

    from callsense.ingest.gateway import LOOPBACK, serve

    from callsense.settings import get_settings

    settings = get_settings()
    host = host or settings.gateway_host
    port = port or settings.gateway_port
    creds = (settings.gateway_token, settings.twilio_auth_token, settings.audiohook_api_key)
    if host not in LOOPBACK and all(c is None for c in creds):
        raise click.ClickException(
            "the gateway is bound beyond loopback with no credential: set "
            "CALLSENSE_GATEWAY_TOKEN (/stream), CALLSENSE_TWILIO_AUTH_TOKEN (/twilio) or "
            "CALLSENSE_AUDIOHOOK_API_KEY (/audiohook); endpoints without one refuse clients"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    click.echo(f"callsense gateway on ws://{host}:{port}/ (/twilio, /audiohook, /stream)",
               err=True)  # fmt: skip
    try:
        asyncio.run(serve(settings, host, port))
    except KeyboardInterrupt:
        pass


@gateway_group.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("url")
@click.option("--protocol", type=click.Choice(["twilio", "audiohook", "stream"]),
              default="stream", show_default=True)  # fmt: skip
@click.option("--speed", default="1", show_default=True, help="1 = real time, N, or max.")
@click.option("--call-id", default=None, help="Call id (default: file name + random suffix).")
@click.option("--agent-channel", type=click.Choice(["0", "1"]), default="0", show_default=True)
@click.option("--agent-id", default=None)
@click.option("--customer-id", default=None)
@click.option("--queue", default=None)
@click.option("--token", envvar="CALLSENSE_GATEWAY_TOKEN", default=None,
              help="Bearer token for /stream (default CALLSENSE_GATEWAY_TOKEN).")  # fmt: skip
@click.option("--api-key", envvar="CALLSENSE_AUDIOHOOK_API_KEY", default="",
              help="AudioHook X-API-KEY (default CALLSENSE_AUDIOHOOK_API_KEY).")  # fmt: skip
@click.option("--client-secret", envvar="CALLSENSE_AUDIOHOOK_CLIENT_SECRET", default=None,
              help="AudioHook client secret: sign the handshake.")  # fmt: skip
def replay_cmd(
    file: Path, url: str, protocol: str, speed: str, call_id: str | None, agent_channel: str,
    agent_id: str | None, customer_id: str | None, queue: str | None, token: str | None,
    api_key: str, client_secret: str | None,
) -> None:  # fmt: skip
    """Play FILE to the gateway at URL (ws://host:port/twilio, /audiohook or /stream) as that
    protocol's client does. AudioHook calls are identified by a conversation UUID (--call-id
    must be one; default: a new one)."""
    from callsense.ingest.producer import IngestError, load_call_audio, new_call_id, parse_speed

    try:
        audio, sr = load_call_audio(file)
    except IngestError as exc:
        raise click.ClickException(str(exc)) from exc
    cid = call_id or new_call_id(file)
    meta = {k: v for k, v in (("agent_id", agent_id), ("customer_id", customer_id),
                              ("queue", queue)) if v}  # fmt: skip
    ach = int(agent_channel)
    pace = parse_speed(speed)
    if protocol == "audiohook":
        cid = call_id or str(uuid.uuid4())
        custom = {"queue": queue} if queue else None
        run = audiohook_client(audio, sr, url, cid, ach, api_key, client_secret, pace,
                               custom=custom)  # fmt: skip
    else:
        if protocol == "twilio":
            frames: list[tuple[float, Any]] = twilio_frames(
                audio, sr, "CA" + uuid.uuid4().hex, {"call_id": cid, **meta}, ach
            )  # type: ignore[assignment]
        else:
            frames = stream_frames(audio, sr, cid, meta, ach)
        headers = {"Authorization": f"Bearer {token}"} if token and protocol == "stream" else {}
        run = replay(frames, url, pace, headers)
    t0 = time.monotonic()
    try:
        said = asyncio.run(run)
    except OSError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from exc
    except Exception as exc:
        if type(exc).__name__ in ("InvalidStatus", "InvalidHandshake"):
            raise click.ClickException(f"{url} refused the stream: {exc}") from exc
        raise
    if said and said["disconnect"]:  # AudioHook: the server ended the session with an error
        raise click.ClickException(f"{url} disconnected: {said['disconnect']}")
    click.echo(f"{cid}: {audio.shape[1] / sr:.1f} s sent as {protocol} in "
               f"{time.monotonic() - t0:.1f} s")  # fmt: skip
