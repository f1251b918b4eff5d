"""``callsense dashboard`` as a real process: migrates, serves pages and the API; refuses to bind
beyond loopback without a sign-in secret."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from callsense.broker import free_port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("CALLSENSE_DASHBOARD_PASSWORD", "CALLSENSE_API_TOKEN", "CALLSENSE_DATABASE_URL"):
        env.pop(k, None)
    env.update(CALLSENSE_DATA_DIR=str(tmp_path), **extra)
    return env


@contextmanager
def _serving(env: dict[str, str], path: str = "/") -> Iterator[tuple[str, httpx.Response]]:
    """`callsense dashboard` on a free loopback port: (base URL, first answer to ``path``)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "callsense.cli", "dashboard", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(base + path, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "dashboard did not start"
                time.sleep(0.3)
        yield base, r
    finally:
        proc.terminate()
        proc.wait(10)


def test_dashboard_command_serves_on_loopback(tmp_path: Path) -> None:
    with _serving(_env(tmp_path, CALLSENSE_API_TOKEN="tok")) as (base, r):
        assert r.status_code == 200 and "callsense" in r.text
        # served by waitress, not Flask's development server, and it does not name itself
        assert "server" not in {k.lower() for k in r.headers}
        assert httpx.get(base + "/_dash-layout").status_code == 200  # no sign-in on loopback
        api = httpx.get(base + "/api/calls", headers={"Authorization": "Bearer tok"})
        assert api.status_code == 200 and api.json()["total"] == 0  # migrated, empty
        assert (tmp_path / "callsense.db").exists()


def test_dashboard_refuses_public_bind_without_secret(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "callsense.cli", "dashboard", "--host", "0.0.0.0",
         "--port", str(free_port())],
        env=_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode != 0
    assert "CALLSENSE_DASHBOARD_PASSWORD" in r.stderr


def test_a_set_password_is_enforced_on_loopback_too(tmp_path: Path) -> None:
    env = _env(tmp_path, CALLSENSE_DASHBOARD_PASSWORD="pw-123")
    with _serving(env, "/history") as (_base, r):
        assert r.status_code == 302 and r.headers["location"].startswith("/login")
