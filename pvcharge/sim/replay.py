"""Replay a measured day through a controller against the site model, at 1-s resolution, and score it.

No sockets and no real clock: the controller gets the site model's state as readings, so a day runs
in a few seconds.  The same :class:`~pvcharge.control.Controller` the daemon uses is the default
policy; benchmarks pass other policies with the same ``step(now, site, charger) -> Decision``.

Reference site (unless configured otherwise): see :mod:`pvcharge.sim.site`; meter readings every
``interval_s`` with ``latency_s`` (1 s) latency; 1-min traces hold each value for its minute.

Scores (:class:`DayScore`):

- ``oracle_kwh``: the most energy the car could have taken from PV alone: each second while the car
  is plugged in and not full, the highest ``I × phases × V`` (whole amps within the charge point's
  limits, 1 or 3 phases) not above the surplus ``pv − house``;
- ``car_kwh``, and its sources ``pv_to_car_kwh``, ``battery_to_car_kwh``, ``grid_to_car_kwh`` (PV serves
  the house first; the rest of the car's power comes from battery discharge and grid import in
  proportion);
- ``capture = pv_to_car_kwh / oracle_kwh``;
- ``starts`` (commands from pause to a current), ``phase_switches`` (changes of the commanded phases),
  ``charger_writes`` (commands that differed from the previous one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pvcharge.control import Decision
from pvcharge.readings import ChargerCommand, ChargerReading, IecState, SiteReading
from pvcharge.sim.site import BatteryParams, CarParams, SiteModel, SiteState
from pvcharge.sim.trace import Trace


class Policy(Protocol):
    """Anything that decides like :class:`pvcharge.control.Controller`."""

    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision: ...


@dataclass
class DayScore:
    """The scores of one replayed day (energies in kWh)."""

    trace: str
    oracle_kwh: float = 0.0
    car_kwh: float = 0.0
    pv_to_car_kwh: float = 0.0
    battery_to_car_kwh: float = 0.0
    grid_to_car_kwh: float = 0.0
    starts: int = 0
    phase_switches: int = 0
    charger_writes: int = 0
    pv_kwh: float = 0.0

    @property
    def capture(self) -> float:
        """``pv_to_car_kwh / oracle_kwh`` (1.0 when the oracle is 0)."""
        return self.pv_to_car_kwh / self.oracle_kwh if self.oracle_kwh > 0 else 1.0

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "trace": self.trace,
            "oracle_kwh": round(self.oracle_kwh, 3),
            "car_kwh": round(self.car_kwh, 3),
            "pv_to_car_kwh": round(self.pv_to_car_kwh, 3),
            "battery_to_car_kwh": round(self.battery_to_car_kwh, 3),
            "grid_to_car_kwh": round(self.grid_to_car_kwh, 3),
            "capture": round(self.capture, 4),
            "starts": self.starts,
            "phase_switches": self.phase_switches,
            "charger_writes": self.charger_writes,
        }


@dataclass(frozen=True)
class ReplaySite:
    """The simulated site of a replay (defaults: the reference site)."""

    battery: BatteryParams | None = field(default_factory=BatteryParams)
    car: CarParams = field(default_factory=CarParams)
    voltage_v: float = 230.0
    min_current_a: float = 6.0
    max_current_a: float = 16.0
    latency_s: float = 1.0


@dataclass(frozen=True)
class Sample:
    """One second of a replay, for plots."""

    t_s: float
    pv_power_w: float
    house_power_w: float
    car_power_w: float
    grid_power_w: float
    battery_power_w: float
    offered_current_a: float
    phases: int


def _readings(state: SiteState, stamp: float) -> tuple[SiteReading, ChargerReading]:
    site = SiteReading(
        grid_power_w=state.grid_power_w,
        pv_power_w=state.pv_power_w,
        battery_power_w=state.battery_power_w,
        battery_soc_pct=state.battery_soc_pct,
        timestamp_s=stamp,
    )
    charging = state.car_power_w > 0
    iec = IecState.C if charging else IecState.B if state.car_connected else IecState.A
    charger = ChargerReading(
        connected=state.car_connected,
        charging=charging,
        power_w=state.car_power_w,
        current_a=state.offered_current_a,
        phases=state.car_phases,
        timestamp_s=stamp,
        iec_state=iec,
    )
    return site, charger


def oracle_kwh(trace: Trace, site: ReplaySite, start_s: float, end_s: float) -> float:
    """The PV-only upper bound on the car's energy (see the module docstring), in kWh."""
    levels = sorted(
        {
            current * phases * site.voltage_v
            for phases in (1, 3)
            if phases <= site.car.max_phases
            for current in range(math.ceil(site.min_current_a), math.floor(site.max_current_a) + 1)
        }
    )
    room_wh = site.car.capacity_wh * (site.car.soc_target_pct - site.car.soc_start_pct) / 100.0
    energy_wh = 0.0
    probe = SiteModel(trace, t_s=start_s, battery=None, car=site.car)
    t = start_s + 1.0
    while t <= end_s and energy_wh < room_wh:
        pv_w, house_w = trace.at(t)
        if probe.car_connected(t):
            surplus = pv_w - house_w
            best = 0.0
            for level in levels:
                if level > surplus:
                    break
                best = level
            energy_wh += best / 3600.0
        t += 1.0
    return min(energy_wh, room_wh) / 1000.0


def replay(
    trace: Trace,
    policy: Policy,
    *,
    interval_s: float = 5.0,
    site: ReplaySite | None = None,
    record: Callable[[Sample], None] | None = None,
) -> DayScore:
    """Run ``policy`` over the whole trace at 1-s steps and score it.

    Args:
        trace: the day.
        policy: the controller (called every ``interval_s`` simulated seconds).
        interval_s: control cycle in s (whole seconds).
        site: the simulated site (default: the reference site).
        record: called with a :class:`Sample` every second (for plots).
    """
    site = site or ReplaySite()
    model = SiteModel(trace, t_s=trace.start_s, battery=site.battery, car=site.car, voltage_v=site.voltage_v)
    score = DayScore(trace=trace.name)
    every = max(1, round(interval_s))
    latency = max(0, round(site.latency_s))
    history: list[SiteState] = [model.state()] * (latency + 1)
    last: ChargerCommand | None = None
    end = trace.end_s
    tick = 0
    while model.now < end:
        model.advance(1.0)
        history.append(model.state())
        del history[0]
        tick += 1
        now = model.now
        if tick % every == 0:
            seen = history[0]
            reading, charger = _readings(seen, seen.t_s)
            command = policy.step(now, reading, charger).command
            if command != last:
                model.offer(command.current_a, command.phases)
                score.charger_writes += 1
                if command.current_a > 0 and (last is None or last.current_a == 0):
                    score.starts += 1
                if last is not None and command.phases != last.phases:
                    score.phase_switches += 1
                last = command
        if record is not None:
            s = history[-1]
            record(
                Sample(
                    now,
                    s.pv_power_w,
                    s.house_power_w,
                    s.car_power_w,
                    s.grid_power_w,
                    s.battery_power_w,
                    s.offered_current_a,
                    s.offered_phases,
                )
            )
    e = model.energy
    score.car_kwh = e.car_wh / 1000
    score.pv_to_car_kwh = e.pv_to_car_wh / 1000
    score.battery_to_car_kwh = e.battery_to_car_wh / 1000
    score.grid_to_car_kwh = e.grid_to_car_wh / 1000
    score.pv_kwh = e.pv_wh / 1000
    score.oracle_kwh = oracle_kwh(trace, site, trace.start_s, end)
    return score
