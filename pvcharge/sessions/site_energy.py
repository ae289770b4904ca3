"""The site's energy per local day and power per minute, integrated from the meter's reading each cycle:
pure, no I/O, no clock.

:class:`SiteTally` is fed one sample per control cycle (the cycle's time, the site reading, every car's
power together) whatever the chargers answer: a charger that is unreachable for a while leaves its car's
power out (not known: counted as none), not the site's PV, grid and battery energy.  The integration
(trapezoids between two fresh samples, nothing across a gap longer than ``max_gap_s``, an interval
booked on the local day of its end) and the attribution of the cars' power to PV, battery and grid are
those of :mod:`pvcharge.sessions.tally`, which keeps each loadpoint's sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo

from pvcharge.readings import SiteReading
from pvcharge.sessions.tally import (
    ENERGY_FIELDS,
    POWER_FIELDS,
    DayTotals,
    Split,
    attribute,
    interval,
    local_day,
)


@dataclass(frozen=True)
class _SiteSample:
    t_s: float
    split: Split  #: every car's power by source
    pv_w: float
    grid_w: float
    battery_w: float


class SiteTally:
    """Integrates the site's readings into energy per local day and power per minute.

    Args:
        tz: the time zone of the days (``None``: the system's).
        max_age_s: a site reading older than this (at the cycle's time) is not used, s.
        max_gap_s: a longer interval between two usable samples is not integrated, s.
    """

    def __init__(self, *, tz: tzinfo | None = None, max_age_s: float = 30.0, max_gap_s: float = 60.0) -> None:
        self.tz = tz
        self.max_age_s = max_age_s
        self.max_gap_s = max_gap_s
        self.days: dict[str, DayTotals] = {}  #: energy per day since :meth:`take_days`
        #: per minute (its start, Unix s): [samples, then the sums of POWER_FIELDS] since :meth:`take_power`
        self.power: dict[int, list[float]] = {}
        self.gap_s = 0.0  #: time not integrated because of gaps, s
        self._last: _SiteSample | None = None

    def step(self, now_s: float, site: SiteReading | None, cars_w: float) -> None:
        """Take one cycle at ``now_s`` (Unix s): ``site`` (missing or stale: a gap) and ``cars_w``, every
        car's power together (W, >= 0; a charger without a reading counts as none)."""
        if site is None or now_s - site.timestamp_s > self.max_age_s:
            return
        minute = self.power.setdefault(int(now_s // 60) * 60, [0.0] * (1 + len(POWER_FIELDS)))
        for i, value in enumerate(
            (site.pv_power_w, site.house_power_w - cars_w, cars_w, site.grid_power_w, site.battery_power_w)
        ):
            minute[1 + i] += value
        minute[0] += 1
        sample = _SiteSample(
            now_s, attribute(site, cars_w), site.pv_power_w, site.grid_power_w, site.battery_power_w
        )
        previous, self._last = self._last, sample
        dt_s, gap_s = interval(previous.t_s if previous is not None else None, now_s, self.max_gap_s)
        self.gap_s += gap_s
        if previous is not None and dt_s > 0:
            self._integrate(previous, sample, dt_s / 3600.0)

    def _integrate(self, a: _SiteSample, b: _SiteSample, h: float) -> None:
        def mean(x: float, y: float) -> float:
            return (x + y) / 2 * h

        day_name = local_day(b.t_s, self.tz)
        day = self.days.setdefault(day_name, DayTotals(day_name))
        day.pv_wh += mean(a.pv_w, b.pv_w)
        day.import_wh += mean(max(a.grid_w, 0.0), max(b.grid_w, 0.0))
        day.export_wh += mean(max(-a.grid_w, 0.0), max(-b.grid_w, 0.0))
        day.battery_discharge_wh += mean(max(a.battery_w, 0.0), max(b.battery_w, 0.0))
        day.battery_charge_wh += mean(max(-a.battery_w, 0.0), max(-b.battery_w, 0.0))
        day.car_wh += mean(a.split.car, b.split.car)
        day.car_pv_wh += mean(a.split.pv, b.split.pv)
        day.car_battery_wh += mean(a.split.battery, b.split.battery)
        day.car_grid_wh += mean(a.split.grid, b.split.grid)

    def take_power(self) -> dict[int, list[float]]:
        """The power sums per minute since the last call (to add to the store)."""
        power, self.power = self.power, {}
        return power

    def take_days(self) -> list[DayTotals]:
        """The energy per day since the last call (to add to the store)."""
        days, self.days = self.days, {}
        return [d for d in days.values() if any(getattr(d, f) for f in ENERGY_FIELDS)]
