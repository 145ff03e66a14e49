"""The overview's small drawings and durations (sluice.console.pages.overview)."""

from __future__ import annotations

import pytest

from sluice.console.pages.overview import CHART_HEIGHT, age, chart


def test_chart__one_bar_per_minute_with_something_scaled_to_the_peak() -> None:
    drawn = chart([0, 2, 0, 4])
    assert (drawn.peak, drawn.total, drawn.last) == (4, 6, 4)
    assert drawn.path == (f"M1.1 {CHART_HEIGHT}v-20.0h0.8v20.0zM3.1 {CHART_HEIGHT}v-40.0h0.8v40.0z")


def test_chart__a_small_count_beside_a_large_one_still_shows() -> None:
    drawn = chart([1, 10_000])
    assert drawn.path.startswith(f"M0.1 {CHART_HEIGHT}v-1.0h0.8")


def test_chart__nothing_at_all_draws_nothing() -> None:
    drawn = chart([0] * 60)
    assert (drawn.path, drawn.peak, drawn.total, drawn.last) == ("", 0, 0, 0)
    assert chart([]).path == ""


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(None, "—"), (-3, "0 s"), (0.4, "0 s"), (42, "42 s"), (89, "89 s"), (90, "1 min"),
     (7 * 60 + 59, "7 min"), (89 * 60, "89 min"), (90 * 60, "1 h 30 min"), (3 * 3600, "3 h"),
     (47 * 3600, "47 h"), (2 * 86_400 + 5, "2 d")],
)  # fmt: skip
def test_age__reads_at_a_glance(seconds: float | None, said: str) -> None:
    assert age(seconds) == said
