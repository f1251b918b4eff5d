"""The dashboard's microphone page in headless Chromium (a WAV file as the fake microphone)
streams through the real gateway (token required: the page connects with its ticket) to real
Apache Kafka: one stereo 16 kHz call whose customer channel carries the voice and whose agent
channel is silent, started and stopped from the page."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.dash import chrome_driver, click, wait
from support.gateway import gateway
from support.streaming import build_call, read_topic

from callsense.settings import Settings

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_microphone_page_streams_a_call_through_the_gateway(
    dashboard_factory: Any, kafka: Any, shared_data: Path, tmp_path: Path
) -> None:
    import soundfile as sf
    from callsense.processors.events import AUDIO_TOPIC, DEADLETTER_TOPIC
    from selenium.webdriver.common.by import By

    call = build_call(shared_data, tmp_path / "call.wav", left=("ravdess_03", "angry", "strong"),
                      right=("ravdess_04", "neutral", ""), clips=2)  # fmt: skip
    voice, sr = sf.read(str(call), dtype="float32")
    sf.write(str(tmp_path / "mic.wav"), voice[:, 0], sr, subtype="PCM_16")  # mono "microphone"
    with gateway(kafka.bootstrap, gateway_token="t0k") as base:
        port = int(base.rsplit(":", 1)[1])
        served = dashboard_factory(seed_data=False, gateway_token="t0k", gateway_port=port)
        assert isinstance(served.settings, Settings)
        fake_mic = f"--use-file-for-fake-audio-capture={tmp_path / 'mic.wav'}"
        driver = chrome_driver(tmp_path, "--use-fake-ui-for-media-stream",
                               "--use-fake-device-for-media-stream", fake_mic)  # fmt: skip
        try:
            driver.get(served.url + "/microphone")
            call_id = driver.find_element(By.ID, "mic-call").text
            assert call_id.startswith("mic-")
            href = driver.find_element(By.ID, "mic-watch").get_attribute("href")
            assert href.endswith(f"/call/{call_id}")
            click(driver, By.ID, "mic-start")
            status = lambda: driver.find_element(By.ID, "mic-status").text  # noqa: E731
            wait(lambda: status() == "streaming", 20, "streaming")
            time.sleep(4)
            click(driver, By.ID, "mic-stop")
            wait(lambda: status() == "stopped", 20, "stopped")
        finally:
            driver.quit()
    events = [e for e in read_topic(kafka.bootstrap, AUDIO_TOPIC) if e.get("call_id") == call_id]
    assert events[0]["kind"] == "call_start" and events[-1]["kind"] == "call_end"
    start = events[0]
    assert (start["sample_rate"], start["channels"], start["agent_channel"]) == (16000, 2, 0)
    assert start["queue"] == "microphone"
    chunks = [e for e in events if e["kind"] == "chunk"]
    pcm = np.concatenate([c["pcm16"].T for c in chunks])
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert pcm.shape[0] >= 3 * 16000  # at least 3 s of the ~4 s spoken
    assert not pcm[:, 0].any()  # the agent channel is silent
    assert np.abs(pcm[:, 1]).max() > 1000  # the voice is on the customer channel
    assert not [d for d in read_topic(kafka.bootstrap, DEADLETTER_TOPIC)
                if d.get("call_id") == call_id]  # fmt: skip


def test_a_ticket_admits_one_call_id_only(kafka: Any) -> None:
    import asyncio
    import json

    from callsense.ingest.gateway import mint_ticket
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    async def run(url: str, call_id: str) -> tuple[int | None, str]:
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "call_id": call_id, "sample_rate": 8000}))
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")
        return None, ""

    with gateway(kafka.bootstrap, gateway_token="t0k") as base:
        ticket = mint_ticket("t0k", "mic-1")
        code, reason = asyncio.run(run(f"{base}/stream?ticket={ticket}", "mic-2"))
        assert code == 1008 and "another call id" in reason
        with pytest.raises(InvalidStatus):
            asyncio.run(run(f"{base}/stream?ticket={mint_ticket('other', 'mic-1')}", "mic-1"))
        with pytest.raises(InvalidStatus):
            asyncio.run(run(f"{base}/stream?ticket={mint_ticket('t0k', 'mic-1', -5)}", "mic-1"))
