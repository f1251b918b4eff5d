"""A call's recording on its page in a real browser: served as WAV with ranges, and the
timeline's playhead follows the player."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from support.dash import chrome_driver, seed  # noqa: E402
from support.dash import wait as _wait  # noqa: E402


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_recording_plays_beside_the_timeline(dashboard_factory: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from callsense.storage.recordings import Recordings

    served = dashboard_factory(seed_data=False, data_dir=tmp_path / "data")
    seed(served.sf)  # c-angry: an ended call with windows
    t = np.arange(8000 * 6) / 8000.0
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    rec = Recordings(tmp_path / "data" / "recordings")
    rec.write("c-angry", 8000, 0, np.stack([tone, tone]))
    rec.finish("c-angry")

    r = httpx.get(served.url + "/recordings/c-angry.wav", headers={"Range": "bytes=0-43"})
    assert r.status_code == 206 and r.content[:4] == b"RIFF" and len(r.content) == 44
    assert httpx.get(served.url + "/recordings/c-calm.wav").status_code == 404  # none kept

    driver = chrome_driver(tmp_path)
    try:
        driver.get(served.url + "/call/c-calm")
        _wait(lambda: driver.find_element(By.ID, "call-graph"), 20, "call page")
        assert not driver.find_elements(By.ID, "call-audio")  # no recording, no player
        driver.get(served.url + "/call/c-angry")
        _wait(lambda: driver.execute_script(
            "var a = document.getElementById('call-audio'); return a && a.readyState >= 1"
            " && document.querySelector('#call-graph .js-plotly-plot')"), 20,
            "player and timeline")  # fmt: skip
        assert driver.execute_script("return document.getElementById('call-audio').duration") == 6
        driver.execute_script("document.getElementById('call-audio').currentTime = 2.5")
        playhead = ("var g = document.querySelector('#call-graph .js-plotly-plot');"
                    "var s = (g.layout.shapes || []).filter(x => x.name === 'playhead');"
                    "return s.length ? s[0].x0 : null;")  # fmt: skip
        _wait(lambda: driver.execute_script(playhead) == 2.5, 20, "playhead at 2.5 s")
        # a click on the timeline (Plotly's click event, as a mouse click on a point emits it)
        driver.execute_script("document.querySelector('#call-graph .js-plotly-plot')"
                              ".emit('plotly_click', {points: [{x: 4.0}]})")  # fmt: skip
        _wait(lambda: driver.execute_script(
            "return document.getElementById('call-audio').currentTime") == 4.0, 10, "seek to 4 s")
        _wait(lambda: driver.execute_script(playhead) == 4.0, 20, "playhead at 4 s")
    finally:
        driver.quit()
