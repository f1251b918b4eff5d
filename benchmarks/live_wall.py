"""``callsense bench live-wall``: the supervisors' live wall with many active calls in headless
Chromium, on data written as the stream writes it (``Writer``; three minutes of 1 s windows a
call before the page opens).

Measured: how long after navigation every call's card is on screen (fresh page loads), and the
server time and response size of the wall's per-tick update while a separate process keeps
writing one window a second to every call (every card changes every tick) or to a tenth of
them (most cards unchanged: the update sends only what changed). Server time is taken around
each ``/_dash-update-component`` request of the wall's callback in the dashboard's own Flask
server (which runs in this process; the writer and the browser are processes of their own).
"""

from __future__ import annotations

import multiprocessing
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from benchmarks.core import _write, bench_group

QUEUES = ("billing", "support", "tech")
HISTORY_S = 180  # windows already stored a call when the page opens


def _window(cid: str, k: int, anger: float) -> dict[str, Any]:
    probs = {"angry": anger, "neutral": 0.7 * (1 - anger), "sad": 0.2 * (1 - anger),
             "happy": 0.1 * (1 - anger)}  # fmt: skip
    label = max(probs, key=probs.__getitem__)
    return {"kind": "window", "call_id": cid, "speaker": "ch1", "role": "customer",
            "start_ms": 1000 * k, "end_ms": 1000 * k + 3000, "label": label, "raw_label": label,
            "confidence": probs[label], "uncertain": False, "probabilities": probs,
            "smoothed_label": label, "smoothed_probabilities": probs}  # fmt: skip


def _anger(i: int, k: int) -> float:
    return 0.1 + 0.8 * ((k + 7 * i) % 97) / 97 if i % 10 == 3 else 0.05 + 0.02 * (k % 3)


def seed(url: str, n: int) -> None:
    from callsense.storage.writer import Writer

    writer = Writer(url)
    try:
        for i in range(n):
            cid = f"live-{i:03d}"
            started = {"kind": "call_started", "call_id": cid, "sample_rate": 8000,
                       "channels": 2, "agent_channel": 0, "ts": time.time() - HISTORY_S,
                       "agent_id": f"ag-{i % 23}", "queue": QUEUES[i % 3],
                       "speakers": [{"speaker": "ch1", "role": "customer", "channel": 1}]}
            writer.write([started, *(_window(cid, k, _anger(i, k)) for k in range(HISTORY_S))])
    finally:
        writer.close()  # fmt: skip


def _stream(url: str, calls: list[int], stop: Any, second: Any) -> None:
    """One more window a second for each of ``calls`` (one transaction a second, as the
    stream's writer batches), from call second ``second`` on, until ``stop`` is set; leaves
    in ``second`` where it stopped, so that the next phase writes new windows, not replays."""
    from callsense.storage.writer import Writer

    writer = Writer(url)
    try:
        while not stop.is_set():
            t, k = time.monotonic(), second.value
            writer.write([_window(f"live-{i:03d}", k, _anger(i, k)) for i in calls])
            second.value = k + 1
            stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))
    finally:
        writer.close()


def _driver(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        raise click.ClickException("needs Debian chromium + chromium-driver (make system-deps)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--window-size=1500,1000", f"--user-data-dir={profile}"):
        opts.add_argument(arg)  # fmt: skip
    return webdriver.Chrome(service=Service(chromedriver), options=opts)


class Timings:
    """Server time and response size of every request of the live wall's callback."""

    def __init__(self, server: Any) -> None:
        from flask import g, request

        self.rows: list[tuple[float, float, int, int]] = []  # (at, ms, bytes, HTTP status)
        self.lock = threading.Lock()

        @server.before_request
        def _start() -> None:
            g.bench_t0 = time.perf_counter()

        @server.after_request
        def _stop(resp: Any) -> Any:
            if request.path == "/_dash-update-component":
                body = request.get_json(silent=True) or {}
                if "live-data.data" in str(body.get("output", "")):
                    ms = (time.perf_counter() - g.bench_t0) * 1000
                    size = resp.calculate_content_length() or 0
                    with self.lock:
                        self.rows.append((time.monotonic(), ms, size, resp.status_code))
            return resp

    def since(self, t: float) -> list[tuple[float, float, int, int]]:
        with self.lock:
            return [r for r in self.rows if r[0] >= t]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def run(calls: int, loads: int, stream_s: float) -> dict[str, Any]:
    from callsense.dashboard.app import create_app
    from werkzeug.serving import make_server

    from callsense.settings import Settings
    from callsense.storage.db import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/wall.db"
        upgrade(url)
        t = time.monotonic()
        seed(url, calls)
        seeded_s = time.monotonic() - t
        app = create_app(Settings(database_url=url, data_dir=Path(tmp), webhook_url=""))
        timings = Timings(app.server)
        srv = make_server("127.0.0.1", 0, app.server, threaded=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        page = f"http://127.0.0.1:{srv.server_port}/"
        driver = _driver(Path(tmp) / "chrome")
        ctx = multiprocessing.get_context("spawn")
        try:
            # 1. fresh page loads: navigation -> every card on screen
            shown_s = []
            for _ in range(loads):
                driver.get(page)
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    n, at = driver.execute_script(
                        "return [document.querySelectorAll('.call-card').length,"
                        " performance.now()]")  # fmt: skip
                    if n >= calls:
                        shown_s.append(at / 1000.0)
                        break
                    time.sleep(0.05)
                else:
                    raise click.ClickException(f"{calls} cards not on screen within 120 s")
            # 2. ticks while windows keep arriving: all calls, then a tenth of them
            phases = {}
            second = ctx.Value("i", HISTORY_S)
            for name, subset in (("all_calls_change", range(calls)),
                                 ("tenth_of_calls_change", range(0, calls, 10))):  # fmt: skip
                stop = ctx.Event()
                writer = ctx.Process(target=_stream, args=(url, list(subset), stop, second))
                writer.start()
                time.sleep(3)  # the writer's first windows
                t0 = time.monotonic()
                time.sleep(stream_s)
                stop.set()
                writer.join(30)
                rows = timings.since(t0)
                ms = [r[1] for r in rows]
                kb = [r[2] / 1024 for r in rows]
                on_screen = driver.execute_script(
                    "return document.querySelectorAll('.call-card').length")
                phases[name] = {
                    "calls_written": len(subset),
                    "ticks": len(rows),
                    "ticks_unchanged": sum(r[3] == 204 for r in rows),  # nothing sent
                    "server_ms_p50": round(_pct(ms, 0.5), 1),
                    "server_ms_p95": round(_pct(ms, 0.95), 1),
                    "server_ms_max": round(max(ms), 1) if ms else None,
                    "response_kb_p50": round(_pct(kb, 0.5), 1),
                    "cards_on_screen_after": on_screen,
                }
        finally:
            driver.quit()
            srv.shutdown()
    return {
        "calls": calls,
        "seeded_s": round(seeded_s, 1),
        "page_loads": loads,
        "all_cards_shown_s": [round(s, 2) for s in shown_s],
        "all_cards_shown_s_median": round(statistics.median(shown_s), 2),
        "stream_s": stream_s,
        "phases": phases,
        "targets": "every card within 5 s of the page load; per-tick update < 1 s server time",
    }


def plot(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    ns = [r["calls"] for r in results]
    a.plot(ns, [r["all_cards_shown_s_median"] for r in results], "o-", label="median")
    a.plot(ns, [max(r["all_cards_shown_s"]) for r in results], "s--",
           label="slowest (the first, cold browser)")  # fmt: skip
    a.axhline(5, color="#D55E00", ls="--", label="target 5 s")
    a.set(xlabel="active calls", ylabel="s after navigation", title="every card on screen")
    a.legend()
    for phase, style in (("all_calls_change", "o-"), ("tenth_of_calls_change", "s--")):
        b.plot(ns, [r["phases"][phase]["server_ms_p95"] for r in results], style, label=phase)
    b.axhline(1000, color="#D55E00", ls="--", label="target 1 s")
    b.set(xlabel="active calls", ylabel="ms (p95)", title="per-tick update, server time")
    b.set_yscale("log")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


@bench_group.command("live-wall")
@click.option("--calls", "calls_list", default="100,200", show_default=True,
              help="Active-call counts, comma separated.")  # fmt: skip
@click.option("--loads", default=5, show_default=True, help="Fresh page loads per count.")
@click.option("--stream-s", default=20.0, show_default=True, help="Seconds per update phase.")
@click.option("--out", default=Path("bench-results"), type=click.Path(path_type=Path),
              show_default=True)  # fmt: skip
def bench_live_wall(calls_list: str, loads: int, stream_s: float, out: Path) -> None:
    """Live wall: every card on screen after navigation, per-tick server time (Chromium)."""
    counts = [int(x) for x in calls_list.split(",") if x.strip()]
    results = []
    for n in counts:
        click.echo(f"live wall: {n} calls ...", err=True)
        results.append(run(n, loads, stream_s))
    name = f"live_wall_{'_'.join(map(str, counts))}"
    _write(name, {"results": results}, out)
    plot(results, out / f"{name}.png")
