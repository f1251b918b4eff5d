"""The live wall's update: the order, and only the cards the browser lacks or has drawn
differently; the SVG sparkline."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
from callsense.dashboard.figures import SPARK_H, sparkline_svg
from callsense.dashboard.live import wall_update

from callsense.palette import ROLE_COLORS


def views(n: int, changed: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    return [{"call_id": f"c{i}", "time": "1:00" if i in changed else "0:59"} for i in range(n)]


def drawn(vs: list[dict[str, Any]]) -> dict[str, str]:
    """What the browser reports after drawing ``vs`` in order (assets/live.js)."""
    update = wall_update(None, vs)
    assert update is not None
    return dict(update["order"])


@pytest.mark.parametrize(
    ("before", "after", "sent"),
    [
        (views(200), views(200, frozenset({7})), {"c7"}),  # one card changed: one card sent
        (views(200), views(195), set()),  # five calls ended: only the order
        (views(100), views(120), {f"c{i}" for i in range(100, 120)}),  # twenty new calls
        (views(3), views(3)[::-1], set()),  # re-ranked: moved, not re-sent
        (views(3), [], set()),
    ],
)
def test_the_update_sends_only_the_cards_that_changed(
    before: list[dict[str, Any]], after: list[dict[str, Any]], sent: set[str]
) -> None:
    update = wall_update(drawn(before), after)
    assert update is not None
    assert set(update["cards"]) == sent
    assert [cid for cid, _ in update["order"]] == [v["call_id"] for v in after]


def test_nothing_to_send_when_the_browser_has_it_all_and_everything_when_it_has_nothing() -> None:
    vs = views(50)
    assert wall_update(drawn(vs), vs) is None
    first = wall_update(None, vs)
    assert first is not None and list(first["cards"]) == [v["call_id"] for v in vs]
    # the browser lost an update (a stale digest): that card is sent again
    stale = {**drawn(vs), "c3": "old"}
    again = wall_update(stale, vs)
    assert again is not None and set(again["cards"]) == {"c3"}


def test_sparkline_is_an_svg_path_per_speaker_in_the_palette() -> None:
    speakers = [
        {"role": "customer", "t": [0.0, 1.0, 2.0], "anger": [0.0, 0.5, 1.0]},
        {"role": "agent", "t": [1.5], "anger": [0.25]},
    ]
    uri = sparkline_svg(speakers)
    assert uri.startswith("data:image/svg+xml;utf8,")
    svg = urllib.parse.unquote(uri.split(",", 1)[1])
    assert svg.count("<path ") == 2
    assert ROLE_COLORS["customer"] in svg and ROLE_COLORS["agent"] in svg
    # anger 0 at the bottom, 1 at the top; the customer's line spans the whole width
    assert f"M0.0,{SPARK_H:.1f} L100.0,{SPARK_H / 2:.1f} L200.0,0.0" in svg
    assert sparkline_svg([]).count("<path ") == 0
