"""The configured plans at work beside the daemon: :class:`PlanService` re-plans at every 15-min slot
start (and when the car connects) and, in the plan's grid slots (or while the price is at or below
``tariff.smart_cost_limit``), raises the daemon's mode to ``fast``
through :meth:`pvcharge.daemon.Daemon.set_mode`; when the slot ends it puts back the mode the user
had. Everything else stays with the control loop (PV surplus charging in ``pv``/``minpv``).

Energy towards a plan is counted from the car's measured power (the charger's reading in each cycle)
since the car connected, and starts again at 0 after a deadline or when the car leaves.

A plan given as ``soc_pct`` plans the energy at the charger from the car's SoC
(:attr:`~pvcharge.readings.ChargerReading.vehicle_soc_pct`, e.g. an OCPP box's ``SoC``)::

    need_kwh = (soc_pct - vehicle_soc_pct) / 100 * capacity_kwh / CHARGE_EFFICIENCY

with :data:`CHARGE_EFFICIENCY` 0.9 (charger to battery: on-board charger and battery losses), as evcc
does (``core/soc/estimator.go``: ``ChargeEfficiency = 0.9``, remaining energy = SoC gap × capacity /
0.9). Without a SoC reading the car is taken as empty, as evcc's estimator does before its first SoC
(its SoC starts at 0): the plan asks for ``soc_pct / 100 × capacity_kwh / 0.9`` less what the car took
since it connected, and says so in its notes. That may buy more grid energy than needed, never less;
the car stops by itself when full.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time as wallclock
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from pvcharge.planning import wanted
from pvcharge.planning.config import PlanConfig
from pvcharge.planning.forecast import PvCorrection
from pvcharge.planning.forecast import surplus as surplus_of
from pvcharge.planning.planner import (
    SLOT_S,
    ChargeLimits,
    Plan,
    energy_to_add_kwh,
    next_deadline,
    plan_charge,
    slot_start,
)
from pvcharge.planning.source import CachedSource

if TYPE_CHECKING:
    from pvcharge.config import Config
    from pvcharge.daemon import Cycle, Daemon

log = structlog.get_logger("pvcharge.planning")

#: a gap between two cycles longer than this is not integrated (a restart, a long outage), in s.
MAX_GAP_S = 120.0
#: share of the energy at the charger that reaches the car's battery (evcc's ``soc.ChargeEfficiency``).
CHARGE_EFFICIENCY = 0.9
NO_SOC_NOTE = "no vehicle SoC: planned from 0 %"


@dataclass(frozen=True)
class Target:
    """The plan in force: its config entry, its next deadline (Unix s) and the energy it asks for at
    the charger (kWh; for a ``soc_pct`` plan, from an empty battery: see :func:`need_kwh`)."""

    plan: PlanConfig
    deadline_s: float
    energy_kwh: float


def need_kwh(target: Target, charged_kwh: float, vehicle_soc_pct: float | None) -> tuple[float, str | None]:
    """The energy still to add at the charger (kWh) and, for a ``soc_pct`` plan without a SoC, the
    note that says it was planned from 0 %.

    An ``energy_kwh`` plan: what is left after ``charged_kwh``. A ``soc_pct`` plan with the car's SoC:
    the SoC gap × ``capacity_kwh`` / :data:`CHARGE_EFFICIENCY` (what was charged shows in the SoC);
    without: ``target.energy_kwh`` (from 0 %) less ``charged_kwh``.
    """
    plan = target.plan
    if plan.soc_pct is not None and plan.capacity_kwh is not None and vehicle_soc_pct is not None:
        return energy_to_add_kwh(plan.soc_pct, vehicle_soc_pct, plan.capacity_kwh) / CHARGE_EFFICIENCY, None
    note = NO_SOC_NOTE if plan.soc_pct is not None else None
    return max(0.0, target.energy_kwh - charged_kwh), note


def local_zone() -> ZoneInfo:
    """The system's time zone: ``$TZ`` if set, else what ``/etc/localtime`` is (a link into the zone
    database, or a zone file), else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(name)
    localtime = Path("/etc/localtime")
    target = str(localtime.resolve())
    if "zoneinfo/" in target:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
    try:
        with localtime.open("rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError):
        return ZoneInfo("UTC")


def next_target(plans: Sequence[PlanConfig], now_s: float) -> Target | None:
    """The plan with the nearest next deadline, or ``None``; a ``soc_pct`` plan's ``energy_kwh`` is
    the energy from an empty battery (``soc_pct / 100 × capacity_kwh / CHARGE_EFFICIENCY``)."""
    best: Target | None = None
    for entry in plans:
        if entry.energy_kwh is not None:
            energy_kwh = entry.energy_kwh
        elif entry.soc_pct is not None and entry.capacity_kwh is not None:
            energy_kwh = entry.soc_pct / 100 * entry.capacity_kwh / CHARGE_EFFICIENCY
        else:
            continue  # (PlanConfig refuses such an entry)
        zone = ZoneInfo(entry.timezone) if entry.timezone else local_zone()
        deadline_s = next_deadline(now_s, entry.deadline_time(), zone, entry.days())
        if best is None or deadline_s < best.deadline_s:
            best = Target(entry, deadline_s, energy_kwh)
    return best


class PlanService:
    """Steers a :class:`~pvcharge.daemon.Daemon` by the configured plans.

    Args:
        daemon: the daemon; the service is one of its ``listeners`` once :meth:`attach` ran.
        plans: the ``plans:`` entries.
        limits: the car's power range (:meth:`ChargeLimits.of` the charger's limits).
        prices, forecast: the cached sources (``None``: none configured: flat price, no PV).
        fallback_price_per_kwh, feed_in_per_kwh, pv_factor: for :func:`plan_charge`.
        base_load_w: taken off the forecast PV power to give the surplus (W).
        smart_cost_limit: charge at full power whenever the slot's price (currency/kWh) is at or
            below it, plan or not (``None``: off); a slot without a price never counts as cheap.

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
    ) -> None:
        self.daemon = daemon
        self.plans = tuple(plans)
        self.limits = limits
        self.prices = prices
        self.forecast = forecast
        self.fallback_price_per_kwh = fallback_price_per_kwh
        self.feed_in_per_kwh = feed_in_per_kwh
        self.pv_factor = pv_factor
        self.smart_cost_limit = smart_cost_limit
        self.base_load_w = base_load_w
        self.correction = PvCorrection()
        self.pv_factor_today = 1.0
        self.plan: Plan | None = None
        self.target: Target | None = None
        self.charged_kwh = 0.0
        self.vehicle_soc_pct: float | None = None
        self.connected = False
        self._last_cycle_s: float | None = None
        self._user_mode: Any = None  # the mode to put back after a grid slot; None: not overriding
        self._wake = asyncio.Event()

    def attach(self) -> None:
        """Listen to the daemon's cycles."""
        self.daemon.listeners.append(self.on_cycle)

    def on_cycle(self, cycle: Cycle) -> None:
        """Count the car's energy; a car that connects asks for a plan at once, one that leaves ends
        the plan's grid charging."""
        reading = cycle.charger
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
        if connected != self.connected:
            self.connected = connected
            if not connected:
                self.charged_kwh = 0.0
                self.vehicle_soc_pct = None
                self._restore("car disconnected")
            self._wake.set()

    async def step(self, now_s: float) -> Plan | None:
        """Re-plan and set the daemon's mode for the slot holding ``now_s``: ``fast`` in a grid slot
        of the plan, or while the price is at or below ``smart_cost_limit``; else the user's mode."""
        target = next_target(self.plans, now_s)
        if self.target is not None and (target is None or target.deadline_s != self.target.deadline_s):
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
        prices = await self.prices.latest(now_s) if self.prices is not None else None
        price_now = prices.get(slot_start(now_s)) if prices is not None else None
        cheap = (
            self.smart_cost_limit is not None and price_now is not None and price_now <= self.smart_cost_limit
        )
        if target is not None:
            pv = await self.forecast.latest(now_s) if self.forecast is not None else None
            surplus = None
            if pv is not None:
                zone = ZoneInfo(target.plan.timezone) if target.plan.timezone else local_zone()
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
        if self.plan is not None and self.plan.power_at(now_s) > 0:
            self._override("plan")
        elif cheap:
            self._override(f"plan: price {price_now:g} at or below smart_cost_limit")
        else:
            self._restore("slot without grid charging")
        return self.plan

    async def run(self, stop: asyncio.Event, clock: Callable[[], float] = wallclock.time) -> None:
        """:meth:`step` at every slot start and when the car connects or leaves, until ``stop``."""
        while not stop.is_set():
            try:
                await self.step(clock())
            except Exception as exc:  # a planning bug must never stop charging
                log.error("plan_failed", error=repr(exc), exc_info=True)
            wait_s = slot_start(clock()) + SLOT_S - clock() + 1.0
            self._wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waiters, timeout=max(1.0, wait_s), return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def close(self) -> None:
        """Close the sources' connections."""
        for cached in (self.prices, self.forecast):
            if cached is not None:
                await cached.source.close()

    def _override(self, why: str) -> None:
        mode = self.daemon.mode
        if self._user_mode is None and mode in ("pv", "minpv"):
            self._user_mode = mode
            self.daemon.set_mode("fast", source=why, persist=False)
        elif self._user_mode is not None and mode != "fast":
            self._user_mode = None  # the user chose another mode meanwhile: theirs stands

    def _restore(self, why: str) -> None:
        if self._user_mode is None:
            return
        mode, self._user_mode = self._user_mode, None
        if self.daemon.mode == "fast":  # (else the user changed it meanwhile: leave theirs)
            self.daemon.set_mode(mode, source=f"plan: {why}", persist=False)


def build_service(config: Config, daemon: Daemon, *, clock: Callable[[], float]) -> PlanService | None:
    """The service for ``config.plans`` and ``tariff.smart_cost_limit`` with the configured sources
    (their last answers cached in ``prices.json`` and ``forecast.json`` beside the state file), or
    ``None`` with neither."""
    if not wanted(config):
        return None
    from pvcharge.planning.sources import forecast_source, tariff_source
    from pvcharge.state import state_path

    cache_dir = state_path(config.state).parent  # beside the state file
    tariff = tariff_source(config.tariff, clock=clock, cache_dir=cache_dir)
    forecast = forecast_source(config.forecast, clock=clock, cache_dir=cache_dir)
    return PlanService(
        daemon,
        config.plans,
        limits=ChargeLimits.of(config.charge_point, config.site.voltage_v),
        prices=tariff,
        forecast=forecast,
        fallback_price_per_kwh=config.tariff.grid_price_per_kwh,
        feed_in_per_kwh=config.tariff.feed_in_per_kwh,
        pv_factor=config.forecast.pv_factor,
        smart_cost_limit=config.tariff.smart_cost_limit,
        base_load_w=config.forecast.base_load_w,
    )
