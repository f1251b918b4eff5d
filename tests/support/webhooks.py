"""A real HTTP webhook receiver that verifies Standard Webhooks signatures."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from callsense.processors.events import (
    CallStart,
    call_ended_event,
    call_started_event,
    window_event,
)
from callsense.processors.webhooks import WebhookVerificationError, verify

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Receiver:
    """A real HTTP server that verifies signatures; fails its first ``fail_first`` requests
    (one 503, then one that answers too late for the client), then accepts. ``port`` 0 picks a
    free port; a given one brings a receiver back where an earlier one listened."""

    def __init__(
        self,
        fail_first: int = 0,
        slow_s: float = 0.0,
        fail_status: int = 503,
        hang_s: float = 0.0,
        port: int = 0,
    ) -> None:
        self.fail_first = fail_first
        self.slow_s = slow_s
        self.fail_status = fail_status  # the answer to the first fail_first requests
        self.hang_s = hang_s  # every request waits this long before any answer
        self.requests: list[dict] = []  # answered (after any hang)
        self.arrived = 0  # requests received, answered or not
        self.accepted: dict[str, int] = {}
        self.accepted_at: dict[str, float] = {}  # first acceptance, unix time
        self.lock = threading.Lock()
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                with recv.lock:
                    recv.arrived += 1
                if recv.hang_s:
                    time.sleep(recv.hang_s)
                with recv.lock:
                    n = len(recv.requests)
                    try:
                        msg_id = verify(SECRET, dict(self.headers), body)
                        valid = True
                    except WebhookVerificationError:
                        msg_id, valid = self.headers.get("webhook-id", ""), False
                    recv.requests.append(
                        {"id": msg_id, "valid": valid, "body": json.loads(body), "n": n}
                    )
                if not valid:
                    self.send_response(401)
                elif n < recv.fail_first:
                    if n % 2 == 1 and recv.slow_s:
                        time.sleep(recv.slow_s)  # the client has timed out by now
                    self.send_response(recv.fail_status)
                else:
                    with recv.lock:
                        recv.accepted[msg_id] = recv.accepted.get(msg_id, 0) + 1
                        recv.accepted_at.setdefault(msg_id, time.time())
                    self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def window(call_id: str, i: int, label: str) -> dict:
    """The customer's ``i``-th window event, ``label`` at 0.85."""
    probs = {"angry": 0.05, "happy": 0.05, "neutral": 0.05, "sad": 0.05, label: 0.85}
    return window_event({
        "call_id": call_id, "speaker": "ch1", "role": "customer", "start_ms": i * 1000,
        "end_ms": i * 1000 + 3000, "label": label, "raw_label": label, "confidence": 0.85,
        "uncertain": False, "probabilities": probs, "smoothed_label": label,
        "smoothed_probabilities": probs,
    })  # fmt: skip


def angry_call(call_id: str, windows: int = 8) -> list[dict]:
    """Window-topic events of a call whose customer is angry throughout, then ends: the
    ``customer_anger`` rule raises one alert and resolves it at the end."""
    start = CallStart(call_id, 16000, 2, agent_id="agent-7", customer_id="cust-42",
                      queue="billing")  # fmt: skip
    events = [call_started_event(start, [("ch0", "agent", 0), ("ch1", "customer", 1)])]
    events += [window(call_id, i, "angry") for i in range(windows)]
    events += [call_ended_event(call_id, windows + 3.0, {"ch0": 0.0, "ch1": windows + 2.0}, 0.0)]
    return events
