"""The alerts inbox in a real browser: ordering, roles from configuration (an analyst reads, a
supervisor acknowledges with a note), the note in the database and the signed webhook."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.dash import HookReceiver, chrome_driver, sign_in, users_setting  # noqa: E402
from support.dash import wait as _wait  # noqa: E402


def _alert(call_id: str, aid: str, severity: str, minutes_ago: float, **kw: Any) -> dict[str, Any]:
    raised = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()
    return {"id": aid, "call_id": call_id, "rule": "customer_anger", "speaker": "ch1",
            "role": "customer", "status": "raised", "severity": severity,
            "message": f"customer angry ({aid})", "raised_at": raised, **kw}  # fmt: skip


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_inbox_orders_alerts_and_only_supervisors_acknowledge_with_a_note(
    dashboard_factory: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    from callsense.storage.alerts import apply_alert_event
    from callsense.storage.schema import Alert

    users = users_setting(ana=("analyst", "ana-pass-1"), sam=("supervisor", "sam-pass-1"))
    secret = "whsec_" + base64.b64encode(b"i" * 32).decode()
    recv = HookReceiver(secret)
    served = dashboard_factory(require_login=True, seed_data=False, dashboard_users=users,
                               webhook_url=recv.url, webhook_secret=secret)  # fmt: skip
    old_resolved = _alert("in-4", "al_res", "critical", 30, status="resolved",
                          resolved_at=(datetime.now(UTC) - timedelta(minutes=20)).isoformat())
    with served.sf.begin() as s:
        for ev in (_alert("in-1", "al_warn_new", "warning", 2),
                   _alert("in-2", "al_crit", "critical", 1),
                   _alert("in-3", "al_warn_old", "warning", 9)):
            apply_alert_event(s, "alert.raised", ev)
        apply_alert_event(s, "alert.raised", dict(old_resolved, status="raised"))
        apply_alert_event(s, "alert.resolved", old_resolved)  # fmt: skip
    driver = chrome_driver(tmp_path)
    rows = lambda: [r.get_attribute("data-alert")  # noqa: E731
                    for r in driver.find_elements(By.CSS_SELECTOR, ".inbox-row")]
    try:
        sign_in(driver, served.url, "ana", "wrong", "/alerts")
        _wait(lambda: "wrong user or password" in driver.page_source, 10, "sign-in refused")
        sign_in(driver, served.url, "ana", "ana-pass-1", "/alerts")
        _wait(lambda: len(rows()) == 3, 20, "three open alerts")
        # open only; critical first, then the longest-waiting warning
        assert rows() == ["al_crit", "al_warn_old", "al_warn_new"]
        count = driver.find_element(By.ID, "inbox-count").text
        assert "3 open (1 critical), 3 not acknowledged" in count
        assert "open 9:" in driver.find_element(By.CSS_SELECTOR, '[data-alert="al_warn_old"]').text
        assert not driver.find_elements(By.CSS_SELECTOR, ".ack-btn[id*=al_]")  # analyst: none
        assert "read-only" in driver.find_element(By.ID, "inbox").text
        driver.find_element(By.CSS_SELECTOR, "#inbox-resolved input").click()
        _wait(lambda: rows()[-1:] == ["al_res"], 20, "the resolved alert last")
        assert "resolved, not acknowledged" in driver.find_element(
            By.CSS_SELECTOR, '[data-alert="al_res"]').text  # fmt: skip

        sign_in(driver, served.url, "sam", "sam-pass-1", "/alerts")
        _wait(lambda: len(rows()) == 3, 20, "inbox for the supervisor")
        row = '[data-alert="al_warn_old"]'
        driver.find_element(By.CSS_SELECTOR, f"{row} input").send_keys("called the customer")
        driver.find_element(By.CSS_SELECTOR, f"{row} .ack-btn").click()
        _wait(lambda: "acknowledged by sam" in driver.find_element(By.CSS_SELECTOR, row).text,
              20, "acknowledged row")  # fmt: skip
        assert "called the customer" in driver.find_element(By.CSS_SELECTOR, row).text
        assert "2 not acknowledged" in driver.find_element(By.ID, "inbox-count").text
        with served.sf() as s:
            a = s.get(Alert, "al_warn_old")
            assert (a.acknowledged_by, a.acknowledged_note) == ("sam", "called the customer")
        _wait(lambda: recv.got, 20, "acknowledgement webhook")
        data = recv.got[0][1]["data"]
        assert recv.got[0][1]["type"] == "alert.acknowledged"
        assert data["acknowledged_by"] == "sam"
        assert data["acknowledged_note"] == "called the customer"
    finally:
        driver.quit()
        recv.close()
