"""Headless Chromium (selenium + Debian's chromedriver) against the real dashboard.

While a call "streams" - a background thread writes emotion windows to the database at a steady
pace and runs every window through the real AlertEngine, persisting its alert events exactly as
the stream's alert agent does - the browser opens the live view, sees the call's trajectory
grow and an alert appear, acknowledges it, opens the call page, and after the call ended finds
it in history. The measured write-to-screen latency is printed.

Set CALLSENSE_UPDATE_SCREENSHOTS=1 to refresh docs/img/dashboard-{live,call}.png.
"""

from __future__ import annotations

import base64
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.dash import HookReceiver, acknowledge_on_card, click, update_screenshots, window_row  # noqa: E402
from support.dash import chrome_driver as _driver  # noqa: E402
from support.dash import wait as _wait  # noqa: E402

CALL = "call-live-001"


class CallWriter(threading.Thread):
    """Writes one window per speaker every ``period_s`` (1 s of call time each) and feeds the
    customer's windows to the alert engine; records when each window count hit the database."""

    def __init__(self, sf: Any, period_s: float = 0.3, max_windows: int = 120) -> None:
        super().__init__(daemon=True)
        self.sf, self.period_s, self.max_windows = sf, period_s, max_windows
        self.stop = threading.Event()
        self.written_at: dict[int, float] = {}  # windows in db -> wall time of the commit
        self.alert_events: list[Any] = []

    def run(self) -> None:
        from callsense.processors.alerts import AlertEngine

        from callsense.storage.alerts import apply_alert_event
        from callsense.storage.schema import Call, EmotionWindow

        engine = AlertEngine()
        with self.sf() as s, s.begin():
            s.add(
                Call(
                    call_id=CALL,
                    agent_id="agent-7",
                    customer_id="cust-42",
                    queue="billing",
                    status="active",
                    channels=2,
                    source="selenium",
                )
            )
        n = 0
        for i in range(self.max_windows):
            if self.stop.is_set():
                break
            label = "neutral" if i < 8 else "angry"
            conf = 0.35 if i % 5 == 4 else 0.85  # every 5th window is uncertain
            cust = window_row(CALL, i, label, speaker="ch1", role="customer", conf=conf)
            agent = window_row(CALL, i, "neutral", speaker="ch0", role="agent", conf=0.8)
            events = engine.feed(cust)
            with self.sf() as s, s.begin():
                s.add_all([EmotionWindow(**cust), EmotionWindow(**agent)])
                for ev in events:
                    apply_alert_event(s, ev.type, ev.alert)
            n += 2
            self.written_at[n] = time.monotonic()
            self.alert_events += events
            time.sleep(self.period_s)

    def end_call(self) -> None:
        from callsense.storage.schema import Call, CallSummary

        self.stop.set()
        self.join(10)
        with self.sf() as s, s.begin():
            call = s.get(Call, CALL)
            call.status, call.ended_at = "ended", datetime.now(UTC)
            s.add(
                CallSummary(
                    call_id=CALL,
                    duration_s=len(self.written_at) + 2.0,
                    anger_share=0.8,
                    peak_anger=0.85,
                    summary={},
                )
            )


def test_live_view_alert_ack_and_history(dashboard_factory, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from callsense.storage.schema import Alert

    secret = "whsec_" + base64.b64encode(b"b" * 32).decode()
    recv = HookReceiver(secret)
    served = dashboard_factory(seed_data=False, webhook_url=recv.url, webhook_secret=secret)
    driver = _driver(tmp_path)
    writer = CallWriter(served.sf)
    try:
        driver.get(served.url + "/")
        _wait(lambda: driver.find_element(By.ID, "live-calls"), what="live view")
        _wait(lambda: driver.execute_script("return !!window.Plotly"), what="plotly.js loaded")
        writer.start()
        card = f'.call-card[data-call="{CALL}"]'

        def windows_on_screen() -> int:
            el = driver.find_element(By.CSS_SELECTOR, card)
            return int(el.get_attribute("data-windows"))

        # the trajectory grows on screen. Latency of each write = time until the screen first
        # shows at least that many windows (the poll interval bounds it).
        seen: list[tuple[int, float]] = []
        last = 0
        t_end = time.monotonic() + 6
        while time.monotonic() < t_end:
            try:
                n = windows_on_screen()
            except Exception:
                n = last
            if n != last:
                seen.append((n, time.monotonic()))
                last = n
            time.sleep(0.05)
        counts = [n for n, _ in seen]
        assert len(counts) >= 3 and counts == sorted(counts) and counts[-1] > counts[0], counts
        latencies = [
            next(t for n, t in seen if n >= k) - wrote
            for k, wrote in sorted(writer.written_at.items())
            if k <= counts[-1]
        ]
        print(
            f"\nlive view: window counts seen {counts}; write->screen latency median "
            f"{statistics.median(latencies):.2f} s, max {max(latencies):.2f} s "
            f"over {len(latencies)} writes (poll interval {served.settings.dashboard_poll_ms} ms)"
        )

        # the customer becomes angry: the alert appears on the card
        item = _wait(
            lambda: driver.find_element(By.CSS_SELECTOR, f"{card} .alert-item"),
            timeout=20,
            what="alert on the live card",
        )
        assert "customer_anger" in item.text
        time.sleep(1.2)  # let a few more windows arrive for the screenshot
        driver.save_screenshot(str(tmp_path / "dashboard-live.png"))

        acknowledge_on_card(driver, card)
        with served.sf() as s:
            alerts = s.query(Alert).filter(Alert.call_id == CALL).all()
        assert len(alerts) == 1  # one open alert per call and rule, however long the anger
        assert alerts[0].acknowledged_by == "supervisor" and alerts[0].acknowledged_at

        # the acknowledgement went out as a signed webhook, visible in the delivery log page
        _wait(lambda: recv.got, what="acknowledgement webhook")
        assert recv.got[0][1]["type"] == "alert.acknowledged"
        assert recv.got[0][1]["data"]["acknowledged_by"] == "supervisor"
        driver.find_element(By.LINK_TEXT, "Webhooks").click()
        _wait(lambda: recv.got[0][0] in driver.find_element(By.ID, "wh-table").text,
              what="delivery in the webhook log page")  # fmt: skip
        driver.find_element(By.LINK_TEXT, "Live").click()
        _wait(lambda: driver.find_element(By.CSS_SELECTOR, card), what="live view again")

        # the call page: per-speaker trajectories, uncertain markers, the alert marker
        click(driver, By.LINK_TEXT, CALL)  # the live card re-renders every poll
        _wait(
            lambda: (
                len(driver.find_elements(By.CSS_SELECTOR, "#call-graph .scatterlayer"))
                and "ch1 (customer)" in driver.find_element(By.ID, "call-graph").text
            ),
            what="call trajectories",
        )
        graph_text = driver.find_element(By.ID, "call-graph").text
        assert "ch0 (agent)" in graph_text and "customer_anger" in graph_text
        assert "uncertain window" in graph_text  # legend entry of the uncertain markers
        assert "acknowledged by supervisor" in driver.find_element(By.ID, "call-alerts").text
        assert "appear when the call ends" in driver.find_element(By.ID, "call-conversation").text
        # the worker's live conversation metrics show while the call goes on
        from callsense.processors.conversation import conversation_metrics

        from callsense.storage.writer import Writer

        metrics = conversation_metrics({"ch0": [(0, 4000)], "ch1": [(5000, 9000)]},
                                       {"ch0": "agent", "ch1": "customer"}, 10_000, ended=False)
        live_writer = Writer(served.settings.effective_database_url)
        live_writer.write([{"kind": "conversation", "call_id": CALL, "at_ms": 10_000,
                            "conversation": metrics}])  # fmt: skip
        live_writer.close()
        conv_text = lambda: driver.find_element(By.ID, "call-conversation").text  # noqa: E731
        _wait(lambda: "Live: the first 0:10" in conv_text(), 20, "live conversation metrics")
        assert "ch1 (customer)" in conv_text()
        driver.set_window_size(1500, 1250)
        time.sleep(1.5)
        driver.save_screenshot(str(tmp_path / "dashboard-call.png"))

        # the call ends; history finds it by agent
        writer.end_call()
        driver.find_element(By.LINK_TEXT, "History").click()
        box = _wait(lambda: driver.find_element(By.ID, "h-agent"), what="history form")
        box.send_keys("agent-7", Keys.ENTER)
        _wait(
            lambda: (
                CALL in driver.find_element(By.ID, "h-table").text
                and "1 calls" in driver.find_element(By.ID, "h-total").text
            ),
            what="call in history",
        )
        row_text = driver.find_element(By.ID, "h-table").text
        assert "billing" in row_text and "cust-42" in row_text
        box2 = driver.find_element(By.ID, "h-alerted")
        assert box2 is not None
        export = driver.find_element(By.ID, "h-export").get_attribute("href")
        assert "agent=agent-7" in export
        # days typed into the range picker: a past range hides the call, today's shows it
        today = datetime.now().date()
        for first, last, total in (
            (today - timedelta(days=9), today - timedelta(days=2), "0 calls"),
            (today, today, "1 calls"),
        ):
            for fid, day in (("h-date-from", first), ("h-date-to", last)):
                box = driver.find_element(By.ID, fid)
                box.send_keys(Keys.CONTROL, "a")
                box.send_keys(day.isoformat(), Keys.TAB)  # a typed day counts on Tab
            _wait(lambda t=total: driver.find_element(By.ID, "h-total").text == t,
                  what=f"{total} for {first}..{last}")  # fmt: skip
        assert f"started_from={today.isoformat()}" in driver.find_element(
            By.ID, "h-export").get_attribute("href")  # fmt: skip
        driver.find_element(By.ID, "h-status").click()
        active = "//*[@role='option'][normalize-space()='active']"
        _wait(lambda: driver.find_element(By.XPATH, active), what="status option").click()
        _wait(lambda: driver.find_element(By.ID, "h-total").text == "0 calls",
              what="no active call (it ended)")  # fmt: skip
    finally:
        writer.stop.set()
        driver.quit()
        recv.close()
    update_screenshots(tmp_path, "dashboard-live.png", "dashboard-call.png")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_live_wall_lists_every_call_ranked_and_the_banner_follows_heartbeats(
    dashboard_factory, tmp_path: Path
) -> None:
    """35 active calls (more than the old cap of 30): all on screen, the angry one first, a
    count line; 'Pipeline down' until a worker heartbeat is fresh, then 'pipeline up'."""
    from datetime import UTC, datetime

    from selenium.webdriver.common.by import By

    from callsense.storage.health import beat
    from callsense.storage.writer import Writer

    served = dashboard_factory(seed_data=False)
    writer = Writer(served.settings.effective_database_url)
    try:
        for i in range(35):
            anger = 0.9 if i == 7 else 0.05
            writer.write([
                {"kind": "call_started", "call_id": f"wall-{i:02d}", "sample_rate": 16000,
                 "channels": 2, "agent_channel": 0, "ts": 1_700_000_000.0 + i,
                 "speakers": [{"speaker": "ch1", "role": "customer", "channel": 1}]},
                {"kind": "window",
                 **window_row(f"wall-{i:02d}", 0, "angry" if anger > 0.5 else "neutral"),
                 "probabilities": {"angry": anger, "neutral": 1 - anger},
                 "smoothed_probabilities": {"angry": anger, "neutral": 1 - anger}},
            ])  # fmt: skip
    finally:
        writer.close()
    driver = _driver(tmp_path)
    try:
        driver.get(served.url + "/")
        _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".call-card")) == 35,
              what="35 call cards")  # fmt: skip
        cards = driver.find_elements(By.CSS_SELECTOR, ".call-card")
        assert cards[0].get_attribute("data-call") == "wall-07"
        assert "35 active calls" in driver.find_element(By.ID, "live-count").text
        banner = _wait(lambda: driver.find_element(By.CSS_SELECTOR, ".banner-down"),
                       what="pipeline-down banner")  # fmt: skip
        assert "Pipeline down" in banner.text
        with served.sf.begin() as s:
            beat(s, "w:1", datetime.now(UTC), live_calls=35, audio_partitions=4, audio_lag=0)
        _wait(lambda: "pipeline up: 1 worker" in driver.find_element(By.ID, "pipeline-banner").text,
              timeout=20, what="pipeline up")  # fmt: skip
    finally:
        driver.quit()
