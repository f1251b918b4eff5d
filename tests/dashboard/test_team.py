"""Team and agent pages in a real browser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.dash import chrome_driver  # noqa: E402
from support.dash import wait as _wait  # noqa: E402


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_team_page_then_an_agents_calls(dashboard_factory: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from callsense.storage.alerts import apply_alert_event
    from callsense.storage.schema import Call, CallSummary

    now = datetime.now(UTC)
    served = dashboard_factory(seed_data=False)
    with served.sf.begin() as s:
        for cid, queue, agent, status, hours, anger in (
            ("t-1", "billing", "A1", "ended", 1, 0.05),
            ("t-2", "billing", "A1", "active", 0.1, None),
            ("t-3", "tech", "B2", "ended", 2, 0.5),
            ("t-4", "tech", "B2", "ended", 3, 0.0),
            ("t-5", "tech", "B2", "ended", 20, 0.9),  # before an 8 h shift, in 24 h
        ):
            s.add(Call(call_id=cid, queue=queue, agent_id=agent, status=status, channels=2,
                       started_at=now - timedelta(hours=hours)))  # fmt: skip
            s.flush()
            if anger is not None:
                s.add(CallSummary(call_id=cid, duration_s=240, anger_share=anger, summary={}))
        apply_alert_event(s, "alert.raised", {
            "id": "al_team", "call_id": "t-2", "rule": "customer_anger", "status": "raised",
            "severity": "warning", "message": "m", "raised_at": now.isoformat()})  # fmt: skip
    driver = chrome_driver(tmp_path)
    cells = lambda key: driver.find_element(  # noqa: E731
        By.CSS_SELECTOR, f'#team-queues [data-key="{key}"]').text.split()  # fmt: skip
    try:
        driver.get(served.url + "/team")
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#team-queues .team-row"), 20,
              "queue rows")  # fmt: skip
        queues = lambda: [r.get_attribute("data-key")  # noqa: E731
                          for r in driver.find_elements(By.CSS_SELECTOR, "#team-queues .team-row")]
        _wait(lambda: queues() == ["billing", "tech"], 20, "the open alert's queue first")
        # queue, active now, calls, angry customer, open alerts, avg handling
        _wait(lambda: cells("billing") == ["billing", "1", "2", "50%", "1", "4:00"], 20, "billing")
        _wait(lambda: cells("tech") == ["tech", "0", "2", "50%", "0", "4:00"], 20, "tech")
        _wait(lambda: driver.find_element(By.LINK_TEXT, "B2"), what="agent link").click()
        _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".agent-call")) == 2, 20,
              "the agent's two calls")  # fmt: skip
        text = driver.find_element(By.ID, "agent-calls").text
        assert "t-3" in text and "t-4" in text and "t-1" not in text
        assert "not inferred" in driver.find_element(By.ID, "agent-policy").text
        # a wider shift brings the older call back
        driver.find_element(By.ID, "agent-hours").click()
        opt = "//*[@role='option'][normalize-space()='24 h']"
        _wait(lambda: driver.find_element(By.XPATH, opt), what="24 h option").click()
        _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".agent-call")) == 3, 20,
              "three calls in 24 h")  # fmt: skip
        # a phone: the team, agent, alerts and rules pages do not scroll sideways at 390 px
        driver.set_window_size(390, 844)
        for page, ready in (("/team", "#team-queues .team-row"), ("/agent/B2", ".agent-call"),
                            ("/alerts", ".inbox-row"), ("/rules", "#rules-text")):
            driver.get(served.url + page)
            _wait(lambda r=ready: driver.find_elements(By.CSS_SELECTOR, r), 20, page)
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= 390, f"{page} is {width} px wide at 390 px"
    finally:
        driver.quit()
