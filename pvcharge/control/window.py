"""A sliding time window over a signal with O(1) amortized min and max (monotonic deques).

Used by the cloud filter: start when the surplus *minimum* over the window covers the car's minimum
power, stop when the *maximum* over the window stays below it.  The min and max of any shorter span
ending now (:meth:`TimeWindow.min_over`, :meth:`TimeWindow.max_over`) come from the same deques in
O(log n), so one window over a signal serves every span the caller looks at.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque


def _time(sample: tuple[float, float]) -> float:
    return sample[0]


class TimeWindow:
    """Samples ``(t_s, value)`` of the last ``length_s`` seconds.

    ``full`` tells whether samples have come in for the whole window, so a caller can refuse to decide
    on a window that has not filled yet (after start-up or a data gap).
    """

    def __init__(self, length_s: float) -> None:
        if length_s < 0:
            raise ValueError(f"length_s must be >= 0, got {length_s}")
        self.length_s = length_s
        self._samples: deque[tuple[float, float]] = deque()
        self._mins: deque[tuple[float, float]] = deque()
        self._maxs: deque[tuple[float, float]] = deque()
        self._first_t: float | None = None
        self._last_t: float | None = None
        self._sum = 0.0  # of the values in _samples, so that mean is O(1)

    def add(self, t_s: float, value: float) -> None:
        """Append a sample; ``t_s`` must not decrease.  Samples older than ``t_s - length_s`` leave."""
        if self._last_t is not None and t_s < self._last_t:
            raise ValueError(f"samples must not go back in time ({t_s} < {self._last_t})")
        if self._first_t is None:
            self._first_t = t_s
        self._last_t = t_s
        self._samples.append((t_s, value))
        self._sum += value
        while self._mins and self._mins[-1][1] >= value:
            self._mins.pop()
        self._mins.append((t_s, value))
        while self._maxs and self._maxs[-1][1] <= value:
            self._maxs.pop()
        self._maxs.append((t_s, value))
        horizon = t_s - self.length_s
        while self._samples[0][0] < horizon:
            self._sum -= self._samples.popleft()[1]
        while self._mins[0][0] < horizon:
            self._mins.popleft()
        while self._maxs[0][0] < horizon:
            self._maxs.popleft()

    def clear(self) -> None:
        """Forget all samples (e.g. after stale data: the window must fill again)."""
        self._samples.clear()
        self._sum = 0.0
        self._mins.clear()
        self._maxs.clear()
        self._first_t = self._last_t = None

    @property
    def full(self) -> bool:
        """Samples have been added without a gap (``clear``) for at least the window's length."""
        return self.spans(self.length_s)

    def spans(self, span_s: float) -> bool:
        """Samples have been added without a gap (``clear``) for at least ``span_s`` seconds."""
        return (
            self._first_t is not None
            and self._last_t is not None
            and (self._last_t - self._first_t >= span_s)
        )

    def min_over(self, span_s: float) -> float:
        """Smallest value of the last ``span_s`` seconds' samples (those at or after the newest sample's
        time − ``span_s``; a span longer than ``length_s`` is cut to it). Raises ``IndexError`` when empty.

        The min deque holds each suffix's minimum as its first sample at or after the suffix's start."""
        return self._mins[self._since(self._mins, span_s)][1]

    def max_over(self, span_s: float) -> float:
        """Largest value of the last ``span_s`` seconds' samples (as :meth:`min_over`)."""
        return self._maxs[self._since(self._maxs, span_s)][1]

    def _since(self, extremes: deque[tuple[float, float]], span_s: float) -> int:
        start_t = self._last_t - span_s if self._last_t is not None else 0.0
        return bisect_left(extremes, start_t, key=_time)

    @property
    def min(self) -> float:
        """Smallest value in the window. Raises ``IndexError`` when empty."""
        return self._mins[0][1]

    @property
    def max(self) -> float:
        """Largest value in the window. Raises ``IndexError`` when empty."""
        return self._maxs[0][1]

    @property
    def count(self) -> int:
        """How many samples are in the window."""
        return len(self._samples)

    @property
    def mean(self) -> float:
        """Mean of the samples in the window."""
        return self._sum / len(self._samples)
