"""Genesys AudioHook (protocol version 2) for the gateway's ``/audiohook`` endpoint: message
envelopes, the handshake's HTTP message signature, and one session's state machine.

A session: the client sends ``open`` (offering media: PCMU or L16, 8 kHz, channels
``external`` = the customer and ``internal`` = the agent), the server answers ``opened`` with the
one offer it takes, then binary frames carry headerless audio, interleaved in the order of the
chosen channels (PCMU: one byte per sample; L16: little-endian int16, as Genesys' reference
implementation reads it). ``ping`` gets ``pong``; ``paused``/``resumed``/``discarded`` report
audio the client did not send (filled with silence here so call time stays conversation time);
``close`` gets ``closed``. Errors get ``disconnect`` (reason ``error``) before the socket closes.
Every text message carries ``version`` "2", the session ``id``, and ``seq`` (1, 2, ... per side);
client messages add ``serverseq`` (the last server seq seen) and ``position`` (``PT<s>S``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from callsense.models.g711 import mulaw_decode

VERSION = "2"
RATE = 8000
FORMATS = ("PCMU", "L16")
ROLE_OF_CHANNEL = {"internal": "agent", "external": "customer"}
NIL_UUID = "00000000-0000-0000-0000-000000000000"
SIGNED_COMPONENTS = (
    "@request-target", "@authority", "audiohook-organization-id", "audiohook-session-id",
    "audiohook-correlation-id", "x-api-key",
)  # fmt: skip
SIGNATURE_MAX_AGE_S = 10.0
CLOCK_SKEW_S = 3.0
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DURATION = re.compile(r"^PT((?:\d*\.)?\d+)S$")


class AudioHookError(ValueError):
    """A message that breaks the protocol; the session answers ``disconnect`` and closes."""


def parse_duration(value: Any) -> float:
    """``PT1.5S`` -> 1.5 (the only duration form the protocol uses)."""
    m = _DURATION.match(value) if isinstance(value, str) else None
    if not m:
        raise AudioHookError(f"bad duration {value!r} (expected PT<seconds>S)")
    return float(m.group(1))


def duration(seconds: float) -> str:
    return f"PT{seconds:.3f}".rstrip("0").rstrip(".") + "S"


def is_uuid(value: Any) -> bool:
    return isinstance(value, str) and bool(_UUID.match(value))


# --------------------------------------------------------------------------- handshake signature


def signature_base(components: dict[str, str], params: str) -> str:
    """The HTTP message signature base: one ``"name": value`` line per covered component, then
    ``"@signature-params"`` with the Signature-Input's inner list; no trailing newline."""
    lines = [f'"{name}": {value.strip()}' for name, value in components.items()]
    return "\n".join([*lines, f'"@signature-params": {params}'])


def _hmac(secret_b64: str, base: str) -> str:
    key = base64.b64decode(secret_b64)
    return base64.b64encode(hmac.new(key, base.encode(), hashlib.sha256).digest()).decode()


def _components(path: str, authority: str, headers: Any) -> dict[str, str]:
    values = {"@request-target": path, "@authority": authority}
    for name in SIGNED_COMPONENTS[2:]:
        values[name] = headers.get(name) or ""
    return values


def sign_request(
    path: str, authority: str, headers: dict[str, str], api_key: str, secret_b64: str,
    created: int | None = None, lifetime_s: int = 30, nonce: str | None = None,
) -> dict[str, str]:  # fmt: skip
    """``Signature-Input`` and ``Signature`` headers for an AudioHook handshake (client side)."""
    created = int(time.time()) if created is None else created
    nonce = nonce or base64.b64encode(np.random.default_rng().bytes(18)).decode()
    inner = "(" + " ".join(f'"{c}"' for c in SIGNED_COMPONENTS) + ")"
    params = (f'{inner};keyid="{api_key}";nonce="{nonce}";alg="hmac-sha256";'
              f"created={created};expires={created + lifetime_s}")  # fmt: skip
    lower = {k.lower(): v for k, v in headers.items()}
    base = signature_base(_components(path, authority, lower), params)
    return {"Signature-Input": f"sig1={params}", "Signature": f"sig1=:{_hmac(secret_b64, base)}:"}


def verify_signature(
    path: str, authority: str, headers: Any, api_key: str, secret_b64: str,
    now: float | None = None,
) -> str | None:  # fmt: skip
    """None when the handshake's signature is valid, else why not."""
    sig_input, sig = headers.get("Signature-Input") or "", headers.get("Signature") or ""
    m = re.fullmatch(r"\s*(\w+)=(\(.*)", sig_input)
    if not m:
        return "missing or malformed Signature-Input"
    label, params = m.group(1), m.group(2)
    covered = re.match(r"\(([^)]*)\)", params)
    names = re.findall(r'"([^"]+)"', covered.group(1)) if covered else []
    if sorted(names) != sorted(SIGNED_COMPONENTS):
        return "the signature must cover " + ", ".join(SIGNED_COMPONENTS)
    attrs = dict(re.findall(r';(\w+)=("[^"]*"|\d+)', params))
    attrs = {k: v.strip('"') for k, v in attrs.items()}
    if attrs.get("alg", "hmac-sha256") != "hmac-sha256" or attrs.get("keyid") != api_key:
        return "signature keyid/alg do not match the API key (hmac-sha256)"
    if len(attrs.get("nonce", "")) < 22:
        return "signature nonce missing or too short"
    now = time.time() if now is None else now
    try:
        created = int(attrs["created"])
        expires = int(attrs.get("expires", created + SIGNATURE_MAX_AGE_S))
    except (KeyError, ValueError):
        return "signature has no created time"
    if created > now + CLOCK_SKEW_S or now - created > SIGNATURE_MAX_AGE_S + CLOCK_SKEW_S:
        return "signature too old or from the future"
    if now > expires + CLOCK_SKEW_S:
        return "signature expired"
    given = re.fullmatch(rf"\s*{label}=:([A-Za-z0-9+/=]+):\s*", sig)
    if not given:
        return "missing or malformed Signature"
    order = {n: i for i, n in enumerate(names)}
    comps = _components(path, authority, headers)
    comps = dict(sorted(comps.items(), key=lambda kv: order[kv[0]]))
    expected = _hmac(secret_b64, signature_base(comps, params))
    if not hmac.compare_digest(given.group(1).encode(), expected.encode()):
        return "signature does not match"
    return None


# --------------------------------------------------------------------------- one session


@dataclass
class Opened:
    """What ``open`` decided: the call's id and metadata, and how to read the audio."""

    call_id: str
    fmt: str
    channels: tuple[str, ...]
    customer_id: str | None
    queue: str | None
    probe: bool


@dataclass
class AudioHookSession:
    """The protocol state of one ``/audiohook`` socket (no I/O): feed it client text messages
    with :meth:`on_text` and binary frames with :meth:`on_audio`; it returns the replies and
    the audio as (agent, customer) int16 samples."""

    session_id: str
    org_id: str | None = None
    seq: int = 0  # server messages sent
    client_seq: int = 0  # last client seq seen
    state: str = "new"  # new -> active <-> paused -> closed
    opened: Opened | None = None
    samples: int = 0  # per channel, received or filled with silence
    filled: int = 0  # samples of silence filled for paused/discarded audio
    events: list[str] = field(default_factory=list)

    def reply(self, kind: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        self.seq += 1
        return {"version": VERSION, "id": self.session_id, "type": kind, "seq": self.seq,
                "clientseq": self.client_seq, "parameters": parameters or {}}  # fmt: skip

    def disconnect(self, info: str) -> dict[str, Any]:
        return self.reply("disconnect", {"reason": "error", "info": info[:200]})

    def on_text(self, msg: dict[str, Any]) -> tuple[list[dict[str, Any]], np.ndarray | None]:
        """Replies to send, and silence to add to the call (``(2, n)`` int16) or None."""
        if msg.get("version") != VERSION:
            raise AudioHookError(f"protocol version {msg.get('version')!r} (this server: 2)")
        if msg.get("id") != self.session_id:
            raise AudioHookError("message id is not the session id of the handshake")
        seq, serverseq = msg.get("seq"), msg.get("serverseq")
        if not isinstance(seq, int) or seq != self.client_seq + 1:
            raise AudioHookError(f"seq {seq!r} out of order (expected {self.client_seq + 1})")
        if not isinstance(serverseq, int) or not 0 <= serverseq <= self.seq:
            raise AudioHookError(f"serverseq {serverseq!r} is not a seq this server sent")
        if not isinstance(msg.get("parameters", {}), dict):
            raise AudioHookError("parameters must be an object")
        self.client_seq = seq
        kind, params = msg.get("type"), msg.get("parameters") or {}
        self.events.append(str(kind))
        if kind == "open":
            if self.state != "new":
                raise AudioHookError("a second open on one session")
            self.opened = self._open(params)
            self.state = "active"
            media = [] if self.opened.probe else [{
                "type": "audio", "format": self.opened.fmt,
                "channels": list(self.opened.channels), "rate": RATE}]  # fmt: skip
            return [self.reply("opened", {"startPaused": False, "media": media})], None
        if self.state == "new":
            raise AudioHookError(f"{kind!r} before open")
        if kind == "ping":
            return [self.reply("pong")], None
        if kind == "paused":
            self.state = "paused"
            return [], None
        if kind in ("resumed", "discarded"):
            self.state = "active" if kind == "resumed" else self.state
            gap = parse_duration(params.get("discarded", "PT0S"))
            if gap > 3600:
                raise AudioHookError(f"{kind}: {gap} s discarded is beyond an hour")
            n = int(round(gap * RATE))
            self.samples += n
            self.filled += n
            return [], np.zeros((2, n), np.int16)
        if kind == "update":
            return [], None
        if kind == "error":
            return [], None  # the client closes next; its code and message are logged
        if kind == "close":
            self.state = "closed"
            return [self.reply("closed")], None
        raise AudioHookError(f"unknown AudioHook message type {kind!r}")

    def on_audio(self, frame: bytes) -> np.ndarray:
        """(2, n) int16: row 0 the agent (``internal``), row 1 the customer (``external``); a
        channel not chosen at open stays silent."""
        if self.state != "active" or self.opened is None or self.opened.probe:
            raise AudioHookError(f"audio while the session is {self.state} (not active)")
        nch = len(self.opened.channels)
        width = 2 if self.opened.fmt == "L16" else 1
        if len(frame) % (width * nch):
            raise AudioHookError(f"{len(frame)} bytes is not whole {self.opened.fmt} frames of "
                                 f"{nch} channel(s)")  # fmt: skip
        if self.opened.fmt == "L16":
            pcm = np.frombuffer(frame, dtype="<i2").astype(np.int16)
        else:
            pcm = mulaw_decode(frame)
        pcm = pcm.reshape(-1, nch)
        out = np.zeros((2, len(pcm)), np.int16)
        for i, name in enumerate(self.opened.channels):
            out[0 if name == "internal" else 1] = pcm[:, i]
        self.samples += len(pcm)
        return out

    def _open(self, params: dict[str, Any]) -> Opened:
        org = params.get("organizationId")
        if self.org_id and org != self.org_id:
            raise AudioHookError("organizationId differs from the Audiohook-Organization-Id")
        conv = params.get("conversationId")
        if not is_uuid(conv):
            raise AudioHookError("open: conversationId must be a UUID")
        participant = params.get("participant") or {}
        if not isinstance(participant, dict):
            raise AudioHookError("open: participant must be an object")
        offers = params.get("media")
        if not isinstance(offers, list) or not offers:
            raise AudioHookError("open: media must be a non-empty list of offers")
        chosen = _choose(offers)
        if chosen is None:
            raise AudioHookError("open: no offer of PCMU or L16 audio at 8000 Hz with channels "
                                 "external/internal")  # fmt: skip
        custom = params.get("customConfig") or {}
        queue = custom.get("queue") if isinstance(custom, dict) else None
        pid = participant.get("id")
        return Opened(
            call_id=conv, fmt=chosen["format"], channels=tuple(chosen["channels"]),
            customer_id=pid if is_uuid(pid) and pid != NIL_UUID else None,
            queue=str(queue)[:128] if isinstance(queue, str | int) else None,
            probe=conv == NIL_UUID,
        )  # fmt: skip


def _choose(offers: list[Any]) -> dict[str, Any] | None:
    """The offer to take: both channels before one, PCMU before L16 (the order Genesys offers),
    else the first acceptable one."""
    ok = [o for o in offers if isinstance(o, dict) and o.get("type", "audio") == "audio"
          and o.get("format") in FORMATS and o.get("rate") == RATE
          and isinstance(o.get("channels"), list) and 1 <= len(o["channels"]) <= 2
          and len(set(o["channels"])) == len(o["channels"])
          and set(o["channels"]) <= set(ROLE_OF_CHANNEL)]  # fmt: skip
    if not ok:
        return None
    return min(ok, key=lambda o: (-len(o["channels"]), FORMATS.index(o["format"])))
