"""The live wall in headless Chromium with 100 and with 200 active calls written as the stream
writes them: the critical call is first, one call's new window re-renders its card only, a
queue filter keeps only its queue and says how many it hides, and an alert raised while the
page is open raises a notification (in-page toast, tab-title count).
Screenshots at desktop width and at 390 px (CALLSENSE_UPDATE_SCREENSHOTS=1 refreshes
docs/img/live-wall-{desktop,390}.png)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.dash import chrome_driver, console_errors, update_screenshots, window_row
from support.dash import wait as _wait

QUEUES = ("billing", "support", "tech")

pytestmark = pytest.mark.slow


def _alert(call_id: str, aid: str, severity: str, message: str) -> dict[str, Any]:
    return {"id": aid, "call_id": call_id, "rule": "customer_anger", "speaker": "ch1",
            "role": "customer", "status": "raised", "severity": severity, "message": message,
            "raised_at": "2026-12-01T09:00:00+00:00"}  # fmt: skip


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("N", [100, 200])
def test_many_calls_ranked_filtered_and_a_new_alert_notifies(
    dashboard_factory: Any, tmp_path: Path, N: int
) -> None:
    from selenium.webdriver.common.by import By

    from callsense.storage.alerts import apply_alert_event
    from callsense.storage.health import beat
    from callsense.storage.writer import Writer

    served = dashboard_factory(seed_data=False)
    writer = Writer(served.settings.effective_database_url)
    try:
        for i in range(N):
            anger = 0.8 if i % 10 == 3 else 0.05
            cid = f"wall-{i:03d}"
            started = {"kind": "call_started", "call_id": cid, "sample_rate": 8000, "channels": 2,
                       "agent_channel": 0, "ts": 1_700_000_000.0 + i, "agent_id": f"ag-{i % 7}",
                       "queue": QUEUES[i % 3],
                       "speakers": [{"speaker": "ch1", "role": "customer", "channel": 1}]}
            windows = []
            for k in range(6):  # anger rising over the last windows of the angry calls
                p = anger * (k + 1) / 6 if anger > 0.5 else anger
                probs = {"angry": p, "neutral": 1 - p}
                windows.append({"kind": "window",
                                **window_row(cid, k, "angry" if p > 0.5 else "neutral"),
                                "probabilities": probs, "smoothed_probabilities": probs})
            writer.write([started, *windows])  # fmt: skip
    finally:
        writer.close()
    with served.sf.begin() as s:
        crit = _alert("wall-053", "al_crit", "critical", "customer angry 60 s")
        apply_alert_event(s, "alert.raised", crit)

        beat(s, "w:1", datetime.now(UTC), live_calls=N, audio_partitions=4, audio_lag=0)

    driver = chrome_driver(tmp_path)
    try:
        driver.get(served.url + "/")
        cards = lambda: driver.find_elements(By.CSS_SELECTOR, ".call-card")  # noqa: E731
        _wait(lambda: len(cards()) == N, 60, f"{N} call cards")
        assert cards()[0].get_attribute("data-call") == "wall-053"  # the critical call first
        count = driver.find_element(By.ID, "live-count").text
        assert f"{N} active calls, 1 with open alerts" in count
        _wait(lambda: driver.title.startswith("(1)"), 20, "tab title counts the open alert")
        driver.save_screenshot(str(tmp_path / "live-wall-desktop.png"))

        # one more window on one call: its card updates, every other card stays the same
        # element (a re-rendered one would raise StaleElementReferenceException below)
        card = lambda cid: driver.find_element(By.CSS_SELECTOR, f'.call-card[data-call="{cid}"]')  # noqa: E731
        others = [card(f"wall-{i:03d}") for i in (1, 50, N - 1)]
        probs = {"angry": 0.05, "neutral": 0.95}
        more = Writer(served.settings.effective_database_url)
        try:
            more.write([{"kind": "window", **window_row("wall-000", 6, "neutral"),
                         "probabilities": probs, "smoothed_probabilities": probs}])  # fmt: skip
        finally:
            more.close()
        _wait(lambda: card("wall-000").get_attribute("data-windows") == "7", 20,
              "the new window on its card")  # fmt: skip
        assert [o.get_attribute("data-call") for o in others] == ["wall-001", "wall-050",
                                                                 f"wall-{N - 1:03d}"]  # fmt: skip

        # filter by queue (the dropdown lists the queues the live calls have)
        driver.find_element(By.ID, "live-queue").click()
        tech_option = "//*[@role='option'][normalize-space()='tech']"
        option = _wait(lambda: driver.find_element(By.XPATH, tech_option), 10, "tech option")
        option.click()
        tech = len([i for i in range(N) if QUEUES[i % 3] == "tech"])
        _wait(lambda: len(cards()) == tech, 30, "only the tech queue's cards")
        assert all("queue tech" in c.text for c in cards())
        assert f"the filters show {tech} and hide {N - tech}" in driver.find_element(
            By.ID, "live-count").text  # fmt: skip
        assert not driver.find_element(By.ID, "alert-toast").text  # nothing new yet
        driver.find_element(By.CSS_SELECTOR, "#sound-on input").click()
        _wait(lambda: driver.execute_script(
            "return localStorage.getItem('callsense.sound') === 'on'"), 10, "sound on")  # fmt: skip

        # a new alert on a call the filter hides still notifies
        with served.sf.begin() as s:
            new = _alert("wall-013", "al_new", "warning", "customer angry 30 s")
            apply_alert_event(s, "alert.raised", new)
        toast = _wait(lambda: driver.find_element(By.ID, "alert-toast").text or None, 20,
                      "alert toast")  # fmt: skip
        assert "wall-013" in toast and "customer angry 30 s" in toast
        assert driver.title.startswith("(2)")
        assert driver.execute_script("return window.__callsenseBeeps") == 1  # one tone

        # every page's callbacks are wired to that page only: visiting the others and coming
        # back leaves no error in the console
        for path in ("/alerts", "/team", "/history", "/"):
            driver.find_element(By.CSS_SELECTOR, f'nav a[href="{path}"]').click()
            time.sleep(2)
        _wait(lambda: len(cards()) == N, 60, f"{N} call cards again")
        assert not console_errors(driver), console_errors(driver)

        # a phone: a fresh page (filters reset) at 390 px
        driver.set_window_size(390, 844)
        driver.get(served.url + "/")
        _wait(lambda: len(cards()) == N, 60, f"{N} call cards at 390 px")
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways at 390 px ({width} px wide)"
        card_w = cards()[0].size["width"]
        assert card_w <= 390, card_w
        driver.save_screenshot(str(tmp_path / "live-wall-390.png"))
    finally:
        driver.quit()
    if N == 100:
        update_screenshots(tmp_path, "live-wall-desktop.png", "live-wall-390.png")
