"""The upload page in headless Chromium: bad files get a clear message and the page keeps
working; a real recording (RAVDESS, via the offline analysis path and the shipped model) gives a
per-speaker timeline."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest
import soundfile as sf
from support.dash import chrome_driver, wait  # noqa: E402


def _download(driver, link_id: str, raw: bool = False):
    """What a download link of the upload result holds (a data: URL)."""
    from selenium.webdriver.common.by import By

    href = driver.find_element(By.ID, link_id).get_attribute("href")
    text = base64.b64decode(href.split(",", 1)[1]).decode()
    return text if raw else json.loads(text)


def _upload(driver, path: Path) -> str:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(path))
    return wait(
        lambda: driver.find_element(By.ID, "upload-result").text.strip(),
        timeout=180,
        what=f"upload result for {path.name}",
    )


# the upload page stores nothing: one database backend is enough
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_upload_rejects_bad_files(dashboard_factory, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    served = dashboard_factory(seed_data=False)
    driver = chrome_driver(tmp_path)
    try:
        driver.get(served.url + "/upload")
        wait(lambda: driver.find_element(By.ID, "upload"), what="upload page")
        txt = tmp_path / "notes.txt"
        txt.write_text("hello")
        assert "Unsupported file type .txt" in _upload(driver, txt)
        driver.get(served.url + "/upload")
        wait(lambda: driver.find_element(By.ID, "upload"), what="upload page")
        bad = tmp_path / "broken.wav"
        bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
        assert "Could not analyse broken.wav" in _upload(driver, bad)
    finally:
        driver.quit()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_upload_real_recording_shows_timeline(
    dashboard_factory, shared_data: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    from callsense.settings import Settings

    model_dir = Settings().model_dir
    if not (model_dir / "model.json").is_file():
        pytest.fail(f"no emotion model artefact at {model_dir} (the repository ships one)")
    rows = list(csv.DictReader(open(shared_data / "ravdess" / "MANIFEST.csv")))
    clip = next(r for r in rows if r["emotion"] == "angry" and r["intensity"] == "strong")
    # one voice in a mono file counts as the agent: by default no emotion is inferred for it
    default = dashboard_factory(seed_data=False)
    # opted in (CALLSENSE_EMOTION_ROLES=customer,agent), the same file gets its timeline
    opted = dashboard_factory(seed_data=False, emotion_roles=("customer", "agent"))
    driver = chrome_driver(tmp_path)
    try:
        # OGG is accepted (the clip re-encoded); no server path is ever shown
        audio, sr = sf.read(str(shared_data / "ravdess" / clip["path"]))
        ogg = tmp_path / "clip.ogg"
        sf.write(str(ogg), audio, sr, format="OGG", subtype="VORBIS")
        driver.get(default.url + "/upload")
        wait(lambda: driver.find_element(By.ID, "upload"), what="upload page")
        text = _upload(driver, ogg)
        assert "No emotion windows" in text and "CALLSENSE_EMOTION_ROLES" in text, text
        assert "Longest monologue" in text and "/tmp" not in text, text  # VAD figures still
        doc = _download(driver, "upload-json")
        assert doc["source"] == "clip.ogg" and doc["summary"]["conversation"]["speakers"]
        driver.get(opted.url + "/upload")
        wait(lambda: driver.find_element(By.ID, "upload"), what="upload page")
        text = _upload(driver, shared_data / "ravdess" / clip["path"])
        graph = wait(lambda: driver.find_element(By.CSS_SELECTOR, "#upload-graph .scatterlayer"),
                     what="timeline graph")  # fmt: skip
        assert graph is not None
        # the verdict in words, also for a clip of one or two windows, and the downloads
        verdict = driver.find_element(By.ID, "upload-verdict").text
        doc = _download(driver, "upload-json")
        n = len(doc["speakers"][0]["windows"])
        assert n >= 1 and f"over {n} window" in verdict and "mostly" in verdict, verdict
        rows = list(csv.DictReader(io.StringIO(_download(driver, "upload-csv", raw=True))))
        assert len(rows) == n and "/tmp" not in verdict
    finally:
        driver.quit()
