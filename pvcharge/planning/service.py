"""The configured plans at work beside the daemon: :class:`PlanService` re-plans at every 15-min slot
start (and when the car connects) and, in the plan's grid slots (or while the price is at or below
``tariff.smart_cost_limit``), raises the daemon's mode to ``fast``
through :meth:`pvcharge.daemon.Daemon.set_mode`; when the slot ends it puts back the mode the user
had. Everything else stays with the control loop (PV surplus charging in ``pv``/``minpv``).

One service steers one loadpoint (its ``loadpoint``; ``plans[i].loadpoint`` in the config, unset: the
first): it counts that loadpoint's charger reading and switches that loadpoint's mode only.
:func:`build_services` gives ``pvcharge run`` one per loadpoint, sharing the price and forecast sources.

Beside the config's ``plans:`` one plan per loadpoint may be set at run time
(:mod:`pvcharge.planning.runtime`, over the API, MQTT or ``pvcharge plan set``):
:meth:`PlanService.set_plan` / :meth:`PlanService.clear_plan`. It is kept in the daemon's state file
(key ``loadpoints.<name>.plan``, the first loadpoint's also ``plan``: :func:`pvcharge.state.save_plan`)
so it survives a restart; a one-off is dropped once its deadline has passed.
:meth:`PlanService.describe` gives the plans in force and the last plan made, as the API and MQTT
publish them.

Energy towards a plan is counted from the car's measured power (its charger's reading in each cycle)
since the car connected, and starts again at 0 after a deadline or when the car leaves.

What the plan in force asks for (its deadline, the energy to add, for a ``soc_pct`` plan from the car's
SoC) is :mod:`pvcharge.planning.target`; here is the service that counts the car's energy and steers
the daemon by it.
"""

from __future__ import annotations

import asyncio
import time as wallclock
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from pvcharge.planning import runtime
from pvcharge.planning.config import PlanConfig
from pvcharge.planning.forecast import PvCorrection
from pvcharge.planning.forecast import surplus as surplus_of
from pvcharge.planning.planner import (
    SLOT_S,
    ChargeLimits,
    Plan,
    plan_charge,
    slot_start,
)
from pvcharge.planning.source import CachedSource
from pvcharge.planning.target import Target, local_zone, need_kwh, next_target, zone_of
from pvcharge.settings import SettingError
from pvcharge.state import load_plan, save_plan

if TYPE_CHECKING:
    from pvcharge.config import Config
    from pvcharge.daemon import Cycle, Daemon

log = structlog.get_logger("pvcharge.planning")

#: a gap between two cycles longer than this is not integrated (a restart, a long outage), in s.
MAX_GAP_S = 120.0


class PlanService:
    """Steers a :class:`~pvcharge.daemon.Daemon` by the configured plans.

    Args:
        daemon: the daemon; the service is one of its ``listeners`` once :meth:`attach` ran.
        plans: the ``plans:`` entries.
        limits: the car's power range (:meth:`ChargeLimits.of` the charger's limits).
        prices, forecast: the cached sources (``None``: none configured: flat price, no PV).
        fallback_price_per_kwh, feed_in_per_kwh, pv_factor: for :func:`plan_charge`.
        base_load_w: taken off the forecast PV power to give the surplus (W).
        currency: the prices' currency, for :meth:`describe`'s summary.
        smart_cost_limit: charge at full power whenever the slot's price (currency/kWh) is at or
            below it, plan or not (``None``: off); a slot without a price never counts as cheap.
        loadpoint: the name of the loadpoint the service steers (its charger's reading, its mode);
            ``None``: the first (the only one of a ``charger:`` config).
        takes_runtime: whether the service takes a plan set at run time (API, MQTT, ``pvcharge plan``)
            for its loadpoint, kept in the state file (``loadpoints.<name>.plan``; the first
            loadpoint's also ``plan``); ``pvcharge run``'s all do.

    Raises:
        KeyError: ``loadpoint`` names no loadpoint of the daemon (the config loader refuses such a
            ``plans[i].loadpoint`` first).

    Attributes:
        plan: the last plan made, ``None`` before the first or without a plan in force.
        target: the plan entry in force and its deadline.
        charged_kwh: energy the car took since it connected (or since the last deadline).
        vehicle_soc_pct: the car's SoC from the last reading that had one while it is connected (%),
            else ``None``.
    """

    def __init__(
        self,
        daemon: Daemon,
        plans: Sequence[PlanConfig],
        *,
        limits: ChargeLimits,
        prices: CachedSource | None,
        forecast: CachedSource | None,
        fallback_price_per_kwh: float,
        feed_in_per_kwh: float = 0.0,
        pv_factor: float = 0.8,
        smart_cost_limit: float | None = None,
        base_load_w: float = 0.0,
        currency: str = "EUR",
        loadpoint: str | None = None,
        takes_runtime: bool = True,
    ) -> None:
        self.daemon = daemon
        self.loadpoint = daemon.loadpoint(loadpoint).name  # (KeyError: no such loadpoint)
        self.takes_runtime = takes_runtime
        self._first = self.loadpoint == daemon.loadpoint(None).name  # (its plan also the top-level one)
        self.plans = tuple(plans)
        self.limits = limits
        self.prices = prices
        self.forecast = forecast
        self.fallback_price_per_kwh = fallback_price_per_kwh
        self.feed_in_per_kwh = feed_in_per_kwh
        self.pv_factor = pv_factor
        self.smart_cost_limit = smart_cost_limit
        self.base_load_w = base_load_w
        self.currency = currency
        self.correction = PvCorrection()
        self.pv_factor_today = 1.0
        self.plan: Plan | None = None
        self.target: Target | None = None
        self.charged_kwh = 0.0
        self.vehicle_soc_pct: float | None = None
        self.connected = False
        self._last_cycle_s: float | None = None
        self._user_mode: Any = None  # the mode to put back after a grid slot; None: not overriding
        self._plan_fast = False  # fast because of a grid slot of the plan (not a cheap price)
        self._wake = asyncio.Event()
        self._replanned: list[asyncio.Event] = []  # set after the next step (request_replan)
        self.plan_at_s: float | None = None  #: when :attr:`plan` was made (Unix s)
        self.runtime: runtime.RuntimePlan | None = self._load_runtime() if takes_runtime else None

    def attach(self) -> None:
        """Listen to the daemon's cycles."""
        self.daemon.listeners.append(self.on_cycle)

    def on_cycle(self, cycle: Cycle) -> None:
        """Count the car's energy; a car that connects asks for a plan at once, one that leaves ends
        the plan's grid charging."""
        reading = cycle.charger
        for part in cycle.loadpoints:  # (a cycle without parts: the first loadpoint's is ``charger``)
            if part.name == self.loadpoint:
                reading = part.charger
        connected = bool(reading is not None and reading.connected)
        gap_s = cycle.now - self._last_cycle_s if self._last_cycle_s is not None else 0.0
        if 0 < gap_s <= MAX_GAP_S:
            if reading is not None and connected:
                self.charged_kwh += max(0.0, reading.power_w) * gap_s / 3.6e6
            if cycle.site is not None:
                self.correction.measured(cycle.now, cycle.site.pv_power_w, gap_s)
        self._last_cycle_s = cycle.now
        if reading is not None and connected and reading.vehicle_soc_pct is not None:
            self.vehicle_soc_pct = reading.vehicle_soc_pct
        if (
            self._plan_fast
            and self.target is not None
            and need_kwh(self.target, self.charged_kwh, self.vehicle_soc_pct)[0] <= 0
        ):
            self._restore("target reached")  # (not on to the end of the slot: the plan met, no more grid)
        if connected != self.connected:
            self.connected = connected
            if not connected:
                self.charged_kwh = 0.0
                self.vehicle_soc_pct = None
                self._restore("car disconnected")
            self._wake.set()

    # --- the plan set at run time ------------------------------------------------------------------

    def _load_runtime(self) -> runtime.RuntimePlan | None:
        path = self.daemon.state_file
        saved = load_plan(path, self.loadpoint, first=self._first) if path is not None else None
        if saved is None:
            return None
        try:
            plan = runtime.from_saved(saved)
        except (SettingError, ValueError) as exc:
            log.warning(
                "plan_unreadable",
                path=str(path),
                loadpoint=self.loadpoint,
                error=str(exc),
                action="ignored; set it again",
            )
            return None
        if plan.once and plan.next_deadline_s(self.daemon.clock(), zone_of) is None:
            log.info("plan_expired", loadpoint=self.loadpoint, deadline_s=plan.deadline_s, action="dropped")
            self._save(None)
            return None
        log.info(
            "plan_restored",
            loadpoint=self.loadpoint,
            **runtime.entry_json(plan.entry),
            deadline_s=plan.deadline_s,
        )
        return plan

    def _save(self, plan: runtime.RuntimePlan | None) -> None:
        if self.daemon.state_file is not None:
            saved = plan.as_json() if plan is not None else None
            save_plan(self.daemon.state_file, saved, self.loadpoint, first=self._first)

    def set_plan(self, entry: PlanConfig, *, source: str, repeating: bool = False) -> runtime.RuntimePlan:
        """Set the run-time plan (replacing the last one), keep it in the state file and re-plan soon.
        ``repeating``: on ``entry.weekdays`` until cleared; else a one-off for the next deadline."""
        plan = runtime.make(
            entry, now_s=self.daemon.clock(), zone=local_zone(), source=source, repeating=repeating
        )
        self.runtime = plan
        self._save(plan)
        log.info(
            "plan_set",
            loadpoint=self.loadpoint,
            source=source,
            **runtime.entry_json(entry),
            deadline_s=plan.deadline_s,
        )
        self._wake.set()
        return plan

    def clear_plan(self, *, source: str) -> bool:
        """Clear the run-time plan (the config's stay); False if there was none."""
        if self.runtime is None:
            return False
        self.runtime = None
        self._save(None)
        log.info("plan_cleared", loadpoint=self.loadpoint, source=source)
        self._wake.set()
        return True

    @property
    def grid_charging(self) -> bool:
        """The service holds the daemon's mode at ``fast`` now (a grid slot, or a cheap price)."""
        return self._user_mode is not None

    def request_replan(self) -> asyncio.Event:
        """Ask :meth:`run` for a step now; the event is set once it is done."""
        done = asyncio.Event()
        self._replanned.append(done)
        self._wake.set()
        return done

    def describe(self) -> dict[str, Any]:
        """The plans in force and the last plan made, for the API and MQTT
        (:func:`pvcharge.planning.view.plan_state`)."""
        from pvcharge.planning.view import plan_state

        return plan_state(self)

    # --- steering --------------------------------------------------------------------------------

    async def step(self, now_s: float) -> Plan | None:
        """Re-plan and set the daemon's mode for the slot holding ``now_s``: ``fast`` in a grid slot
        of the plan, or while the price is at or below ``smart_cost_limit``; else the user's mode."""
        if self.runtime is not None and self.runtime.next_deadline_s(now_s, zone_of) is None:
            log.info(
                "plan_expired", loadpoint=self.loadpoint, deadline_s=self.runtime.deadline_s, action="dropped"
            )
            self.runtime = None
            self._save(None)
        target = next_target(self.plans, now_s, self.runtime)
        if self.target is not None and now_s >= self.target.deadline_s:
            self.charged_kwh = 0.0  # the deadline passed: the next plan counts from here
        self.target = target
        self.plan = None
        if self.forecast is not None and self.forecast.values is not None:
            current = self.forecast.values.get(slot_start(now_s))
            if current is not None:
                self.correction.expected(slot_start(now_s), current)
        if not self.connected:
            self._restore("no car")
            return None
        if target is None and self.smart_cost_limit is None:
            self._restore("no plan")
            return None  # (nothing to fetch prices for)
        prices = await self.prices.latest(now_s) if self.prices is not None else None
        price_now = prices.get(slot_start(now_s)) if prices is not None else None
        cheap = (
            self.smart_cost_limit is not None and price_now is not None and price_now <= self.smart_cost_limit
        )
        if target is not None:
            self.plan_at_s = now_s
            pv = await self.forecast.latest(now_s) if self.forecast is not None else None
            surplus = None
            if pv is not None:
                zone = zone_of(target.plan)
                midnight = datetime.fromtimestamp(now_s, zone).replace(
                    hour=0, minute=0, second=0, microsecond=0
                )
                self.pv_factor_today = self.correction.factor(now_s, midnight.timestamp())
                surplus = surplus_of(pv, self.base_load_w, self.pv_factor_today)
            need, soc_note = need_kwh(target, self.charged_kwh, self.vehicle_soc_pct)
            self.plan = plan_charge(
                need_kwh=need,
                deadline_s=target.deadline_s,
                now_s=now_s,
                limits=self.limits,
                surplus_w=surplus,
                prices_per_kwh=prices,
                fallback_price_per_kwh=self.fallback_price_per_kwh,
                feed_in_per_kwh=self.feed_in_per_kwh,
                pv_factor=self.pv_factor,
            )
            if soc_note is not None:
                self.plan = replace(self.plan, notes=(*self.plan.notes, soc_note))
            log.info(
                "plan_made",
                need_kwh=round(self.plan.need_kwh, 2),
                deadline_s=target.deadline_s,
                met=self.plan.met,
                grid_kwh=round(self.plan.grid_kwh, 2),
                pv_kwh=round(self.plan.pv_kwh, 2),
                cost=round(self.plan.cost, 2),
                grid_slots=len(self.plan.grid_slots),
                notes=list(self.plan.notes),
                pv_correction=round(self.pv_factor_today, 2),
                vehicle_soc_pct=self.vehicle_soc_pct,
            )
        if self.plan is not None and self.plan.power_at(now_s) > 0 and self.plan.need_kwh > 0:
            self._override("plan")
            self._plan_fast = self._user_mode is not None
        elif cheap:
            self._override(f"plan: price {price_now:g} at or below smart_cost_limit")
            self._plan_fast = False
        else:
            self._restore("slot without grid charging")
        return self.plan

    async def run(
        self,
        stop: asyncio.Event,
        clock: Callable[[], float] = wallclock.time,
        sleep_until: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """:meth:`step` at every slot start and when the car connects or leaves, until ``stop``;
        ``sleep_until(t_s)`` returns once ``clock`` reads ``t_s`` (default: an ``asyncio.sleep``; the
        demo's simulated clock has its own)."""

        async def until(t_s: float) -> None:
            await asyncio.sleep(t_s - clock())

        while not stop.is_set():
            try:
                await self.step(clock())
            except Exception as exc:  # a planning bug must never stop charging
                log.error("plan_failed", error=repr(exc), exc_info=True)
            waiting, self._replanned = self._replanned, []
            for done in waiting:
                done.set()
            next_s = max(clock() + 1.0, slot_start(clock()) + SLOT_S + 1.0)
            self._wake.clear()
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future((sleep_until or until)(next_s)),
            ]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    @property
    def mode(self) -> Any:
        """The mode of the service's loadpoint now."""
        return self.daemon.loadpoint(self.loadpoint).controller.mode

    def _override(self, why: str) -> None:
        mode = self.mode
        if self._user_mode is None and mode in ("pv", "minpv"):
            self._user_mode = mode
            self.daemon.set_mode("fast", source=why, persist=False, loadpoint=self.loadpoint)
        elif self._user_mode is not None and mode != "fast":
            self._user_mode = None  # the user chose another mode meanwhile: theirs stands

    def _restore(self, why: str) -> None:
        self._plan_fast = False
        if self._user_mode is None:
            return
        mode, self._user_mode = self._user_mode, None
        if self.mode == "fast":  # (else the user changed it meanwhile: leave theirs)
            self.daemon.set_mode(mode, source=f"plan: {why}", persist=False, loadpoint=self.loadpoint)


def build_services(config: Config, daemon: Daemon, *, clock: Callable[[], float]) -> list[PlanService]:
    """One service per loadpoint, the first loadpoint's first, each taking its loadpoint's ``plans:``
    (``plans[i].loadpoint``; unset: the first) and the plan set at run time for it.

    All are built up front, not when a plan is first set: a service counts the energy its car took
    since it connected from every cycle, which a plan set later needs, and a plan kept in the state
    file is back at once after a restart. ``tariff.smart_cost_limit`` applies to the first loadpoint
    and to each with ``plans:`` (as before loadpoints without plans took a run-time plan). The
    configured sources are built once and shared (their last answers cached in ``prices.json`` and
    ``forecast.json`` beside the state file; nothing is fetched while there is neither a plan nor a
    cost limit and no car), so a service more polls nothing more. Close them with
    :func:`close_services`."""
    from pvcharge.planning.sources import forecast_source, tariff_source
    from pvcharge.state import state_path

    cache_dir = state_path(config.state).parent  # beside the state file
    tariff = tariff_source(config.tariff, clock=clock, cache_dir=cache_dir)
    forecast = forecast_source(config.forecast, clock=clock, cache_dir=cache_dir)
    first = daemon.loadpoints[0]
    services: list[PlanService] = []
    for lp in daemon.loadpoints:
        plans = [p for p in config.plans if (p.loadpoint or first.name) == lp.name]
        services.append(
            PlanService(
                daemon,
                plans,
                limits=ChargeLimits.of(lp.config.charge_point, config.site.voltage_v),
                prices=tariff,
                forecast=forecast,
                fallback_price_per_kwh=config.tariff.grid_price_per_kwh,
                feed_in_per_kwh=config.tariff.feed_in_per_kwh,
                pv_factor=config.forecast.pv_factor,
                smart_cost_limit=config.tariff.smart_cost_limit if lp is first or plans else None,
                base_load_w=config.forecast.base_load_w,
                currency=config.tariff.currency,
                loadpoint=lp.name,
            )
        )
    return services


def build_service(config: Config, daemon: Daemon, *, clock: Callable[[], float]) -> PlanService:
    """The first loadpoint's service of :func:`build_services` (the only one of a ``charger:`` config)."""
    return build_services(config, daemon, clock=clock)[0]


async def close_services(services: Sequence[PlanService]) -> None:
    """Close the sources of ``services``, each once (they share them)."""
    closed: set[int] = set()
    for service in services:
        for cached in (service.prices, service.forecast):
            if cached is not None and id(cached) not in closed:
                closed.add(id(cached))
                await cached.source.close()
