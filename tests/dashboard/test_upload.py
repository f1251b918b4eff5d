"""The upload page in headless Chromium: bad files get a clear message and the page keeps
working; a real recording (RAVDESS, via the offline analysis path and the shipped model) gives a
per-speaker timeline."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from support.dash import chrome_driver, wait  # noqa: E402


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
        driver.get(default.url + "/upload")
        wait(lambda: driver.find_element(By.ID, "upload"), what="upload page")
        text = _upload(driver, shared_data / "ravdess" / clip["path"])
        assert "No emotion windows" in text and "CALLSENSE_EMOTION_ROLES" in text, text
        driver.get(opted.url + "/upload")
        wait(lambda: driver.find_element(By.ID, "upload"), what="upload page")
        text = _upload(driver, shared_data / "ravdess" / clip["path"])
        assert "windows" in text, text
        graph = wait(lambda: driver.find_element(By.CSS_SELECTOR, "#upload-graph .scatterlayer"),
                     what="timeline graph")  # fmt: skip
        assert graph is not None
    finally:
        driver.quit()
