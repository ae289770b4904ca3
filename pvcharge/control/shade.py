"""How long a shade will last, from the recent pattern of the surplus: whether to hold min current on 3
phases through it or go to 1 phase, as an expected-cost comparison.

Pure: no I/O, no clock reads; :class:`pvcharge.control.controller.Controller` owns one :class:`ShadeSpells`
for the level it holds through shade (min current on 3 phases), feeds it each meter reading with
``phases: auto`` and asks it how long the rest of the shade likely is (``Controller._shade_due`` weighs
that against ``shade_switch_cost_wh``).
The surplus's minute-scale pattern changes slowly within a day, so the last hour's shades are the
estimate of the next one's length; nothing beyond the hour is remembered.

**Spells.** A reading whose surplus is below the level's power (``level_w``) is *dark*.  A dark spell
begins at its first dark reading and ends once the surplus stayed at or above the level for
``BRIGHT_GAP_S`` (a bright flicker inside a shade does not split it); its length is from its first to its
last dark reading.  The lengths of the spells that ended within the last ``memory_s`` are kept.

**Expected rest.** After ``elapsed_s`` of the current spell, the expected rest is the empirical mean
residual length: the mean of ``L − elapsed_s`` over the remembered spells with ``L > elapsed_s`` (the
spells that lasted at least this long are the ones this spell can still turn out like).  When no
remembered spell lasted that long, the current one is the longest of the hour: its rest is taken as its
elapsed time (spell lengths have a heavy tail: a shade that outlasted all the others tends to last).  With
fewer than ``min_spells`` remembered spells there is no estimate (``None``): the caller keeps its own rule.

An hour of short flickers (broken cumulus) thus predicts short shades, and the caller rides them out at
its level; an hour of long shades predicts a long one, and the caller leaves the level early.
"""

from __future__ import annotations

import math
from collections import deque

BRIGHT_GAP_S = 30.0  #: a dark spell ends once the surplus covered the level this long, in s


class ShadeSpells:
    """The dark spells of the surplus below one power level over the last ``memory_s``.

    Args:
        memory_s: how long an ended spell is remembered, in s.
        min_spells: the fewest remembered spells that give an estimate.

    Times are seconds on the clock that stamps the readings; powers in W.
    """

    def __init__(self, memory_s: float = 3600.0, min_spells: int = 2) -> None:
        self.memory_s = memory_s
        self.min_spells = min_spells
        self._ended: deque[tuple[float, float]] = deque()  # (end time, length) of ended spells, s
        self._dark_since: float | None = None  # first dark reading of the current spell
        self._last_dark_t = -math.inf  # last dark reading

    def clear(self) -> None:
        """Forget everything (stale data: the pattern has a hole)."""
        self._ended.clear()
        self._dark_since, self._last_dark_t = None, -math.inf

    def add(self, t_s: float, surplus_w: float, level_w: float) -> None:
        """One reading at ``t_s``: ``surplus_w`` against the level ``level_w`` (W)."""
        if surplus_w < level_w:
            if self._dark_since is None:
                self._dark_since = t_s
            self._last_dark_t = t_s
        elif self._dark_since is not None and t_s - self._last_dark_t >= BRIGHT_GAP_S:
            self._ended.append((self._last_dark_t, self._last_dark_t - self._dark_since))
            self._dark_since = None
        while self._ended and self._ended[0][0] < t_s - self.memory_s:
            self._ended.popleft()

    @property
    def dark(self) -> bool:
        """Whether a dark spell is going on (its last dark reading within ``BRIGHT_GAP_S``)."""
        return self._dark_since is not None

    def elapsed_s(self, t_s: float) -> float:
        """How long the current dark spell has lasted at ``t_s`` (0 when there is none), in s."""
        return 0.0 if self._dark_since is None else t_s - self._dark_since

    @property
    def spells(self) -> list[float]:
        """The lengths of the remembered ended spells, s, oldest first."""
        return [length for _, length in self._ended]

    def expected_rest_s(self, t_s: float) -> float | None:
        """The expected rest of the current dark spell at ``t_s`` in s (see the module docstring);
        ``None`` without an estimate (fewer than ``min_spells`` remembered) or without a dark spell."""
        if self._dark_since is None or len(self._ended) < self.min_spells:
            return None
        elapsed = t_s - self._dark_since
        longer = [length - elapsed for _, length in self._ended if length > elapsed]
        if not longer:
            return elapsed
        return sum(longer) / len(longer)
