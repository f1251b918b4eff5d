"""A real HTTP webhook receiver that verifies Standard Webhooks signatures."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from callsense.processors.webhooks import WebhookVerificationError, verify

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Receiver:
    """A real HTTP server that verifies signatures; fails its first ``fail_first`` requests
    (one 503, then one that answers too late for the client), then accepts."""

    def __init__(
        self, fail_first: int = 0, slow_s: float = 0.0, fail_status: int = 503, hang_s: float = 0.0
    ) -> None:
        self.fail_first = fail_first
        self.slow_s = slow_s
        self.fail_status = fail_status  # the answer to the first fail_first requests
        self.hang_s = hang_s  # every request waits this long before any answer
        self.requests: list[dict] = []
        self.accepted: dict[str, int] = {}
        self.lock = threading.Lock()
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
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
                    self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
