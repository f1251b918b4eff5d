"""Genesys AudioHook protocol pieces without a socket: the handshake signature against the
documented worked example, and the session state machine (sequence numbers, offers, audio
layout, pauses filled with silence, close)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from callsense.ingest.audiohook import (
    AudioHookError,
    AudioHookSession,
    duration,
    parse_duration,
    sign_request,
    verify_signature,
)
from callsense.models.g711 import mulaw_decode, mulaw_encode

SECRET = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="
KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
HEADERS = {
    "Audiohook-Organization-Id": "d7934305-0972-4844-938e-9060eef73d05",
    "Audiohook-Session-Id": "30b0e395-84d3-4570-ac13-9a62d8f514c0",
    "Audiohook-Correlation-Id": "e160e428-53e2-487c-977d-96989bf5c99d",
    "X-API-KEY": KEY,
}
PATH, HOST = "/api/v1/voicebiometrics/ws", "audiohook.example.com"


class Caseless(dict):
    def get(self, key: str, default: Any = None) -> Any:
        return next((v for k, v in self.items() if k.lower() == key.lower()), default)


def test_signature_matches_the_documented_example_and_verifies() -> None:
    created = 1641013200
    signed = sign_request(PATH, HOST, HEADERS, KEY, SECRET, created=created,
                          lifetime_s=1641013230, nonce="VGhpc0lzQVVuaXF1ZU5vbmNl")  # fmt: skip
    assert signed["Signature"] == "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:"
    headers = Caseless({**HEADERS, **signed})
    assert verify_signature(PATH, HOST, headers, KEY, SECRET, now=created + 2) is None
    assert "too old" in verify_signature(PATH, HOST, headers, KEY, SECRET, now=created + 60)
    assert "does not match" in verify_signature(PATH + "x", HOST, headers, KEY, SECRET,
                                                now=created + 2)  # fmt: skip
    tampered = Caseless({**headers, "Audiohook-Session-Id": "30b0e395-84d3-4570-ac13-000000000000"})
    assert "does not match" in verify_signature(PATH, HOST, tampered, KEY, SECRET, now=created)
    assert "keyid" in verify_signature(PATH, HOST, headers, "other-key", SECRET, now=created)
    unsigned = Caseless(HEADERS)
    assert "Signature-Input" in verify_signature(PATH, HOST, unsigned, KEY, SECRET)


def test_durations() -> None:
    assert parse_duration("PT1.5S") == 1.5 and parse_duration("PT0S") == 0.0
    assert duration(2.25) == "PT2.25S" and duration(3) == "PT3S"
    for bad in ("1.5", "PT1.5M", "P1D", None, 3):
        with pytest.raises(AudioHookError):
            parse_duration(bad)


SID = "30b0e395-84d3-4570-ac13-9a62d8f514c0"
CONV = "090eaa2f-72fa-480a-83e0-8667ff89c0ec"


def _msg(s: AudioHookSession, kind: str, seq: int, **params: Any) -> dict[str, Any]:
    return {"version": "2", "id": SID, "type": kind, "seq": seq, "serverseq": s.seq,
            "position": "PT0S", "parameters": params}  # fmt: skip


def _open(s: AudioHookSession, media: list[dict[str, Any]]) -> list[dict[str, Any]]:
    participant = {"id": "883efee8-3d6c-4537-b500-6d7ca4b92fa0", "ani": "", "aniName": "",
                   "dnis": ""}  # fmt: skip
    replies, _ = s.on_text(_msg(s, "open", 1, organizationId="o", conversationId=CONV,
                                participant=participant, media=media))  # fmt: skip
    return replies


def test_session_opens_the_stereo_offer_and_lays_out_channels() -> None:
    s = AudioHookSession(SID)
    offers = [{"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000},
              {"type": "audio", "format": "PCMU", "channels": ["external", "internal"],
               "rate": 8000}]  # fmt: skip
    (opened,) = _open(s, offers)
    assert opened["type"] == "opened" and opened["seq"] == 1 and opened["clientseq"] == 1
    assert opened["parameters"]["media"] == [offers[1]]
    assert s.opened is not None and s.opened.call_id == CONV
    ext = np.array([100, -200, 300], np.int16)
    internal = np.array([-5, 7, 9], np.int16)
    decoded_ext, decoded_int = mulaw_decode(mulaw_encode(ext)), mulaw_decode(mulaw_encode(internal))
    frame = mulaw_encode(np.stack([ext, internal], axis=1).reshape(-1))
    out = s.on_audio(frame)
    assert np.array_equal(out[0], decoded_int) and np.array_equal(out[1], decoded_ext)
    (pong,), _ = s.on_text(_msg(s, "ping", 2))
    assert pong["type"] == "pong" and pong["clientseq"] == 2 and pong["seq"] == 2
    s.on_text(_msg(s, "paused", 3))
    with pytest.raises(AudioHookError, match="paused"):
        s.on_audio(frame)
    _, silence = s.on_text(_msg(s, "resumed", 4, start="PT0.1S", discarded="PT0.5S"))
    assert silence is not None and silence.shape == (2, 4000) and not silence.any()
    assert s.samples == 3 + 4000 and s.filled == 4000
    (closed,), _ = s.on_text(_msg(s, "close", 5, reason="end"))
    assert closed["type"] == "closed" and s.state == "closed"


def test_session_refuses_protocol_breaks() -> None:
    l16 = [{"type": "audio", "format": "L16", "channels": ["internal"], "rate": 8000}]
    s = AudioHookSession(SID)
    _open(s, l16)
    out = s.on_audio(np.array([1, -2], "<i2").tobytes())
    assert out.tolist() == [[1, -2], [0, 0]]  # internal = agent row; the customer is silent
    with pytest.raises(AudioHookError, match="whole L16"):
        s.on_audio(b"\x01\x02\x03")
    with pytest.raises(AudioHookError, match="out of order"):
        s.on_text(_msg(s, "ping", 5))
    cases = [
        ({"version": "1"}, "version"),
        ({"id": "nope"}, "session id"),
        ({"type": "dance"}, "unknown AudioHook message"),
        ({"serverseq": 99}, "serverseq"),
    ]
    for change, match in cases:
        s2 = AudioHookSession(SID)
        _open(s2, l16)
        with pytest.raises(AudioHookError, match=match):
            s2.on_text({**_msg(s2, "ping", 2), **change})
    s3 = AudioHookSession(SID)
    with pytest.raises(AudioHookError, match="before open"):
        s3.on_text(_msg(s3, "ping", 1))
    with pytest.raises(AudioHookError, match="no offer"):
        _open(AudioHookSession(SID), [{"type": "audio", "format": "opus", "channels":
                                       ["external"], "rate": 48000}])  # fmt: skip
