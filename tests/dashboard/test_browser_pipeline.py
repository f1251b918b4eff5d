"""The whole product in headless Chromium: embedded broker + ``callsense worker`` (stages, shipped
model, persistence, alert agents) + ``callsense ingest`` streaming the escalation sample call in
real time + the dashboard. The browser watches the live view while the call streams: the
trajectory grows, the customer_anger alert appears, a supervisor acknowledges it; after the call
ends it is found in history. PostgreSQL only (the production database; the UI on SQLite is
covered by test_browser.py).

Set CALLSENSE_UPDATE_SCREENSHOTS=1 to save docs/img/dashboard-{live,call}.png from this run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
from support.dash import acknowledge_on_card, chrome_driver, click, wait  # noqa: E402
from support.streaming import REPO_ROOT, Worker, base_env, db_scalar  # noqa: E402

pytestmark = pytest.mark.slow
SAMPLE = "sample-escalation"
CALL = "browser-escalation-1"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_live_pipeline_in_the_browser(
    dashboard_factory, database_url: str, kafka: Any, tmp_path: Path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from callsense.settings import Settings

    model_dir = Settings().model_dir
    if not (model_dir / "model.json").is_file():
        pytest.fail(f"no emotion model artefact at {model_dir} (the repository ships one)")
    meta = next(
        c for c in json.loads((REPO_ROOT / "ingest/samples/calls.json").read_text())
        if c["call_id"] == SAMPLE
    )  # fmt: skip
    served = dashboard_factory(seed_data=False)
    broker = kafka
    env = base_env(broker.bootstrap, database_url, tmp_path / "data")
    worker = Worker(env, tmp_path / "worker.log").start()
    driver = chrome_driver(tmp_path)
    ingest = None
    try:
        driver.get(served.url + "/")
        wait(lambda: driver.execute_script("return !!window.Plotly"), what="live view")
        ingest = subprocess.Popen(
            [sys.executable, "-m", "callsense.cli", "ingest",
             str(REPO_ROOT / "ingest/samples" / meta["file"]), "--call-id", CALL,
             "--speed", "1", "--agent-channel", str(meta["agent_channel"]),
             "--agent-id", meta["agent_id"], "--customer-id", meta["customer_id"],
             "--queue", meta["queue"], "--quiet"],
            env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        t0 = time.monotonic()
        card = f'.call-card[data-call="{CALL}"]'

        def count() -> int:
            return int(driver.find_element(By.CSS_SELECTOR, card).get_attribute("data-windows"))

        wait(count, timeout=90, what="first windows of the streaming call on screen")
        seen = [count()]
        t_end = time.monotonic() + 120
        alert: str | None = None  # the alert's text (elements go stale on re-render)
        while time.monotonic() < t_end and alert is None:
            try:
                n = count()
                if n != seen[-1]:
                    seen.append(n)
                items = driver.find_elements(By.CSS_SELECTOR, f"{card} .alert-item")
                alert = items[0].text if items else None
            except Exception:  # re-render in progress
                pass
            time.sleep(0.1)
        print(
            f"\nwindows on screen while streaming: {seen}; alert "
            f"{'on screen' if alert else 'missing'} {time.monotonic() - t0:.0f} s "
            "after ingest began"
        )
        assert len(seen) >= 3 and seen == sorted(seen), seen
        assert alert is not None, (
            f"no alert on the live card within 120 s; worker log tail:\n{worker.log()[-3000:]}"
        )
        assert "customer_anger" in alert or "negative_sustained" in alert
        time.sleep(2)
        driver.save_screenshot(str(tmp_path / "dashboard-live.png"))

        acknowledge_on_card(driver, card)
        assert db_scalar(database_url, "SELECT count(*) FROM alerts WHERE call_id = :c "
                         "AND acknowledged_by = 'supervisor'", c=CALL) >= 1  # fmt: skip

        assert ingest.wait(180) == 0, ingest.stdout.read() if ingest.stdout else ""
        wait(lambda: db_scalar(database_url, "SELECT status FROM calls WHERE call_id = :c",
                               c=CALL) == "ended", timeout=400, what="call ended")  # fmt: skip
        print(f"call ended in the database {time.monotonic() - t0:.0f} s after ingest began")
        driver.find_element(By.LINK_TEXT, "Live").click()
        click(driver, By.CSS_SELECTOR, f'a[href="/call/{CALL}"]')  # live card re-renders
        wait(lambda: "(customer)" in driver.find_element(By.ID, "call-graph").text,
             timeout=20, what="call page")  # fmt: skip
        conv = wait(lambda: driver.find_element(By.CSS_SELECTOR, "#call-conversation table"),
                    timeout=20, what="conversation metrics of the ended call").text  # fmt: skip
        assert "Longest monologue" in conv and "(customer)" in conv and "(agent)" in conv, conv
        assert "Silences over 3 s" in driver.find_element(By.ID, "call-conversation").text
        driver.set_window_size(1500, 1250)
        time.sleep(1.5)
        driver.save_screenshot(str(tmp_path / "dashboard-call.png"))

        driver.find_element(By.LINK_TEXT, "History").click()
        box = wait(lambda: driver.find_element(By.ID, "h-agent"), what="history form")
        box.send_keys(meta["agent_id"], Keys.ENTER)
        wait(lambda: CALL in driver.find_element(By.ID, "h-table").text,
             timeout=20, what="call in history")  # fmt: skip
    finally:
        if ingest and ingest.poll() is None:
            ingest.terminate()
            ingest.wait(10)
        driver.quit()
        worker.stop()
    if os.environ.get("CALLSENSE_UPDATE_SCREENSHOTS") == "1":
        out = REPO_ROOT / "docs" / "img"
        for name in ("dashboard-live.png", "dashboard-call.png"):
            shutil.copy(tmp_path / name, out / name)
