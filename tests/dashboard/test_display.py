"""Values as the dashboard shows them."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import pytest
from callsense.dashboard.display import label, mmss, shown, when


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


def test_times_in_the_local_zone_with_its_name(berlin: None) -> None:
    assert os.environ["TZ"] == "Europe/Berlin"
    assert when("2026-12-03T06:59:39.120096+00:00") == "2026-12-03 07:59:39 CET"
    assert when(datetime(2026, 7, 1, 12, 0, tzinfo=UTC)) == "2026-07-01 14:00:00 CEST"
    assert when(None) == "-" and when("not a time") == "not a time"


def test_durations_labels_and_shares() -> None:
    assert [mmss(v) for v in (0, 59.4, 61, 247, 3723, None)] == [
        "0:00", "0:59", "1:01", "4:07", "1:02:03", "-",
    ]  # fmt: skip
    assert label("agent_id") == "Agent" and label("some_field") == "Some field"
    assert shown("anger_share", 0.427) == "43 %" and shown("duration_s", 75) == "1:15"
    assert shown("queue", None) == "-"
