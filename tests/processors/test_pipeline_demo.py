"""``callsense demo``: starts broker, worker and dashboard, streams the sample calls; within 60 s
every sample call has emotion windows for its customer (agent emotion is opt-in); SIGTERM stops
everything (no orphans)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from callsense.broker import free_port

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.parametrize("broker", ["noida", "kafka"])
def test_demo_streams_sample_calls_and_stops_cleanly(broker: str, tmp_path: Path) -> None:
    """The default embedded broker (noida, no Java) and Apache Kafka (``--broker kafka``)."""
    from callsense.demo import sample_calls

    n_calls = len(sample_calls())
    port = free_port()
    env = dict(os.environ)
    env.update(
        CALLSENSE_DATA_DIR=str(tmp_path / "var"),
        CALLSENSE_DATABASE_URL="",
        CALLSENSE_APP_ID="callsense-demo-test",
        PYTHONUNBUFFERED="1",
    )
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "callsense.cli", "demo", "--port", str(port), "--broker", broker],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        both = re.compile(r"^\s*([\d.]+) s\s+(\S+): windows for ch[01] \(customer\)$")
        while time.monotonic() - t0 < 60:
            hits = [m for m in map(both.match, list(lines)) if m]
            if len({m.group(2).split("-r")[0] for m in hits}) >= n_calls:
                break
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.5)
        hits = [m for m in map(both.match, list(lines)) if m]
        calls = {m.group(2).split("-r")[0] for m in hits}
        assert len(calls) == n_calls, "not every sample call had windows within 60 s:\n" + "".join(
            lines
        )
        assert max(float(m.group(1)) for m in hits) < 60
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        reader.join(5)
    out = "".join(lines)
    assert code == 0, out
    assert "stopped after" in out
    pids = [int(p) for p in re.findall(r"pid (\d+)", out)]
    assert len(pids) == 4, out  # broker, worker, gateway, dashboard
    assert re.search(r"\S+-r1-\S+: through the gateway \(ws://127.0.0.1:\d+/twilio\)", out), out
    time.sleep(0.5)
    assert not [p for p in pids if _alive(p)], f"orphan processes left: {pids}\n{out}"
