"""One colour-blind-safe palette (Okabe & Ito, 2008) for every chart: the dashboard's figures and
``callsense analyze --plot``. Each emotion, role and alert severity keeps one colour everywhere.
Text is never drawn in these colours (yellow on white is unreadable): a swatch sits beside it."""

from __future__ import annotations

EMOTION_COLORS: dict[str, str] = {
    "angry": "#D55E00",  # vermillion
    "sad": "#0072B2",  # blue
    "happy": "#F0E442",  # yellow (orange merges with vermillion for deuteranopes)
    "neutral": "#999999",  # grey
    "calm": "#56B4E9",  # sky blue
    "fear": "#CC79A7",  # reddish purple
    "disgust": "#009E73",  # bluish green
    "surprise": "#E69F00",  # orange
    "boredom": "#000000",
}
ROLE_COLORS: dict[str, str] = {"customer": "#D55E00", "agent": "#0072B2"}
SEVERITY_COLORS: dict[str, str] = {"critical": "#D55E00", "warning": "#E69F00"}
OTHER = "#555555"  # anything the palette does not name


def emotion_color(label: str) -> str:
    return EMOTION_COLORS.get(label, OTHER)
