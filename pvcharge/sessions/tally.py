"""Charging sessions, integrated from the daemon's cycles, and the attribution of the car's power by
source: pure, no I/O, no clock.

:class:`Tally` is fed one sample per control cycle (the cycle's time, the site and charger readings,
the command and whether it was written) and keeps the **open session** of one loadpoint: from plug-in
(``ChargerReading.connected``) to unplug; a charger that never reports a car (``connected`` stays
False) opens a session at the first power drawn and closes it after :data:`IDLE_CLOSE_S` without power.
The site's energy per local day (PV, export, import, battery charge and discharge, car) and its power
per minute are :class:`pvcharge.sessions.site_energy.SiteTally`'s, fed from the meter's reading each
cycle whatever the chargers answer.

Integration: trapezoids between two consecutive samples that both have fresh readings (a site reading
at most ``max_age_s`` old).  An interval longer than ``max_gap_s`` (the daemon stalled or stopped, the
meter was away) is not integrated: energy is never invented across a gap.  (The site's energy: an
interval is booked on the local day of its end.)

Attribution of the car's power (the same as the replay's, :meth:`pvcharge.sim.site.SiteModel._tally`):
PV serves the house first, then the car; the rest of the car's power comes from battery discharge and
grid import in proportion to what each supplies (all of it from the grid when neither supplies).  The
house without the car is ``pv + grid + battery − car`` (readings' signs: grid > 0 imports, battery > 0
discharges).  With several loadpoints (one :class:`Tally` each, ``cars_w`` in :meth:`Tally.step`) "the
car" is every car together, and each car gets its part of each source in proportion to its power
(:func:`car_share`).

Money, per interval, with the tariff in force (``tariff:`` in the config):

- ``cost = grid_kwh × grid_price_per_kwh``;
- ``savings = (pv_kwh + battery_kwh) × (grid_price_per_kwh − feed_in_per_kwh)``: what the car's PV and
  battery energy would have cost from the grid, less the feed-in tariff that energy would otherwise
  have earned (battery energy counts as PV stored earlier).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from pvcharge.readings import ChargerCommand, ChargerReading, SiteReading

#: a session the charger cannot see a car for (``connected`` never True) closes after this long without
#: power, in s
IDLE_CLOSE_S = 1800.0
WH_PER_KWH = 1000.0


@dataclass(frozen=True)
class Tariff:
    """Prices per kWh in ``currency``; ``grid_price_per_kwh`` buys, ``feed_in_per_kwh`` is paid for export."""

    grid_price_per_kwh: float = 0.0
    feed_in_per_kwh: float = 0.0
    currency: str = "EUR"


@dataclass(frozen=True)
class Split:
    """The car's power (W) or energy (Wh) by source."""

    car: float = 0.0
    pv: float = 0.0
    battery: float = 0.0
    grid: float = 0.0


def split_car_power(car_w: float, *, pv_w: float, house_w: float, battery_w: float, grid_w: float) -> Split:
    """Split the car's power ``car_w`` (W, >= 0) by source: PV after the house without the car
    (``house_w``), the rest from battery discharge (``battery_w`` > 0) and grid import (``grid_w`` > 0)
    in proportion, all of it from the grid when neither supplies.  The replay's site model
    (:meth:`pvcharge.sim.site.SiteModel._tally`) attributes with this too."""
    car = max(0.0, car_w)
    pv = min(max(pv_w - house_w, 0.0), car)
    rest = car - pv
    discharge = max(0.0, battery_w)
    imported = max(0.0, grid_w)
    supply = discharge + imported
    battery = rest * discharge / supply if supply > 0 else 0.0
    return Split(car, pv, battery, rest - battery)


def attribute(site: SiteReading, car_power_w: float) -> Split:
    """Split ``car_power_w`` (W, >= 0) by source for one site reading (see the module docstring): the
    house without the car is ``pv + grid + battery − car``."""
    return split_car_power(
        car_power_w,
        pv_w=site.pv_power_w,
        house_w=site.house_power_w - max(0.0, car_power_w),
        battery_w=site.battery_power_w,
        grid_w=site.grid_power_w,
    )


def car_share(split: Split, car_w: float) -> Split:
    """One car's part of every car's ``split`` (several loadpoints): each source in proportion to the
    car's power ``car_w`` (W) over all cars' ``split.car``; nothing when no car draws."""
    if split.car <= 0:
        return Split()
    k = min(max(0.0, car_w) / split.car, 1.0)
    return Split(split.car * k, split.pv * k, split.battery * k, split.grid * k)


def solar_share(pv_wh: float, battery_wh: float, car_wh: float) -> float | None:
    """The car's energy ``car_wh`` from the sun, straight from PV or through the home battery:
    ``(pv_wh + battery_wh) / car_wh`` (0–1), ``None`` before any energy."""
    return (pv_wh + battery_wh) / car_wh if car_wh > 0 else None


@dataclass
class Session:
    """One charging session of a loadpoint.

    Attributes:
        loadpoint: the loadpoint's name (a ``charger:`` config's: the charger's type).
        start_s: plug-in (or first power) time, Unix s.
        end_s: unplug time, Unix s; ``None`` while open.
        updated_s: the last time integrated into it, Unix s.
        energy_wh, pv_wh, battery_wh, grid_wh: energy charged and its sources, Wh.
        peak_power_w: the highest charging power seen, W.
        phases: the phase counts the car drew on (e.g. ``[1, 3]``).
        starts: commands written going from pause to a current.
        phase_switches: commands written changing the phases.
        cost, savings: in ``currency`` (see the module docstring).
        id: the store's row id, ``None`` until first stored.
    """

    loadpoint: str
    start_s: float
    end_s: float | None = None
    updated_s: float = 0.0
    energy_wh: float = 0.0
    pv_wh: float = 0.0
    battery_wh: float = 0.0
    grid_wh: float = 0.0
    peak_power_w: float = 0.0
    phases: list[int] = field(default_factory=list)
    starts: int = 0
    phase_switches: int = 0
    cost: float = 0.0
    savings: float = 0.0
    currency: str = "EUR"
    id: int | None = None
    #: the last command written during the session (for starts and phase switches); not stored
    last_command: ChargerCommand | None = field(default=None, compare=False, repr=False)
    #: the charger reported a car during the session (else it closes after IDLE_CLOSE_S without power)
    seen_connected: bool = field(default=False, compare=False, repr=False)
    #: the last time the car drew power, Unix s; not stored
    last_power_s: float | None = field(default=None, compare=False, repr=False)

    @property
    def solar_share(self) -> float | None:
        """``(pv + battery) / energy`` (0–1), ``None`` before any energy."""
        return solar_share(self.pv_wh, self.battery_wh, self.energy_wh)


@dataclass
class DayTotals:
    """Site energy of one local day, in Wh (``day``: ``YYYY-MM-DD``)."""

    day: str
    pv_wh: float = 0.0
    export_wh: float = 0.0
    import_wh: float = 0.0
    battery_charge_wh: float = 0.0
    battery_discharge_wh: float = 0.0
    car_wh: float = 0.0
    car_pv_wh: float = 0.0
    car_battery_wh: float = 0.0
    car_grid_wh: float = 0.0

    @property
    def solar_share(self) -> float | None:
        """``(car_pv + car_battery) / car`` (0–1), ``None`` before any energy into the car."""
        return solar_share(self.car_pv_wh, self.car_battery_wh, self.car_wh)

    def add(self, other: DayTotals) -> None:
        for f in dataclasses.fields(self):
            if f.name != "day":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


#: the fields of a Session that are not stored: what the tally needs while it runs
RUNTIME_FIELDS = ("last_command", "seen_connected", "last_power_s")
#: the power series kept per minute (W; house without the car; the project's signs)
POWER_FIELDS = ("pv_w", "house_w", "car_w", "grid_w", "battery_w")
ENERGY_FIELDS = tuple(f.name for f in dataclasses.fields(DayTotals) if f.name != "day")


@dataclass(frozen=True)
class _Sample:
    t_s: float
    own: Split  #: this loadpoint's car's power by source


def interval(previous_s: float | None, now_s: float, max_gap_s: float) -> tuple[float, float]:
    """``(dt_s, gap_s)`` from the last usable sample (at ``previous_s``, Unix s) to this one (at
    ``now_s``): the interval to integrate, s, or the gap not integrated (longer than ``max_gap_s``), s;
    both 0 at the first sample and when the clock went back."""
    if previous_s is None or now_s <= previous_s:
        return 0.0, 0.0
    dt_s = now_s - previous_s
    return (0.0, dt_s) if dt_s > max_gap_s else (dt_s, 0.0)


def local_day(t_s: float, tz: tzinfo | None) -> str:
    """``YYYY-MM-DD`` of Unix time ``t_s`` in ``tz`` (``None``: the system's local time)."""
    moment = datetime.fromtimestamp(t_s, tz) if tz is not None else datetime.fromtimestamp(t_s).astimezone()
    return moment.date().isoformat()


class Tally:
    """Integrates cycles into one loadpoint's sessions (see the module docstring).

    Args:
        loadpoint: the loadpoint's name.
        tariff: prices for cost and savings.
        max_age_s: a site reading older than this (at the cycle's time) is not used, s.
        max_gap_s: a longer interval between two usable samples is not integrated, s.
        session: an open session to continue (from the store, after a restart).
    """

    def __init__(
        self,
        loadpoint: str,
        tariff: Tariff,
        *,
        max_age_s: float = 30.0,
        max_gap_s: float = 60.0,
        session: Session | None = None,
    ) -> None:
        self.loadpoint = loadpoint
        self.tariff = tariff
        self.max_age_s = max_age_s
        self.max_gap_s = max_gap_s
        self.session = session  #: the open session, if any
        self.closed: list[Session] = []  #: sessions closed since :meth:`take_closed`
        self.gap_s = 0.0  #: time not integrated because of gaps, s
        self._last: _Sample | None = None
        self._resumed = session is not None

    def step(
        self,
        now_s: float,
        site: SiteReading | None,
        charger: ChargerReading | None,
        command: ChargerCommand | None = None,
        written: bool = False,
        cars_w: float | None = None,
    ) -> None:
        """Take one cycle at ``now_s`` (Unix s); readings that are missing or stale are a gap.
        ``cars_w``: every loadpoint's car power together (W; ``None``: this car's alone), see
        :func:`car_share`."""
        if charger is not None:
            self._open(now_s, charger)
        self._integrate_cycle(now_s, site, charger, cars_w)
        if charger is not None and self.session is not None:
            self._close_if_done(now_s, charger, self.session)
        session = self.session
        if session is not None and written and command is not None:
            last = session.last_command
            if command.current_a > 0 and (last is None or last.current_a == 0):
                session.starts += 1
            if last is not None and command.phases != last.phases:
                session.phase_switches += 1
            session.last_command = command

    def _integrate_cycle(
        self, now_s: float, site: SiteReading | None, charger: ChargerReading | None, cars_w: float | None
    ) -> None:
        session = self.session
        if site is None or charger is None or now_s - site.timestamp_s > self.max_age_s:
            return
        car_w = charger.power_w if cars_w is None else cars_w
        split = attribute(site, car_w)
        own = split if cars_w is None else car_share(split, charger.power_w)
        sample = _Sample(now_s, own)
        if session is not None and charger.power_w > 0:
            session.peak_power_w = max(session.peak_power_w, charger.power_w)
            if charger.phases and charger.phases not in session.phases:
                session.phases = sorted([*session.phases, charger.phases])
            session.last_power_s = now_s
        previous, self._last = self._last, sample
        dt_s, gap_s = interval(previous.t_s if previous is not None else None, now_s, self.max_gap_s)
        self.gap_s += gap_s
        if previous is not None and dt_s > 0:
            self._integrate(previous, sample, dt_s)

    def _open(self, now_s: float, charger: ChargerReading) -> None:
        session = self.session
        if session is not None and self._resumed:
            self._resumed = False
            unplugged = not (charger.connected or charger.power_w > 0)  # while pvcharge was away
            if unplugged or now_s < session.updated_s:  # (or the clock went back: not the same session)
                self._close(session, session.updated_s)
                session = None
        if session is None and (charger.connected or charger.power_w > 0):
            self.session = Session(
                self.loadpoint, start_s=now_s, updated_s=now_s, currency=self.tariff.currency
            )
            self.session.seen_connected = charger.connected
            self.session.last_power_s = now_s if charger.power_w > 0 else None

    def _close_if_done(self, now_s: float, charger: ChargerReading, session: Session) -> None:
        session.seen_connected |= charger.connected
        if charger.connected or charger.power_w > 0:
            return
        if session.seen_connected:
            self._close(session, now_s)
        elif now_s - (session.last_power_s or session.start_s) >= IDLE_CLOSE_S:
            self._close(session, session.last_power_s or now_s)

    def end(self) -> None:
        """Close the open session at the last time integrated into it (the demo's end)."""
        if self.session is not None:
            self._close(self.session, self.session.updated_s)

    def _close(self, session: Session, end_s: float) -> None:
        session.end_s = max(end_s, session.start_s)
        session.updated_s = max(session.updated_s, session.end_s)
        self.closed.append(session)
        self.session = None

    def _integrate(self, a: _Sample, b: _Sample, dt_s: float) -> None:
        h = dt_s / 3600.0

        def mean(x: float, y: float) -> float:
            return (x + y) / 2 * h

        session = self.session
        if session is None:
            return
        car = mean(a.own.car, b.own.car)
        pv = mean(a.own.pv, b.own.pv)
        battery = mean(a.own.battery, b.own.battery)
        grid = mean(a.own.grid, b.own.grid)
        t = self.tariff
        session.energy_wh += car
        session.pv_wh += pv
        session.battery_wh += battery
        session.grid_wh += grid
        session.cost += grid / WH_PER_KWH * t.grid_price_per_kwh
        session.savings += (pv + battery) / WH_PER_KWH * (t.grid_price_per_kwh - t.feed_in_per_kwh)
        session.updated_s = b.t_s

    def take_closed(self) -> list[Session]:
        """The sessions closed since the last call (to store them)."""
        closed, self.closed = self.closed, []
        return closed
