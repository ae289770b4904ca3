"""A simulated site: PV and house load from a trace, a hybrid-inverter home battery, and a car.

This is the physics behind every emulator, the demo and replays.  Defaults are pvcharge's
*reference site* (so numbers compare across tools):

- home battery 10 kWh, ±5 kW, SoC 10–100 %, starting at 30 %; its inverter drives grid power
  toward 0 W with a first-order lag of 3 s;
- a car plugged in 08:00–18:00 local time, 60 kWh, SoC 20 % → 100 %, drawing the offered current
  (6–32 A, 1 or 3 phases, 230 V) 5 s after a change, 15 s after a start from pause, and pausing
  30 s around a phase switch.  A *sleepy* car (``CarParams(sleepy=True)``, like a VW ID or a Dacia
  Spring) falls asleep when a pause stops it, and is asleep when the model starts (plugged in earlier,
  its charge paused): asleep it stays in state B drawing 0 W whatever is offered, until the charger's
  wake-up sequence calls :meth:`SiteModel.wake_car`.

Signs follow ``pvcharge.readings``: grid > 0 imports, battery > 0 discharges.

The model is plain synchronous Python: the emulators read :meth:`SiteModel.state` when a request
arrives, the charger emulator calls :meth:`SiteModel.offer`, and whoever owns the clock calls
:meth:`SiteModel.advance`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from pvcharge.sessions.tally import split_car_power
from pvcharge.sim.trace import Trace


@dataclass(frozen=True)
class BatteryParams:
    """Home battery behind a hybrid inverter that balances the grid toward 0 W."""

    capacity_wh: float = 10_000.0
    max_charge_w: float = 5_000.0
    max_discharge_w: float = 5_000.0
    soc_min_pct: float = 10.0
    soc_max_pct: float = 100.0
    soc_start_pct: float = 30.0
    lag_s: float = 3.0  #: first-order time constant of the inverter's grid balancing


@dataclass(frozen=True)
class CarParams:
    """The car and its plug-in window (local time of day, in s since midnight)."""

    capacity_wh: float = 60_000.0
    soc_start_pct: float = 20.0
    soc_target_pct: float = 100.0
    plug_in_s: float = 8 * 3600.0
    plug_out_s: float = 18 * 3600.0
    max_phases: int = 3  #: 1 for a car that only draws on one phase
    min_current_a: float = 6.0  #: below this offered current the car does not draw (IEC 61851)
    follow_delay_s: float = 5.0  #: a new current takes effect after this
    start_delay_s: float = 15.0  #: from pause to drawing
    phase_switch_pause_s: float = 30.0
    sleepy: bool = False  #: asleep at the start and after every pause, until :meth:`SiteModel.wake_car`
    wakeable: bool = True  #: False: a sleepy car no charger's wake-up reaches (only its own app would)


@dataclass(frozen=True)
class SiteState:
    """What a meter and a charger at the site would measure right now (canonical signs)."""

    t_s: float
    pv_power_w: float
    house_power_w: float  #: house load without the car
    grid_power_w: float  #: > 0 import
    battery_power_w: float  #: > 0 discharge
    battery_soc_pct: float
    car_connected: bool
    car_power_w: float
    car_current_a: float  #: per phase, drawn
    car_phases: int  #: phases the car draws on (0 when not drawing)
    car_soc_pct: float
    offered_current_a: float  #: the charger's current limit (0 = paused)
    offered_phases: int  #: 1 or 3, the charger's phase setting
    car_asleep: bool = False  #: a sleepy car that ignores the offered current until woken


@dataclass
class EnergyTally:
    """Energy integrals since the model started, in Wh."""

    car_wh: float = 0.0
    pv_to_car_wh: float = 0.0
    battery_to_car_wh: float = 0.0
    grid_to_car_wh: float = 0.0
    pv_wh: float = 0.0
    grid_import_wh: float = 0.0
    grid_export_wh: float = 0.0
    battery_discharge_wh: float = 0.0
    battery_charge_wh: float = 0.0

    @property
    def house_wh(self) -> float:
        """What the loads behind the grid meter used, the car included, in Wh: ``house = pv + grid +
        battery`` in the project's signs (import and discharge count positive)."""
        return (
            self.pv_wh
            + self.grid_import_wh
            - self.grid_export_wh
            + self.battery_discharge_wh
            - self.battery_charge_wh
        )


@dataclass
class _Car:
    soc_pct: float
    current_a: float = 0.0  #: drawn per phase
    phases: int = 0  #: drawing on
    target_a: float = 0.0  #: what the car will draw once its delay has passed
    target_since_s: float = -math.inf
    resume_after_s: float = -math.inf  #: no draw before this (phase switch pause)
    asleep: bool = False  #: a sleepy car after a pause: draws nothing until woken


@dataclass
class SiteModel:
    """The simulated site, stepped at most ``max_step_s`` at a time.

    Args:
        trace: the PV/house day.
        t_s: start time in Unix seconds (default: the trace's start).
        battery, car: parameters; ``battery=None`` for a site without a home battery.
        voltage_v: phase voltage in V.
        max_step_s: integration step in s (the battery lag needs <= 1 s).
        clock: if given, :meth:`state` and :meth:`offer` first advance the model to ``clock()``, so
            emulators answer for the present moment of a (possibly compressed) simulated clock.
        extra_load_w: if given, called every step for the power in W of further loads behind the grid
            meter (other chargers' cars, e.g. the two-car replay's): the battery and the grid see it,
            and the tally counts it as house load.
    """

    trace: Trace
    t_s: float | None = None
    battery: BatteryParams | None = field(default_factory=BatteryParams)
    car: CarParams = field(default_factory=CarParams)
    voltage_v: float = 230.0
    max_step_s: float = 1.0
    clock: Callable[[], float] | None = None
    extra_load_w: Callable[[], float] | None = None

    def __post_init__(self) -> None:
        if self.t_s is None:
            self.t_s = self.trace.start_s
        self.energy = EnergyTally()
        self._battery_w = 0.0
        self._battery_soc = self.battery.soc_start_pct if self.battery else 0.0
        self._car = _Car(soc_pct=self.car.soc_start_pct, asleep=self.car.sleepy)
        self.wake_ups: list[float] = []  #: site times of :meth:`wake_car` calls
        self._offered_a = 0.0
        self._offered_phases = 3
        self._grid_w = 0.0
        self._update_grid()

    # -- charger side -------------------------------------------------------------------------
    def offer(self, current_a: float, phases: int | None = None) -> None:
        """The charger offers ``current_a`` per phase (0 pauses) on ``phases`` (1 or 3).

        A change of phases while the car draws pauses it for ``car.phase_switch_pause_s``.
        """
        self._follow_clock()
        now = self.now
        if phases is not None and phases != self._offered_phases:
            if phases not in (1, 3):
                raise ValueError(f"phases must be 1 or 3, got {phases}")
            self._offered_phases = phases
            if self._car.current_a > 0:
                self._car.current_a = 0.0
                self._car.phases = 0
                self._car.resume_after_s = now + self.car.phase_switch_pause_s
        self._offered_a = max(0.0, float(current_a))
        self._retarget(now)

    def wake_car(self) -> None:
        """The charger's wake-up sequence (a control-pilot interruption) reached the car: a sleeping car
        wakes (unless ``car.wakeable`` is False) and follows the offered current again, after
        ``car.start_delay_s`` from now.  Recorded in :attr:`wake_ups`."""
        self._follow_clock()
        self.wake_ups.append(self.now)
        if self._car.asleep and self.car.wakeable:
            self._car.asleep = False
            self._car.target_since_s = self.now

    @property
    def now(self) -> float:
        assert self.t_s is not None
        return self.t_s

    def car_connected(self, t_s: float | None = None) -> bool:
        local = self.trace.local_seconds_of_day(self.now if t_s is None else t_s)
        return self.car.plug_in_s <= local < self.car.plug_out_s

    # -- time ---------------------------------------------------------------------------------
    def advance(self, dt_s: float) -> None:
        """Move the model ``dt_s`` seconds forward, integrating energies."""
        remaining = dt_s
        while remaining > 1e-9:
            step = min(self.max_step_s, remaining)
            self._step(step)
            remaining -= step

    def advance_to(self, t_s: float) -> None:
        """Advance to Unix time ``t_s`` (no-op if already past it)."""
        if t_s > self.now:
            self.advance(t_s - self.now)

    def _follow_clock(self) -> None:
        if self.clock is not None:
            self.advance_to(self.clock())

    def _retarget(self, now: float) -> None:
        car = self._car
        wanted = self._offered_a if self._offered_a >= self.car.min_current_a else 0.0
        if wanted != car.target_a:
            car.target_a = wanted
            car.target_since_s = now

    def _car_step(self, now: float) -> None:
        car, p = self._car, self.car
        if not self.car_connected(now) or car.soc_pct >= p.soc_target_pct:
            car.current_a, car.phases = 0.0, 0
            car.target_a, car.target_since_s = 0.0, now
            return
        self._retarget(now)
        if now < car.resume_after_s or car.asleep:
            return
        delay = p.follow_delay_s if car.current_a > 0 else p.start_delay_s
        if car.target_a == 0.0:
            delay = p.follow_delay_s
        if car.current_a != car.target_a and now - car.target_since_s >= delay:
            # a pause stops the car: a sleepy one falls asleep
            car.asleep = p.sleepy and car.current_a > 0 and car.target_a == 0
            car.current_a = car.target_a
        car.phases = min(self._offered_phases, p.max_phases) if car.current_a > 0 else 0

    def _step(self, dt: float) -> None:
        now = self.now + dt
        self.t_s = now
        self._car_step(now)
        car = self._car
        car_w = car.current_a * car.phases * self.voltage_v
        pv_w, house_w = self.trace.at(now)
        if self.extra_load_w is not None:
            house_w += self.extra_load_w()
        net_w = house_w + car_w - pv_w  # > 0: the site needs power
        bat = self.battery
        if bat is not None:
            target = min(max(net_w, -bat.max_charge_w), bat.max_discharge_w)
            if self._battery_soc <= bat.soc_min_pct and target > 0:
                target = 0.0
            if self._battery_soc >= bat.soc_max_pct and target < 0:
                target = 0.0
            self._battery_w += (target - self._battery_w) * (1.0 - math.exp(-dt / bat.lag_s))
            self._battery_soc -= self._battery_w * dt / 3600.0 / bat.capacity_wh * 100.0
            self._battery_soc = min(max(self._battery_soc, 0.0), 100.0)
        self._grid_w = net_w - self._battery_w
        if car_w > 0:
            car.soc_pct = min(100.0, car.soc_pct + car_w * dt / 3600.0 / self.car.capacity_wh * 100.0)
        self._tally(dt, pv_w, house_w, car_w)

    def _tally(self, dt: float, pv_w: float, house_w: float, car_w: float) -> None:
        """Attribute the car's energy: PV serves the house first, then the car; the rest of the car
        comes from battery discharge and grid import in proportion to what each supplies."""
        h = dt / 3600.0
        e = self.energy
        discharge = max(0.0, self._battery_w)
        imported = max(0.0, self._grid_w)
        split = split_car_power(
            car_w, pv_w=pv_w, house_w=house_w, battery_w=self._battery_w, grid_w=self._grid_w
        )
        e.car_wh += split.car * h
        e.pv_to_car_wh += split.pv * h
        e.battery_to_car_wh += split.battery * h
        e.grid_to_car_wh += split.grid * h
        e.pv_wh += pv_w * h
        e.grid_import_wh += imported * h
        e.grid_export_wh += max(0.0, -self._grid_w) * h
        e.battery_discharge_wh += discharge * h
        e.battery_charge_wh += max(0.0, -self._battery_w) * h

    def _update_grid(self) -> None:
        pv_w, house_w = self.trace.at(self.now)
        if self.extra_load_w is not None:
            house_w += self.extra_load_w()
        car_w = self._car.current_a * self._car.phases * self.voltage_v
        self._grid_w = house_w + car_w - pv_w - self._battery_w

    # -- measurement --------------------------------------------------------------------------
    def state(self) -> SiteState:
        """What the meters measure now."""
        self._follow_clock()
        pv_w, house_w = self.trace.at(self.now)
        car = self._car
        return SiteState(
            t_s=self.now,
            pv_power_w=pv_w,
            house_power_w=house_w,
            grid_power_w=self._grid_w,
            battery_power_w=self._battery_w,
            battery_soc_pct=self._battery_soc,
            car_connected=self.car_connected(),
            car_power_w=car.current_a * car.phases * self.voltage_v,
            car_current_a=car.current_a,
            car_phases=car.phases,
            car_soc_pct=car.soc_pct,
            offered_current_a=self._offered_a,
            offered_phases=self._offered_phases,
            car_asleep=car.asleep,
        )
