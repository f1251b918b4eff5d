"""Poison audio events: (raw Kafka value, the dead-letter reason it must get), every kind a
broken or hostile producer sends. Used by the parser's unit test and the worker's end-to-end
poison test."""

from __future__ import annotations


def _binary(header: bytes, samples: bytes = b"\x00\x00") -> bytes:
    """A binary audio chunk (``events.CHUNK_TAG``) around ``header``."""
    return b"CSA1" + len(header).to_bytes(2, "big") + header + samples


_CHUNK = (b'{"kind": "chunk", "call_id": "c", "seq": 0, "start_sample": 0, "sample_rate": 16000,'
          b' "channels": 2')  # fmt: skip

POISON: list[tuple[bytes, str]] = [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "expected an object"),
        (b'{"kind": "chunk"}', "call_id"),
        (b'{"kind": "wat", "call_id": "c"}', "unknown event kind"),
        (b'{"kind": "chunk", "call_id": "c", "seq": 0, "start_sample": 0, "sample_rate": 16000,'
         b' "channels": 3, "pcm": "AAAA"}', "channels"),
        (b'{"kind": "chunk", "call_id": "c", "seq": "0", "start_sample": 0, "sample_rate": 16000,'
         b' "channels": 1, "pcm": "AAAA"}', "wrong type"),
        (b'{"kind": "call_start", "call_id": "c", "sample_rate": 50, "channels": 1}',
         "out of range"),
        # control fields of every type and range an adversary sends: dead-lettered, never raised
        (b'{"kind": "call_end", "call_id": "c", "last_seq": "abc"}', "'last_seq' has wrong type"),
        (b'{"kind": "call_end", "call_id": "c", "last_seq": null}', "'last_seq' has wrong type"),
        (b'{"kind": "call_end", "call_id": "c", "last_seq": 1e400}', "'last_seq' has wrong type"),
        (b'{"kind": "call_end", "call_id": "c", "last_seq": 3, "ts": "noon"}', "'ts'"),
        (b'{"kind": "call_end", "call_id": "c", "last_seq": 3, "ts": []}', "'ts'"),
        (b'{"kind": "call_end", "call_id": "c", "last_seq": 3, "ts": NaN}', "plausible"),
        (b'{"kind": "call_start", "call_id": "c", "sample_rate": 8000, "channels": 2,'
         b' "agent_channel": "left", "ts": 1700000000}', "'agent_channel' has wrong type"),
        (b'{"kind": "call_start", "call_id": "c", "sample_rate": 8000, "channels": 2, "ts": 0}',
         "plausible"),
        (b'{"kind": "call_start", "call_id": "c", "sample_rate": 8000, "channels": 2}',
         "missing field 'ts'"),
        (b'{"kind": "call_start", "call_id": "c", "sample_rate": 8000, "channels": 1,'
         b' "ts": 1700000000, "queue": {"a": 1}}', "'queue' must be a string"),
        (b'{"kind": "chunk", "call_id": "c", "seq": 1000000000000000000, "start_sample": 0,'
         b' "sample_rate": 16000, "channels": 1, "pcm": "AAAA"}', "'seq' = .* out of range"),
        # binary chunks: torn, with a header that is not one, an unknown codec, torn frames
        (b"CSA1\x00\x40{", "cut short"),
        (_binary(b"[1]"), "expected an object"),
        (_binary(b'{"kind": "call_end", "call_id": "c"}'), "only chunks are binary"),
        (_binary(_CHUNK + b', "codec": "opus"}'), "unknown codec"),
        (_binary(_CHUNK + b', "codec": "pcm16"}', b"\x00\x01\x02"), "whole number of 2-channel"),
        (_binary(_CHUNK + b', "codec": "mulaw"}', b""), "empty audio"),
]  # fmt: skip
