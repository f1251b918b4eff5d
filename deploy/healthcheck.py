"""Container health probe (stdlib only, baked into the image as /opt/callsense/healthcheck.py).

    python healthcheck.py http://127.0.0.1:8050/     # healthy: any HTTP answer below 500
    python healthcheck.py tcp://kafka:9092           # healthy: the port accepts a connection

A login page (401/302) still proves the server is up; only a refused connection, a timeout or
a 5xx makes the container unhealthy. Exit code 0 = healthy, 1 = unhealthy.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit


def probe(target: str, timeout: float = 5.0) -> tuple[bool, str]:
    parts = urlsplit(target)
    if parts.scheme == "tcp":
        if not parts.hostname or not parts.port:
            return False, f"bad tcp target {target!r}"
        try:
            socket.create_connection((parts.hostname, parts.port), timeout).close()
        except OSError as exc:
            return False, f"{target}: {exc}"
        return True, f"{target}: connected"
    if parts.scheme not in ("http", "https"):
        return False, f"unsupported target {target!r}"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:  # noqa: S310
            return True, f"{target}: HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return exc.code < 500, f"{target}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{target}: {exc}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: healthcheck.py http://host:port/path | tcp://host:port", file=sys.stderr)
        return 2
    ok, message = probe(argv[1])
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
