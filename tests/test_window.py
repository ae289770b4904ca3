"""The cloud filter's sliding window against a brute-force reference."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvcharge.control.window import TimeWindow


@given(
    st.lists(st.tuples(st.floats(0, 30), st.floats(-1e4, 1e4)), min_size=1, max_size=200),
    st.sampled_from([0.0, 10.0, 60.0, 240.0]),
    st.sampled_from([0.0, 10.0, 30.0, 144.0, 240.0]),
)
def test_min_max_mean_match_brute_force(
    steps: list[tuple[float, float]], length_s: float, span_s: float
) -> None:
    """The whole window, and the spans read from its end (the controller keeps one surplus window and
    reads a start's part of it and the last 30 s from it; a span longer than the window is cut to it)."""
    window = TimeWindow(length_s)
    t, seen = 0.0, []
    for dt, value in steps:
        t += dt
        window.add(t, value)
        seen.append((t, value))
        inside = [v for u, v in seen if u >= t - length_s]
        assert window.min == min(inside)
        assert window.max == max(inside)
        assert window.mean == pytest.approx(sum(inside) / len(inside), abs=1e-6)
        assert window.full == (t - seen[0][0] >= length_s)
        tail = [v for u, v in seen if u >= t - min(span_s, length_s)]
        assert window.min_over(span_s) == min(tail)
        assert window.max_over(span_s) == max(tail)
        assert window.spans(span_s) == (t - seen[0][0] >= span_s)


def test_clear_empties_and_refuses_time_going_back() -> None:
    window = TimeWindow(60)
    window.add(0, 1.0)
    window.add(70, 2.0)
    assert window.full and window.mean == 2.0
    window.clear()
    assert not window.full
    window.add(5, 3.0)  # after a clear the window starts again
    with pytest.raises(ValueError, match="back in time"):
        window.add(4, 1.0)
