"""Test data for the dashboard tests: window rows and a small seeded history."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

API_TOKEN = "t0ken-for-tests"
PASSWORD = "s3cret-pw"


def window_row(
    call_id: str,
    i: int,
    label: str,
    *,
    speaker: str = "ch1",
    role: str = "customer",
    conf: float = 0.9,
) -> dict[str, Any]:
    others = {k: (1 - conf) / 3 for k in ("angry", "happy", "neutral", "sad") if k != label}
    probs = {label: conf, **others}
    uncertain = conf < 0.45
    return {
        "call_id": call_id,
        "speaker": speaker,
        "role": role,
        "start_ms": i * 1000,
        "end_ms": i * 1000 + 3000,
        "label": "uncertain" if uncertain else label,
        "raw_label": label,
        "confidence": conf,
        "uncertain": uncertain,
        "probabilities": probs,
        "smoothed_label": label,
        "smoothed_probabilities": probs,
    }


def _ended_summary(duration_s: int) -> dict[str, Any]:
    """A stored summary with conversation metrics: agent and customer take turns, with one
    interruption by the customer and one long silence."""
    from callsense.processors.conversation import conversation_metrics

    from callsense.storage.summary import summarize_call

    segs = {"ch0": [(0, 20_000), (45_000, 80_000)], "ch1": [(21_000, 40_000), (70_000, 110_000)]}
    roles = {"ch0": "agent", "ch1": "customer"}
    conv = conversation_metrics(segs, roles, duration_s * 1000)
    talk = {spk: s["talk_time_s"] for spk, s in conv["speakers"].items()}
    return summarize_call(duration_s, [], talk, conv)["summary"]


def seed(sf: Any) -> None:
    """Four calls: two ended with summaries, one live with windows only, one old."""
    from callsense.storage.alerts import apply_alert_event
    from callsense.storage.schema import Call, CallSummary, EmotionWindow

    def t(*a: int) -> datetime:
        return datetime(*a, tzinfo=UTC)

    with sf() as s, s.begin():
        s.add_all(
            [
                Call(
                    call_id="c-angry",
                    agent_id="A1",
                    customer_id="K1",
                    queue="billing",
                    status="ended",
                    started_at=t(2026, 11, 20, 9),
                    ended_at=t(2026, 11, 20, 9, 2),
                ),
                Call(
                    call_id="c-calm",
                    agent_id="A2",
                    customer_id="K2",
                    queue="support",
                    status="ended",
                    started_at=t(2026, 11, 20, 10),
                    ended_at=t(2026, 11, 20, 10, 1),
                ),
                Call(
                    call_id="c-live",
                    agent_id="A1",
                    customer_id="K3",
                    queue="billing",
                    status="active",
                    started_at=t(2026, 11, 21, 8),
                ),
                Call(
                    call_id="c-old",
                    agent_id="A3",
                    customer_id="K1",
                    queue="support",
                    status="ended",
                    started_at=t(2025, 1, 1, 12),
                    ended_at=t(2025, 1, 1, 12, 5),
                ),
            ]
        )
        s.flush()
        s.add_all(
            [
                CallSummary(
                    call_id="c-angry", duration_s=120, anger_share=0.7, peak_anger=0.95,
                    summary=_ended_summary(120),
                ),
                CallSummary(
                    call_id="c-calm", duration_s=60, anger_share=0.05, peak_anger=0.2, summary={}
                ),
                CallSummary(
                    call_id="c-old", duration_s=300, anger_share=0.3, peak_anger=0.6, summary={}
                ),
            ]
        )
        labels = ["angry"] * 6 + ["neutral"] * 4
        for i, lab in enumerate(labels):
            s.add(EmotionWindow(**window_row("c-live", i, lab)))
            s.add(EmotionWindow(**window_row("c-live", i, "neutral", speaker="ch0", role="agent")))
        s.add(EmotionWindow(**window_row("c-live", 10, "sad", conf=0.3)))  # uncertain
        apply_alert_event(
            s,
            "alert.raised",
            {
                "id": "al_test1",
                "call_id": "c-angry",
                "rule": "customer_anger",
                "speaker": "ch1",
                "role": "customer",
                "status": "raised",
                "severity": "warning",
                "message": "customer angry",
                "raised_at": "2026-11-20T09:01:00+00:00",
                "updated_at": "2026-11-20T09:01:00+00:00",
                "details": {"call_time_ms": 60000},
            },
        )


def chrome_driver(tmp_path: Path, *extra_args: str) -> Any:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        reason = "Debian chromium + chromium-driver not installed (make system-deps)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # make test installs them: a missing browser is a CI failure
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1500,1000",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
        *extra_args,
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console_errors() reads it
    return webdriver.Chrome(service=Service(driver), options=opts)


def console_errors(driver: Any) -> list[str]:
    """The browser console's errors since the last call (Dash reports callback wiring faults,
    such as an Input that is not on the page, there)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def sign_in(driver: Any, url: str, user: str, password: str, next_path: str = "/") -> None:
    """Sign out, then in as ``user`` through the sign-in form, landing on ``next_path``."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/logout")
    driver.get(url + "/login?next=" + next_path)
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "signin").click()


def users_setting(**roles: tuple[str, str]) -> str:
    """``CALLSENSE_DASHBOARD_USERS`` for users given as name=(role, password)."""
    from werkzeug.security import generate_password_hash

    return ",".join(f"{n}:{r}:{generate_password_hash(p)}" for n, (r, p) in roles.items())


def wait(cond: Any, timeout: float = 15.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < end:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:  # stale elements while Dash re-renders
            last_exc = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} ({last_exc!r})")


class HookReceiver:
    """A real local HTTP endpoint that verifies Standard Webhooks signatures and records
    ``(webhook-id, body)`` of every request."""

    def __init__(self, secret: str) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from callsense.processors.webhooks import verify

        self.got: list[tuple[str, dict]] = []
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                got.append((verify(secret, dict(self.headers), body), json.loads(body)))
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def click(driver: Any, by: str, selector: str, timeout: float = 15.0) -> None:
    """Click an element of a page that Dash re-renders every poll: find and click again when
    the element went stale between the two."""

    def attempt() -> bool:
        driver.find_element(by, selector).click()
        return True

    wait(attempt, timeout=timeout, what=f"click on {selector}")


def acknowledge_on_card(driver: Any, card: str, user: str = "supervisor") -> None:
    """Click the card's Acknowledge button (again if a re-render swallowed the click) until the
    card says who acknowledged."""
    from selenium.webdriver.common.by import By

    last = [0.0]

    def click() -> bool:
        btns = driver.find_elements(By.CSS_SELECTOR, f"{card} .ack-btn")
        if btns and time.monotonic() - last[0] > 3.0:  # give a click time to show
            btns[0].click()
            last[0] = time.monotonic()
        time.sleep(0.2)
        return f"acknowledged by {user}" in driver.find_element(By.CSS_SELECTOR, card).text

    wait(click, timeout=20, what="acknowledgement shown")


def update_screenshots(tmp_path: Path, *names: str) -> None:
    """With CALLSENSE_UPDATE_SCREENSHOTS=1, copy a test's screenshots into docs/img."""
    if os.environ.get("CALLSENSE_UPDATE_SCREENSHOTS") != "1":
        return
    out = Path(__file__).resolve().parents[2] / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(tmp_path / name, out / name)
