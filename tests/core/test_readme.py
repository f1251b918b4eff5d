"""The README's configuration table is the settings object's own documentation."""

from __future__ import annotations

import re
from pathlib import Path

from callsense.settings import Settings, settings_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_is_generated_from_settings() -> None:
    text = README.read_text()
    match = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", text, re.S)
    assert match, "README lacks the settings markers"
    assert match.group(1).strip() == settings_markdown().strip(), (
        "README configuration table is stale: paste `callsense config --markdown`"
    )


def test_every_setting_has_a_doc_line() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description and len(field.description) > 10, name


def test_readme_starts_with_the_two_commands() -> None:
    head = README.read_text().split("## ", 1)[0]
    assert re.findall(r"^make \w+", head, re.M) == ["make demo", "make test"]
