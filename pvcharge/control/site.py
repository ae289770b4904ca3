"""Several loadpoints on one site: one surplus, one fuse, optional sub-circuits.  Pure, like the rest of
the control core: the caller passes ``now`` and the readings.

A :class:`SiteController` holds one :class:`~pvcharge.control.Controller` per loadpoint, each with its
own cloud filter, hysteresis, minimum on/off times and phase logic, and decides every cycle in two
passes.

**Sharing the surplus** (signs as everywhere: ``grid_power_w > 0`` imports, ``battery_power_w > 0``
discharges, car powers >= 0).  The meter's grid power already contains every car's draw.  Each
controller computes its car's surplus as today, *its own car power − grid − battery term*, plus an
``extra_w`` the site adds, worked out in priority order (higher ``priority`` first):

- ``+ (car_w − reserve_w)`` of every loadpoint of **lower** priority: what those cars draw may be
  taken from them (they are turned down, then paused), except their reserve: a ``fast`` loadpoint's
  full power and a ``minpv`` loadpoint's minimum power (with a car plugged in), which they take first
  whatever their priority; a reserve not yet drawn lowers the surplus of the higher ones;
- ``− (expected_w − car_w)`` of every loadpoint of **higher** priority, decided earlier in the same
  cycle: the planned change of its draw, already spent.  ``expected_w`` is the power of its new
  command, counted only while the command is new (this cycle, or changed less than
  :data:`SETTLE_S` ago: the car has not followed yet and the meter does not show it); a command that
  stands longer is in the meter already (and a car that draws less than it is offered frees the rest);
  a pause counts as ``− car_w`` at once.

Loadpoints of **equal** priority share what their group gets: the group's surplus (their own draws +
the meter's surplus + the terms above) is split by water-filling between the cars that want it (car
plugged in, mode ``pv``/``minpv``/``fast``), each at least its reserve and at most its maximum power
(at most 1 A above its draw when it stays below what it is offered: a car that limits itself leaves
the rest to the others).  With a single loadpoint every term is 0 and the controller decides exactly
as the bare :class:`~pvcharge.control.Controller`.

**Limits** (a pure capping pass over the proposals, in every mode).  The fuse
(``site.max_grid_current_a``): the other loads per phase are the meter's phase currents minus every
car's own current on that phase (without meter phase currents, all import beyond the cars on every
phase); the headroom per phase is the fuse minus the other loads, at its minimum over the last
:data:`~pvcharge.control.fuse.FUSE_RELEASE_S` (down at once, up after it stayed higher).  Every
circuit: its ``max_current_a`` per phase for the sum of its loadpoints' commands.  A command of
``current_a`` on 3 phases uses every phase, on 1 phase L1 (the project's assumption: each charger's L1
is the grid's L1).  Commands are capped in priority order (higher first), so lower priorities are cut
first, down to their minimum, then paused; equal priorities share the headroom left (the smallest
want first, each at most an equal part of what is left).  The sum of the commands per phase never
exceeds the fuse headroom or a circuit limit, even when several loadpoints rise in the same cycle.
With one loadpoint the controller's own fuse applies (the same rule) and only circuits are capped here.

**Stale data** pauses every loadpoint (each controller's safe state, as today).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pvcharge.control.config import ChargePoint, Circuit, ControlConfig, Mode, SiteConfig
from pvcharge.control.controller import CAR_SETTLE_MAX_S, Controller, Decision
from pvcharge.control.fuse import FuseWindow
from pvcharge.control.vehicle import Vehicle
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading, SiteReading

#: a new command counts as planned but not yet drawn this long, in s (the charger follows within it)
SETTLE_S = CAR_SETTLE_MAX_S

Phases = tuple[float, float, float]


@dataclass(frozen=True)
class Loadpoint:
    """One charge point with its car, as the control core sees it (a ``loadpoints:`` item without its
    charger driver).

    Attributes:
        name: unique, ``[a-z0-9_-]+``.
        charge_point: the installation's current range and phases at this charger.
        mode: the loadpoint's mode; ``None``: ``control.mode``.
        priority: higher is served first; equal priorities share.
        vehicle: the car's profile.
    """

    name: str
    charge_point: ChargePoint = field(default_factory=ChargePoint)
    mode: Mode | None = None
    priority: int = 0
    vehicle: Vehicle = field(default_factory=Vehicle)


@dataclass
class _Last:
    command: ChargerCommand | None = None
    changed_at: float = -math.inf


def share_w(total_w: float, floors_w: Sequence[float], caps_w: Sequence[float]) -> list[float]:
    """Water-filling: split ``total_w`` so that each part is ``clamp(level, floor, cap)`` for one common
    level and the parts add up to ``total_w`` (above the caps' sum each part is its cap; below the
    floors' sum each part is its floor minus an equal part of the deficit).  Powers in W."""
    deficit_w = total_w - sum(floors_w)
    if deficit_w < 0:
        return [f + deficit_w / len(floors_w) for f in floors_w]
    lo, hi = min([*floors_w, 0.0]), max([*caps_w, 0.0])
    for _ in range(60):
        level = (lo + hi) / 2
        if sum(min(max(level, f), max(c, f)) for f, c in zip(floors_w, caps_w, strict=True)) > total_w:
            hi = level
        else:
            lo = level
    return [min(max(lo, f), max(c, f)) for f, c in zip(floors_w, caps_w, strict=True)]


class SiteController:
    """Decides every loadpoint of a site each cycle (see the module docstring).

    Args:
        control: the ``control:`` settings, shared by all loadpoints (each takes its own ``mode``).
        site: the ``site:`` settings: voltage, fuse, circuits.
        loadpoints: at least one; names unique.
        capabilities: per loadpoint name, what its charger can do (default: anything).

    Raises:
        ValueError: no loadpoint, a duplicate name, or a circuit naming an unknown loadpoint.
    """

    def __init__(
        self,
        control: ControlConfig,
        site: SiteConfig,
        loadpoints: Sequence[Loadpoint],
        capabilities: Mapping[str, ChargerCapabilities] | None = None,
    ) -> None:
        self.controllers: dict[str, Controller] = {}
        self._last: dict[str, _Last] = {}
        self._fuse_windows = [FuseWindow() for _ in range(3)]  # headroom on L1, L2, L3
        self.reconfigure(control, site, loadpoints, capabilities)

    def reconfigure(
        self,
        control: ControlConfig,
        site: SiteConfig,
        loadpoints: Sequence[Loadpoint],
        capabilities: Mapping[str, ChargerCapabilities] | None = None,
    ) -> None:
        """Take new settings (a reloaded config): a loadpoint that keeps its name keeps its session and
        filters (:meth:`Controller.reconfigure`; its mode becomes the new one), a new one starts fresh
        with ``capabilities``, a removed one is dropped.

        Raises:
            ValueError: as the constructor; the old settings then stay in force.
        """
        names = [lp.name for lp in loadpoints]
        if not names:
            raise ValueError("no loadpoint")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate loadpoint names: {names}")
        for circuit in site.circuits:
            unknown = [n for n in circuit.loadpoints if n not in names]
            if unknown:
                raise ValueError(f"circuit {circuit.name!r} names unknown loadpoints {unknown}")
        self.site = site
        self.loadpoints = tuple(loadpoints)
        #: the fuse is capped here when several cars share it; a single controller keeps its own
        self._site_fuse = len(loadpoints) > 1 and site.max_grid_current_a is not None
        own_site = dataclasses.replace(site, max_grid_current_a=None) if self._site_fuse else site
        caps = capabilities or {}
        controllers = {}
        for lp in loadpoints:
            own_control = dataclasses.replace(control, mode=lp.mode or control.mode)
            ctl = self.controllers.get(lp.name)
            if ctl is None:
                ctl = Controller(own_control, lp.charge_point, own_site, caps.get(lp.name), lp.vehicle)
            else:
                ctl.reconfigure(own_control, lp.charge_point, own_site, lp.vehicle)
            controllers[lp.name] = ctl
        self.controllers = controllers
        # priority groups, highest first; config order inside a group
        by_priority = sorted({lp.priority for lp in loadpoints}, reverse=True)
        self._groups = [[lp.name for lp in loadpoints if lp.priority == p] for p in by_priority]
        self._last = {lp.name: self._last.get(lp.name, _Last()) for lp in loadpoints}

    def _on(self, name: str) -> bool:
        """The loadpoint's last command offers current."""
        command = self._last[name].command
        return command is not None and command.current_a > 0

    def set_mode(self, name: str, mode: Mode) -> None:
        """Switch one loadpoint's mode. Raises KeyError: no such loadpoint."""
        self.controllers[name].set_mode(mode)

    # -- the surplus pass ----------------------------------------------------------------------
    def _full_w(self, ctl: Controller) -> float:
        return ctl.power_w(ctl.max_current_a, 3 if ctl.auto_phases else ctl.phases)

    def _reserve_w(self, ctl: Controller, charger: ChargerReading | None) -> float:
        """What a loadpoint takes before any surplus is shared: fast its full power, minpv its minimum,
        with a car plugged in (W)."""
        if charger is not None and not charger.connected:
            return 0.0
        if ctl.mode == "fast":
            return self._full_w(ctl)
        if ctl.mode == "minpv":
            return ctl.power_w(ctl.lowest_a, ctl.phases)
        return 0.0

    def _cap_w(self, name: str, ctl: Controller, charger: ChargerReading | None, now: float) -> float:
        """The most a loadpoint takes of its group's share as the others see it (W): 0 without a car or
        in mode off; 1 A above its draw for a car that stays below what it is offered; else its full
        power."""
        if ctl.mode == "off" or (charger is not None and not charger.connected):
            return 0.0
        last = self._last[name]
        if (
            charger is not None
            and charger.charging
            and last.command is not None
            and now - last.changed_at > SETTLE_S
        ):
            phases = charger.phases if charger.phases in (1, 3) else last.command.phases
            step_w = ctl.power_w(1.0, phases)
            if charger.power_w < ctl.power_w(last.command.current_a, phases) - step_w:
                return charger.power_w + step_w
        return self._full_w(ctl)

    def _planned_w(
        self, name: str, command: ChargerCommand, charger: ChargerReading | None, now: float
    ) -> float:
        """The change of a loadpoint's draw its new command brings that the meter does not show yet (W)."""
        car_w = charger.power_w if charger is not None else 0.0
        if command.current_a == 0:
            return -car_w
        last = self._last[name]
        if command != last.command or now - last.changed_at < SETTLE_S:
            phases = (
                charger.phases
                if charger is not None and charger.charging and charger.phases in (1, 3)
                else command.phases
            )
            phases = min(phases, command.phases)
            return self.controllers[name].power_w(command.current_a, phases) - car_w
        return 0.0

    def _propose(
        self, now: float, site: SiteReading | None, chargers: Mapping[str, ChargerReading | None]
    ) -> dict[str, Decision]:
        ctls, car_w = (
            self.controllers,
            {n: (c.power_w if (c := chargers.get(n)) else 0.0) for n in self.controllers},
        )
        free_w = {n: car_w[n] - self._reserve_w(ctls[n], chargers.get(n)) for n in self.controllers}
        lower_w = sum(free_w.values())
        spent_w = 0.0
        proposals: dict[str, Decision] = {}
        for group in self._groups:
            lower_w -= sum(free_w[n] for n in group)
            outside_w = lower_w - spent_w
            extra = {n: outside_w for n in group}
            if len(group) > 1 and site is not None:
                meter_w = ctls[group[0]].available_w(site, None)  # the surplus without any car
                floors = [self._reserve_w(ctls[n], chargers.get(n)) for n in group]
                caps = [self._cap_w(n, ctls[n], chargers.get(n), now) for n in group]
                total = sum(car_w[n] for n in group) + meter_w + outside_w
                # each sees itself at its full power, the others as they are: a paused car claims its
                # part once it starts, a car that limits itself claims only what it draws
                on = [self._on(n) for n in group]
                for i, n in enumerate(group):
                    own = self._full_w(ctls[n]) if caps[i] > 0 else 0.0
                    view = [own if j == i else cap if on[j] else floors[j] for j, cap in enumerate(caps)]
                    extra[n] = share_w(total, floors, view)[i] - car_w[n] - meter_w
            for n in group:
                proposals[n] = ctls[n].propose(now, site, chargers.get(n), extra_w=extra[n])
                spent_w += self._planned_w(n, proposals[n].command, chargers.get(n), now)
        return proposals

    # -- the limits pass -----------------------------------------------------------------------
    def _fuse_headroom(
        self, now: float, site: SiteReading | None, chargers: Mapping[str, ChargerReading | None]
    ) -> Phases | None:
        """The fuse minus the other loads per phase, at its minimum over FUSE_RELEASE_S (A); ``None``
        when the site does not cap the fuse or the meter data is stale."""
        limit = self.site.max_grid_current_a
        any_ctl = next(iter(self.controllers.values()))
        if (
            not self._site_fuse
            or limit is None
            or site is None
            or now - site.timestamp_s > any_ctl.control.max_age_s
        ):
            for w in self._fuse_windows:
                w.clear()
            return None
        if self._fuse_windows[0].is_new(site):
            v = self.site.voltage_v
            if site.grid_currents_a is None:
                cars_w = sum(c.power_w for c in chargers.values() if c is not None)
                others = (max(0.0, site.grid_power_w - cars_w) / v,) * 3
            else:
                others = site.grid_currents_a
                for name, ctl in self.controllers.items():
                    car = ctl.car_currents_a(chargers.get(name))
                    others = (others[0] - car[0], others[1] - car[1], others[2] - car[2])
            for w, other in zip(self._fuse_windows, others, strict=True):
                w.add(site, limit - other)
        return (
            self._fuse_windows[0].headroom_a,
            self._fuse_windows[1].headroom_a,
            self._fuse_windows[2].headroom_a,
        )

    def step(
        self, now: float, site: SiteReading | None, chargers: Mapping[str, ChargerReading | None]
    ) -> dict[str, Decision]:
        """Decide every loadpoint for this cycle.

        Args:
            now: current time in s, on the clock that stamps the readings.
            site: the latest meter reading (``None`` if the meter never answered).
            chargers: per loadpoint name, its latest charger reading (missing or ``None``: no answer).

        Returns:
            per loadpoint name (in config order), the decision to send.
        """
        proposals = self._propose(now, site, chargers)
        fuse = self._fuse_headroom(now, site, chargers)
        # (limit per phase, loadpoints it covers, what to say) of every constraint
        limits: list[tuple[Phases, frozenset[str], str]] = []
        if fuse is not None:
            limits.append(
                (
                    fuse,
                    frozenset(self.controllers),
                    f"fuse limit: {self.site.max_grid_current_a:g} A per phase",
                )
            )
        for circuit in self.site.circuits:
            limits.append(
                (
                    (circuit.max_current_a,) * 3,
                    frozenset(circuit.loadpoints),
                    f"circuit {circuit.name}: {circuit.max_current_a:g} A per phase",
                )
            )
        used = [[0.0, 0.0, 0.0] for _ in limits]
        final: dict[str, Decision] = {}
        for group in self._groups:
            waiting = sorted(group, key=lambda n: proposals[n].command.current_a)
            while waiting:
                name = waiting.pop(0)
                decision = proposals[name]
                on = _phases_used(decision.command)
                cap, why = math.inf, ""
                for (limit, members, what), use in zip(limits, used, strict=True):
                    if name not in members:
                        continue
                    for p in on:
                        sharing = 1 + sum(
                            1 for n in waiting if n in members and p in _phases_used(proposals[n].command)
                        )
                        left = (limit[p] - use[p]) / sharing
                        if left < cap:
                            cap, why = left, f"{what} leaves this loadpoint {max(left, 0):.1f} A"
                final[name] = self.controllers[name].commit(now, decision, cap, why)
                for (_, members, _), use in zip(limits, used, strict=True):
                    if name in members:
                        for p in _phases_used(final[name].command):
                            use[p] += final[name].command.current_a
        for name, decision in final.items():
            last = self._last[name]
            if decision.command != last.command:
                last.command, last.changed_at = decision.command, now
        return {lp.name: final[lp.name] for lp in self.loadpoints}


def _phases_used(command: ChargerCommand) -> tuple[int, ...]:
    """The grid phases a command draws on: all three, or L1 for one phase (0 A: none)."""
    if command.current_a <= 0:
        return ()
    return (0, 1, 2) if command.phases == 3 else (0,)


__all__ = ["SETTLE_S", "Circuit", "Loadpoint", "SiteController", "share_w"]
