"""Sample calls shipped with callsense (stereo FLAC built from RAVDESS; see README.md here).

``sample_calls()`` returns the metadata of ``calls.json`` with an absolute ``path`` per call, for
the demo and tests. ``python -m callsense.ingest.samples.build`` regenerates the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLES_DIR = Path(__file__).resolve().parent


def sample_calls() -> list[dict[str, Any]]:
    """Metadata of every sample call (``calls.json``) plus its absolute ``path``."""
    calls = json.loads((SAMPLES_DIR / "calls.json").read_text())
    for c in calls:
        c["path"] = str(SAMPLES_DIR / c["file"])
    return calls
