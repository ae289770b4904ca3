"""Score plans through the 5-s control loop (issue 17, item 5): :func:`pvcharge.sim.replay.replay` at
1-s steps with the daemon's :class:`~pvcharge.control.Controller`, its mode steered as the daemon's is.

Where :mod:`pvcharge.planning.score` works per 15-min slot, this replays what the daemon does: the
controller's cloud filter, start and stop delays, the car's ramp and minimum current, the 1-min trace as
the meter sees it. Three policies, each steering the controller's mode:

- **planner**: the daemon's own :class:`~pvcharge.planning.service.PlanService` (re-planning at every
  slot start and when the car connects, ``fast`` in its grid slots, back to ``pv`` once the target is
  reached), given a PV forecast made from the day's own PV with the error of
  :func:`pvcharge.planning.score.noisy` and the default ``forecast.base_load_w`` (the house load is not
  forecast: a user's config has one figure for it);
- **hindsight**: the planner's grid slots for the true slot surplus (PV − house), planned once at
  arrival with no margin, then run through the loop as they are;
- **fast at the last moment**: ``pv`` until the latest start from which full power makes it (from the
  energy counted so far), then ``fast``.

The site is the reference site without a home battery (as in the slot-level score: a battery would
move energy between the policies' hours). Costs: the car's grid energy per second (PV serves the house
first, the car next; the rest of the car's power is grid import) × the slot's price.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pvcharge.control import Controller, Decision
from pvcharge.control.config import ChargePoint, ControlConfig, Mode
from pvcharge.daemon import Cycle
from pvcharge.planning.config import ForecastConfig, PlanConfig
from pvcharge.planning.forecast import surplus as surplus_of
from pvcharge.planning.planner import SLOT_S, ChargeLimits, plan_charge, slot_start
from pvcharge.planning.score import PlanScore, noisy, slot_surplus
from pvcharge.planning.service import PlanService
from pvcharge.planning.source import CachedSource, SlotValues
from pvcharge.readings import ChargerReading, SiteReading
from pvcharge.sim.replay import ReplaySite, Sample, replay
from pvcharge.sim.site import CarParams
from pvcharge.sim.trace import Trace

#: the planner's house load: ``forecast.base_load_w``'s default, W
BASE_LOAD_W = ForecastConfig().base_load_w


class _Fixed:
    """A source whose answer is fixed (a forecast or prices known to the replay)."""

    name = "replay"

    def __init__(self, values: SlotValues) -> None:
        self.values = values

    async def fetch(self, now_s: float) -> SlotValues:
        return self.values

    async def close(self) -> None:
        pass


class _Steered:
    """What :class:`PlanService` needs of a daemon: one loadpoint (``main``, its mode on the controller),
    listeners, a clock."""

    state_file = None
    name = "main"

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.listeners: list[Callable[[Cycle], None]] = []
        self.now = 0.0
        self.loadpoints = [self]

    def clock(self) -> float:
        return self.now

    def loadpoint(self, name: str | None = None) -> _Steered:
        if name not in (None, self.name):
            raise KeyError(name)
        return self

    @property
    def mode(self) -> Mode:
        return self.controller.mode

    def set_mode(
        self, mode: Mode, *, source: str, persist: bool = True, loadpoint: str | None = None
    ) -> None:
        self.controller.set_mode(mode)


class ServicePolicy:
    """The controller steered by a :class:`PlanService` (a :class:`pvcharge.sim.replay.Policy`): the
    service steps at every slot start and in the cycle after the car connected, as in the daemon."""

    def __init__(self, controller: Controller, make: Callable[[_Steered], PlanService]) -> None:
        self.daemon = _Steered(controller)
        self.service = make(self.daemon)
        self.loop = asyncio.new_event_loop()
        self._slot: int | None = None
        self._due = False

    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision:
        self.daemon.now = now
        if self._due or slot_start(now) != self._slot:
            self._slot, self._due = slot_start(now), False
            self.loop.run_until_complete(self.service.step(now))
        decision = self.daemon.controller.step(now, site, charger)
        connected = self.service.connected
        self.service.on_cycle(Cycle(now, site, charger, decision, False))
        self._due = self.service.connected != connected
        return decision

    def close(self) -> None:
        self.loop.close()


class SchedulePolicy:
    """The controller in ``fast`` while ``fast(now_s, charged_kwh)`` holds, else ``pv``; the car's energy
    counted from the charger's readings as the plan service counts it."""

    def __init__(self, controller: Controller, fast: Callable[[float, float], bool]) -> None:
        self.controller = controller
        self.fast = fast
        self.charged_kwh = 0.0
        self._last: float | None = None

    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision:
        if charger is not None and self._last is not None:
            self.charged_kwh += max(0.0, charger.power_w) * (now - self._last) / 3.6e6
        self._last = now
        mode: Mode = "fast" if self.fast(now, self.charged_kwh) else "pv"
        if mode != self.controller.mode:
            self.controller.set_mode(mode)
        return self.controller.step(now, site, charger)


@dataclass
class _Meter:
    """The car's energy and its grid share per second, priced by slot."""

    deadline_s: float
    prices: Mapping[int, float]
    need_kwh: float
    charged_wh: float = 0.0
    grid_wh: float = 0.0
    cost: float = 0.0
    met_at_s: float | None = None

    def __call__(self, s: Sample) -> None:
        if s.t_s > self.deadline_s:
            return
        pv_left = max(0.0, s.pv_power_w - s.house_power_w)
        from_grid = max(0.0, s.car_power_w - pv_left)
        self.charged_wh += s.car_power_w / 3600
        self.grid_wh += from_grid / 3600
        self.cost += from_grid / 3.6e6 * self.prices.get(slot_start(s.t_s), 0.0)
        if self.met_at_s is None and self.charged_wh >= self.need_kwh * 1000:
            self.met_at_s = s.t_s

    def score(self, policy: str) -> PlanScore:
        charged = self.charged_wh / 1000
        return PlanScore(
            policy, charged >= self.need_kwh - 1e-3, charged, self.grid_wh / 1000, self.cost, self.met_at_s
        )


def score_day_loop(
    trace: Trace,
    *,
    plan: PlanConfig,
    arrive_s: float,
    deadline_s: float,
    charge_point: ChargePoint,
    prices: Mapping[int, float],
    seed: int,
    pv_factor: float = 0.8,
    control: ControlConfig | None = None,
    with_baselines: bool = True,
) -> list[PlanScore]:
    """The planner (and, with ``with_baselines``, hindsight and last-moment) through the control loop
    on one day; ``plan`` (an ``energy_kwh`` plan whose deadline falls on ``deadline_s``) is the one the
    service follows, the car plugged in from ``arrive_s`` to ``deadline_s``."""
    assert plan.energy_kwh is not None
    need_kwh = plan.energy_kwh
    control = control or ControlConfig()
    limits = ChargeLimits.of(charge_point, 230.0)
    offset = trace.utc_offset_s
    car = CarParams(plug_in_s=(arrive_s + offset) % 86400, plug_out_s=(deadline_s + offset - 1) % 86400 + 1)
    site = ReplaySite(
        battery=None,
        car=car,
        min_current_a=charge_point.min_current_a,
        max_current_a=charge_point.max_current_a,
    )
    flat = max(prices.values())
    pv = {  # the day's mean PV per slot, from its 1-min samples
        t: sum(trace.at(t + k)[0] for k in range(0, SLOT_S, 60)) / (SLOT_S // 60)
        for t in range(slot_start(trace.start_s), int(trace.end_s), SLOT_S)
    }
    forecast = noisy(pv, seed=seed)

    def run(name: str, policy: ServicePolicy | SchedulePolicy) -> PlanScore:
        meter = _Meter(deadline_s, prices, need_kwh)
        replay(trace, policy, interval_s=control.interval_s, site=site, record=meter)
        if isinstance(policy, ServicePolicy):
            policy.close()
        return meter.score(name)

    def service(daemon: _Steered) -> PlanService:
        made = PlanService(
            daemon,  # type: ignore[arg-type]
            (plan,),
            limits=limits,
            prices=CachedSource(_Fixed(dict(prices)), refresh_s=86400, max_age_s=86400 * 3),
            forecast=CachedSource(_Fixed(forecast), refresh_s=86400, max_age_s=86400 * 3),
            fallback_price_per_kwh=flat,
            pv_factor=pv_factor,
            base_load_w=BASE_LOAD_W,
        )
        made.attach()
        return made

    scores = [run("planner (noisy forecast)", ServicePolicy(Controller(control, charge_point), service))]
    if not with_baselines:
        return scores
    actual = slot_surplus(trace, arrive_s, deadline_s)
    hindsight = plan_charge(
        need_kwh=need_kwh,
        deadline_s=deadline_s,
        now_s=arrive_s,
        limits=limits,
        surplus_w=surplus_of(actual, 0.0),
        prices_per_kwh=prices,
        fallback_price_per_kwh=flat,
        pv_factor=1.0,
    )
    grid = {slot_start(s.start_s) for s in hindsight.grid_slots}
    scores.append(
        run(
            "hindsight (true surplus)",
            SchedulePolicy(
                Controller(control, charge_point), lambda t, done: slot_start(t) in grid and done < need_kwh
            ),
        )
    )

    def last_moment(now_s: float, charged_kwh: float) -> bool:
        remaining = need_kwh - charged_kwh
        return (
            arrive_s <= now_s < deadline_s
            and remaining > 0
            and (now_s >= deadline_s - remaining / (limits.max_power_w / 1000) * 3600)
        )

    scores.append(
        run("fast at the last moment", SchedulePolicy(Controller(control, charge_point), last_moment))
    )
    return scores
