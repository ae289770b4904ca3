"""The fuse cap of the control core: how much current per phase the car may draw under the fuse.

Pure: no I/O, no clock reads; :class:`pvcharge.control.controller.Controller` caps its every command
with it.

**Fuse.** With ``site.max_grid_current_a`` every command, in every mode, is capped so that no phase
imports more than the fuse: the other loads per phase come from the meter's phase currents minus the
car's own (or, without phase currents, all other import is assumed on the car's phase).  The cap acts
on the next reading and is released only after the headroom stayed higher for ``FUSE_RELEASE_S``; below
min current the car pauses.
"""

from __future__ import annotations

import math

from pvcharge.control.window import TimeWindow
from pvcharge.readings import ChargerReading, SiteReading

FUSE_RELEASE_S = 60.0  #: the fuse cap rises only after the headroom stayed higher this long, in s


def car_currents_a(
    charger: ChargerReading | None, phases: int, voltage_v: float
) -> tuple[float, float, float]:
    """The car's own current on L1–L3 in A: the charger's phase currents, else its power spread over
    the phases it draws on (the charger's ``phases``, else ``phases``), L1 first (no charger reading:
    0 A)."""
    if charger is not None and charger.phase_currents_a is not None:
        return charger.phase_currents_a
    car_w = charger.power_w if charger is not None else 0.0
    n = charger.phases if charger is not None and charger.phases in (1, 3) else phases
    each = car_w / (n * voltage_v)
    return (each, each if n == 3 else 0.0, each if n == 3 else 0.0)


def fuse_headroom_a(
    limit_a: float,
    voltage_v: float,
    site: SiteReading,
    charger: ChargerReading | None,
    phases: int,
    car_phases: int,
) -> float:
    """The most current per phase the car may draw on ``phases`` so that no phase imports more than
    ``limit_a``.

    Other loads per phase = meter phase current − the car's own current on it (:func:`car_currents_a`,
    with ``car_phases`` the phases it draws on when the charger does not say).  Without meter phase
    currents all import beyond the car is assumed on one of the car's phases.
    """
    car_w = charger.power_w if charger is not None else 0.0
    if site.grid_currents_a is None:
        other_a = max(0.0, site.grid_power_w - car_w) / voltage_v
        return limit_a - other_a
    car_a = car_currents_a(charger, car_phases, voltage_v)
    others = [grid - car for grid, car in zip(site.grid_currents_a, car_a, strict=True)]
    return limit_a - max(others[:phases])


class FuseWindow:
    """The fuse headroom (A) of each meter reading, once per reading, at its minimum over
    ``FUSE_RELEASE_S``: down at once, back up only after it stayed higher that long."""

    def __init__(self) -> None:
        self._window = TimeWindow(FUSE_RELEASE_S)
        self._t = -math.inf

    def is_new(self, site: SiteReading) -> bool:
        """Whether ``site`` is newer than the last reading added."""
        return site.timestamp_s > self._t

    def add(self, site: SiteReading, headroom_a: float) -> None:
        """Add the headroom at ``site``'s time (call only when :meth:`is_new`)."""
        self._t = site.timestamp_s
        self._window.add(site.timestamp_s, headroom_a)

    @property
    def headroom_a(self) -> float:
        """The smallest headroom of the last ``FUSE_RELEASE_S``, A."""
        return self._window.min

    def clear(self) -> None:
        """Forget the headroom (stale meter data); the reading time is kept."""
        self._window.clear()
