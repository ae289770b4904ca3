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

import bisect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pvcharge.control import Decision, SiteController
from pvcharge.readings import ChargerCommand, ChargerReading, IecState, SiteReading
from pvcharge.sessions.tally import split_car_power
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


def _count(score: DayScore, last: ChargerCommand | None, command: ChargerCommand) -> None:
    """Score a command that differs from the ``last`` one: a write, a start from pause, a phase switch."""
    score.charger_writes += 1
    if command.current_a > 0 and (last is None or last.current_a == 0):
        score.starts += 1
    if last is not None and command.phases != last.phases:
        score.phase_switches += 1


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
                _count(score, last, command)
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


# -- several cars on one site ------------------------------------------------------------------------


@dataclass
class SiteScore:
    """The scores of one day replayed with several cars.

    ``oracle_kwh``: each second the highest sum of the plugged-in cars' levels (whole amps within their
    limits, 1 or 3 phases, 0 allowed) not above the surplus ``pv − house``, capped at the cars' room.
    ``fuse_violations`` / ``circuit_violations``: seconds in which the commands in force, with the other
    loads per phase of the reading the controller last saw, exceed the fuse, or in which a circuit's
    commands add up to more than its limit on a phase (both must be 0).  ``overload_s``: seconds in which
    a phase really imported more than the fuse (the cars' drawn currents plus the other loads now: a
    house load that jumps between two readings shows here, not in the violations).
    """

    trace: str
    #: per loadpoint, its car's day: energies by source, starts, phase switches, writes (its
    #: ``oracle_kwh`` stays 0: the oracle is the site's)
    cars: dict[str, DayScore]
    oracle_kwh: float = 0.0
    fuse_violations: int = 0
    circuit_violations: int = 0
    overload_s: int = 0

    @property
    def pv_to_car_kwh(self) -> float:
        return sum(c.pv_to_car_kwh for c in self.cars.values())

    @property
    def car_kwh(self) -> float:
        return sum(c.car_kwh for c in self.cars.values())

    @property
    def capture(self) -> float:
        """The cars' PV energy over the oracle (1.0 when the oracle is 0)."""
        return self.pv_to_car_kwh / self.oracle_kwh if self.oracle_kwh > 0 else 1.0


def _phase_currents_a(other_w: float, cars: list[SiteState], voltage_v: float) -> tuple[float, float, float]:
    """Per-phase grid currents in A: the other loads (house, battery, PV) spread evenly over the three
    phases, each car's current on its phases (1 phase: L1)."""
    each = other_w / 3 / voltage_v
    currents = [each, each, each]
    for car in cars:
        for p in range(car.car_phases if car.car_phases in (1, 3) else 0):
            currents[p] += car.car_current_a
    return (currents[0], currents[1], currents[2])


def _best_sums_w(levels: list[list[float]]) -> list[float]:
    """Every sum of one level per car (0 included), sorted."""
    sums = {0.0}
    for car_levels in levels:
        sums = {s + level for s in sums for level in [0.0, *car_levels]}
    return sorted(sums)


def replay_cars(
    trace: Trace,
    policy: SiteController,
    cars: Mapping[str, CarParams],
    *,
    interval_s: float = 5.0,
    site: ReplaySite | None = None,
) -> SiteScore:
    """Run a :class:`~pvcharge.control.site.SiteController` over the whole trace at 1-s steps with one
    car per loadpoint (``cars``: per loadpoint name, its car and plug-in window) and score it.

    The site (battery, voltage, latency, the cars' current range for the oracle) is ``site``; its
    ``car`` is not used.  Each car is simulated by its own :class:`SiteModel` (no battery), whose power
    the site's model sees as load; the meter reading carries per-phase currents (other loads spread
    evenly, 1-phase cars on L1).
    """
    site = site or ReplaySite()
    v = site.voltage_v
    names = list(cars)
    engines = {n: SiteModel(trace, t_s=trace.start_s, battery=None, car=cars[n], voltage_v=v) for n in names}
    nobody = CarParams(plug_in_s=0.0, plug_out_s=0.0)
    model = SiteModel(
        trace,
        t_s=trace.start_s,
        battery=site.battery,
        car=nobody,
        voltage_v=v,
        extra_load_w=lambda: sum(e.state().car_power_w for e in engines.values()),
    )
    score = SiteScore(trace=trace.name, cars={n: DayScore(trace.name) for n in names})
    limits = policy.site
    every = max(1, round(interval_s))
    latency = max(0, round(site.latency_s))
    history: list[tuple[SiteState, dict[str, SiteState]]] = [
        (model.state(), {n: e.state() for n, e in engines.items()})
    ] * (latency + 1)
    last: dict[str, ChargerCommand | None] = dict.fromkeys(names)
    seen_other_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
    levels = {
        n: sorted(
            {
                current * phases * v
                for phases in (1, 3)
                if phases <= cars[n].max_phases
                for current in range(math.ceil(site.min_current_a), math.floor(site.max_current_a) + 1)
            }
        )
        for n in names
    }
    sums_by_plugged: dict[tuple[str, ...], list[float]] = {}
    oracle_wh = 0.0
    while model.now < trace.end_s:
        for e in engines.values():
            e.advance(1.0)
        model.advance(1.0)
        now = model.now
        state = model.state()
        car_states = {n: e.state() for n, e in engines.items()}
        history.append((state, car_states))
        del history[0]
        if round(now - trace.start_s) % every == 0:
            seen, seen_cars = history[0]
            cars_w = sum(c.car_power_w for c in seen_cars.values())
            reading = SiteReading(
                grid_power_w=seen.grid_power_w,
                pv_power_w=seen.pv_power_w,
                battery_power_w=seen.battery_power_w,
                battery_soc_pct=seen.battery_soc_pct,
                timestamp_s=seen.t_s,
                grid_currents_a=_phase_currents_a(seen.grid_power_w - cars_w, list(seen_cars.values()), v),
            )
            seen_other_a = ((seen.grid_power_w - cars_w) / 3 / v,) * 3
            chargers = {n: _readings(c, seen.t_s)[1] for n, c in seen_cars.items()}
            decisions = policy.step(now, reading, chargers)
            for n in names:
                command = decisions[n].command
                previous = last[n]
                if command != previous:
                    engines[n].offer(command.current_a, command.phases)
                    _count(score.cars[n], previous, command)
                    last[n] = command
        # limits, each second: the commands in force, and what the phases really carry
        if limits.max_grid_current_a is not None:
            use = _command_currents_a(last.values())
            if any(o + u > limits.max_grid_current_a + 1e-6 for o, u in zip(seen_other_a, use, strict=True)):
                score.fuse_violations += 1
            cars_w = sum(c.car_power_w for c in car_states.values())
            real = _phase_currents_a(state.grid_power_w - cars_w, list(car_states.values()), v)
            if max(real) > limits.max_grid_current_a + 1e-6:
                score.overload_s += 1
        for circuit in limits.circuits:
            use = _command_currents_a(last[n] for n in circuit.loadpoints if n in last)
            if max(use) > circuit.max_current_a + 1e-6:
                score.circuit_violations += 1
        # the energy of each car, by source, and the oracle
        total_w = sum(c.car_power_w for c in car_states.values())
        pv_w, house_w = trace.at(now)
        split = split_car_power(
            total_w, pv_w=pv_w, house_w=house_w, battery_w=state.battery_power_w, grid_w=state.grid_power_w
        )
        for n, c in car_states.items():
            if c.car_power_w > 0:
                part, s = c.car_power_w / total_w / 3600.0, score.cars[n]
                s.car_kwh += split.car * part / 1000
                s.pv_to_car_kwh += split.pv * part / 1000
                s.battery_to_car_kwh += split.battery * part / 1000
                s.grid_to_car_kwh += split.grid * part / 1000
        plugged = tuple(n for n in names if car_states[n].car_connected and car_states[n].car_soc_pct < 100.0)
        if plugged:
            sums = sums_by_plugged.get(plugged)
            if sums is None:
                sums = sums_by_plugged[plugged] = _best_sums_w([levels[n] for n in plugged])
            i = bisect.bisect_right(sums, pv_w - house_w) - 1
            oracle_wh += sums[i] / 3600.0 if i >= 0 else 0.0
    room_wh = sum(c.capacity_wh * (c.soc_target_pct - c.soc_start_pct) / 100.0 for c in cars.values())
    score.oracle_kwh = min(oracle_wh, room_wh) / 1000.0
    return score


def _command_currents_a(commands: Iterable[ChargerCommand | None]) -> tuple[float, float, float]:
    """The commanded current per phase in A of several chargers (3 phases: each, 1 phase: L1)."""
    use = [0.0, 0.0, 0.0]
    for command in commands:
        if command is not None and command.current_a > 0:
            for p in range(3 if command.phases == 3 else 1):
                use[p] += command.current_a
    return (use[0], use[1], use[2])
