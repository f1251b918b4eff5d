"""The alert-rule editor in a real browser: validation, versions, read-only analysts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.dash import chrome_driver, sign_in, users_setting  # noqa: E402
from support.dash import wait as _wait  # noqa: E402


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rules_are_validated_saved_as_versions_and_read_only_for_analysts(
    dashboard_factory: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from callsense.storage.rules import current_rules

    users = users_setting(ana=("analyst", "ana-pass-1"), sam=("supervisor", "sam-pass-1"))
    served = dashboard_factory(require_login=True, seed_data=False, dashboard_users=users)
    driver = chrome_driver(tmp_path)
    msg = lambda: driver.find_element(By.ID, "rules-msg").text  # noqa: E731
    try:
        sign_in(driver, served.url, "ana", "ana-pass-1", "/rules")
        box = _wait(lambda: driver.find_element(By.ID, "rules-text"), 20, "rule editor")
        _wait(lambda: "customer_anger" in box.get_attribute("value"), 20, "the rules in force")
        assert "environment" in driver.find_element(By.ID, "rules-source").text
        assert driver.find_element(By.ID, "rules-save").get_attribute("disabled")  # read-only

        sign_in(driver, served.url, "sam", "sam-pass-1", "/rules")
        box = _wait(lambda: driver.find_element(By.ID, "rules-text"), 20, "rule editor")
        _wait(lambda: "customer_anger" in box.get_attribute("value"), 20, "the rules in force")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys('[{"name": "customer_anger", "labels": ["angry"], "min_share": 7}]')
        driver.find_element(By.ID, "rules-save").click()
        _wait(lambda: msg().startswith("Not saved"), 20, "a validation error")
        assert "min_share" in msg()
        with served.sf() as s:
            assert current_rules(s) is None
        rules = [{"name": "customer_anger", "labels": ["angry"], "min_share": 0.4,
                  "severity": "critical"}]  # fmt: skip
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(json.dumps(rules))
        driver.find_element(By.ID, "rules-validate").click()
        _wait(lambda: msg().startswith("Valid: 1 rule(s)"), 20, "valid")
        driver.find_element(By.ID, "rules-note").send_keys("earlier anger alerts")
        driver.find_element(By.ID, "rules-save").click()
        _wait(lambda: msg().startswith("Saved as version 1"), 20, "saved")
        _wait(lambda: "version 1, saved by sam" in driver.find_element(By.ID, "rules-source").text,
              20, "version 1 in force")  # fmt: skip
        row = driver.find_element(By.CSS_SELECTOR, ".rules-version").text
        assert "sam" in row and "earlier anger alerts" in row
        with served.sf() as s:
            cur = current_rules(s)
        assert cur["version"] == 1 and cur["rules"][0]["min_share"] == 0.4
        assert cur["rules"][0]["lookback_s"] == 15.0  # stored with every field spelled out
    finally:
        driver.quit()
