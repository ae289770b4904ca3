"""``pvcharge demo --plan "20 kWh by 07:00"``: the real daemon and its plan service across a night.

The daemon, its drivers, the plan service, the planner and the tariff and forecast sources are the
production code; the meter, the charger, aWATTar (:class:`~pvcharge.sim.dayahead.AwattarEmulator`) and
Open-Meteo (:class:`~pvcharge.sim.solarforecast.OpenMeteoEmulator`) are emulated on loopback, all on one
simulated clock (:class:`~pvcharge.sim.demo.SimClock`).

**The night.** A trace holds one measured day, so the night is made of it (:func:`night_trace`): its
evening from :data:`NIGHT_START_H` local, then its own small hours and morning again as the next day's.
Honest as far as it goes: measured house load and PV (none at night, the morning's first light before
the deadline), not a measured night. One change: the house load gets a deterministic dither of
:data:`DITHER_W` (sample ``i`` gets ``(i % 7 - 3) * DITHER_W / 3``): the trace repeats its night load to
the watt for minutes, which a real meter never does, and the daemon rightly takes a meter whose values
have not moved for ``control.frozen_s`` for a dead one.

**The prices** are the emulated day-ahead curve of a winter day (cheap small hours, expensive evening;
:func:`~pvcharge.sim.dayahead.winter_day_eur_mwh`) put in the trace's local time, with
:data:`CHARGES_PER_KWH` and :data:`VAT_PCT` on top as a supplier's formula adds them. **The forecast**:
Open-Meteo's emulated clear sky over the trace's site, sunrise to sunset in local time.

**The car** is plugged in all night at 20 % of 60 kWh; the plan is set at the start, as a user would
set it over the API. The daemon stays in ``pv`` mode; the plan service raises it to ``fast`` in the
slots it planned from the grid. :class:`PlanRun` records every plan made and every cycle, and
:func:`plan_line` sums it up in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, TextIO
from zoneinfo import ZoneInfo

from pvcharge.config import ApiConfig, Config, TariffConfig, parse_config
from pvcharge.planning.config import ArrayConfig, ForecastConfig, PlanConfig
from pvcharge.planning.planner import ChargeLimits, Plan, next_deadline, slot_start
from pvcharge.planning.service import PlanService, close_services
from pvcharge.planning.sources import forecast_source, tariff_source
from pvcharge.sim.dayahead import AwattarEmulator, DayAheadMarket, winter_day_eur_mwh
from pvcharge.sim.demo import DemoResult, SimClock, run_demo
from pvcharge.sim.site import CarParams, SiteModel
from pvcharge.sim.solarforecast import OpenMeteoEmulator, Sky
from pvcharge.sim.trace import Trace

if TYPE_CHECKING:
    from pvcharge.daemon import Cycle, Daemon

NIGHT_START_H = 18  #: the night demo starts at this local hour of the trace's day
DITHER_W = 3.0  #: the largest dither added to the night's house load, in W (see the module docstring)
CHARGES_PER_KWH = 0.12  #: added to the market price (EUR/kWh), as a supplier's grid fees and levies
VAT_PCT = 19.0
#: the car: plugged in all night (the plug-in window is a time of day: 00:00–24:00), 20 % of 60 kWh
NIGHT_CAR = CarParams(soc_start_pct=20.0, plug_in_s=0.0, plug_out_s=86400.0)
#: the charge point without ``--config``: 3-phase 6–16 A (11 kW), a plan's usual night charge
PLAN_BASE_CONFIG = """
meter: {type: huawei, host: 127.0.0.1}
charger: {type: warp, url: 'http://127.0.0.1', phases: 3, min_current_a: 6, max_current_a: 16}
"""
#: the trace's site for the forecast (the bundled day: NREL's SERF, Golden, Colorado), 5 kWp facing south
SITE_ARRAY = ArrayConfig(latitude=39.74, longitude=-105.17, kwp=5.0, tilt_deg=30.0, azimuth_deg=0.0)


def night_trace(trace: Trace) -> Trace:
    """The night of ``trace``'s day: its samples from :data:`NIGHT_START_H` local, then its samples
    before noon again, one day later (see the module docstring)."""
    evening = [i for i, t in enumerate(trace.t_s) if trace.local_seconds_of_day(t) >= NIGHT_START_H * 3600]
    morning = [i for i, t in enumerate(trace.t_s) if trace.local_seconds_of_day(t) < 12 * 3600]
    times = [trace.t_s[i] for i in evening] + [trace.t_s[i] + 86400 for i in morning]
    order = evening + morning
    return Trace(
        name=f"{trace.name} (its evening, then its own morning as the next day's)",
        t_s=tuple(times),
        pv_power_w=tuple(trace.pv_power_w[i] for i in order),
        house_power_w=tuple(
            max(0.0, trace.house_power_w[i] + (n % 7 - 3) * DITHER_W / 3) for n, i in enumerate(order)
        ),
        utc_offset_s=trace.utc_offset_s,
        step_s=trace.step_s,
    )


def zone_name(trace: Trace) -> str:
    """An IANA name for the trace's fixed offset: UTC−7 is ``Etc/GMT+7`` (POSIX's inverted sign)."""
    hours, rest = divmod(-trace.utc_offset_s, 3600)
    if rest:
        raise ValueError(f"{trace.name}: a UTC offset of whole hours is needed, got {trace.utc_offset_s} s")
    return "UTC" if hours == 0 else f"Etc/GMT{hours:+d}"


class _LocalSky(Sky):
    """:class:`Sky` in the trace's local time (its hours are UTC hours)."""

    def __init__(self, utc_offset_s: int) -> None:
        super().__init__(sunrise_h=6.5, sunset_h=18.5, peak_w_m2=800.0, air_temp_c=8.0)
        self.offset_s = utc_offset_s

    def gti_w_m2(self, t_s: float) -> float:
        return super().gti_w_m2(t_s + self.offset_s)


@dataclass
class PlanRun:
    """What the plan service did in the night demo.

    Attributes:
        entry: the plan; ``deadline_s``: its deadline (Unix s).
        plans: every plan made, in order.
        cycles: per control cycle ``(t_s, car_wh, grid_by_plan, car_power_w)``: the car's energy so far
            (the site model's tally, Wh), whether the plan service held the mode at ``fast`` then, and
            the car's measured power (W).
        prices: the grid price per slot start as the plan service had them (currency/kWh).
    """

    entry: PlanConfig
    deadline_s: float
    currency: str = "EUR"
    plans: list[Plan] = field(default_factory=list)
    cycles: list[tuple[float, float, bool, float]] = field(default_factory=list)
    prices: dict[int, float] = field(default_factory=dict)

    @property
    def planned_slots(self) -> set[int]:
        """Slot starts any plan put grid charging in."""
        return {slot_start(s.start_s) for plan in self.plans for s in plan.grid_slots}

    @property
    def grid_slots(self) -> list[int]:
        """Slot starts in which the plan service had the mode at ``fast`` and the car drew power."""
        return sorted({slot_start(t) for t, _, by_plan, power_w in self.cycles if by_plan and power_w > 0})

    def charged_kwh(self, until_s: float) -> float:
        """The car's energy from the start up to ``until_s``, in kWh."""
        before = [wh for t, wh, _, _ in self.cycles if t <= until_s]
        return (before[-1] - self.cycles[0][1]) / 1000 if before and self.cycles else 0.0

    def reached_s(self) -> float | None:
        """When the car's energy reached the target (Unix s), ``None`` if it did not."""
        assert self.entry.energy_kwh is not None
        for t, wh, _, _ in self.cycles:
            if (wh - self.cycles[0][1]) / 1000 >= self.entry.energy_kwh:
                return t
        return None

    def night_prices(self) -> dict[int, float]:
        """The prices of the slots from the start to the deadline."""
        start = slot_start(self.cycles[0][0]) if self.cycles else 0
        return {t: p for t, p in self.prices.items() if start <= t < self.deadline_s}


def plan_line(run: PlanRun, tz: timezone) -> str:
    """One line: ``plan 20 kWh by 07:00: met (20.4 kWh by 07:00, 20 kWh reached at 05:45); from the
    grid: 02:00–04:00 at 18.1–19.4 ct/kWh (cheapest of the night: 17.9)``."""

    def hhmm(t_s: float) -> str:
        return datetime.fromtimestamp(t_s, tz).strftime("%H:%M")

    def price(p: float) -> str:
        return f"{100 * p:.1f}" if run.currency == "EUR" else f"{p:.3f}"

    unit = "ct/kWh" if run.currency == "EUR" else f"{run.currency}/kWh"
    assert run.entry.energy_kwh is not None
    charged = run.charged_kwh(run.deadline_s)
    reached = run.reached_s()
    head = f"plan {run.entry.energy_kwh:g} kWh by {run.entry.deadline}: "
    if reached is not None and reached <= run.deadline_s:
        target = f"{run.entry.energy_kwh:g} kWh at {hhmm(reached)}"
        head += f"met ({charged:.1f} kWh by {run.entry.deadline}, {target})"
    else:
        head += f"NOT met ({charged:.1f} kWh by {run.entry.deadline})"
    runs: list[list[int]] = []
    for start in run.grid_slots:
        if runs and runs[-1][-1] + 900 == start:
            runs[-1].append(start)
        else:
            runs.append([start])
    if not runs:
        return head + "; no grid charging"
    parts = []
    for slots in runs:
        prices = [run.prices[s] for s in slots if s in run.prices]
        span = f"{hhmm(slots[0])}–{hhmm(slots[-1] + 900)}"
        if prices:
            low, high = min(prices), max(prices)
            span += f" at {price(low)}" + ("" if price(low) == price(high) else f"–{price(high)}")
        parts.append(span)
    night = run.night_prices()
    cheapest = f" (cheapest of the night: {price(min(night.values()))})" if night else ""
    return f"{head}; from the grid: {', '.join(parts)} {unit}{cheapest}"


@contextlib.asynccontextmanager
async def _plan_service(
    daemon: Daemon, clock: SimClock, site: SiteModel, run: PlanRun, trace: Trace
) -> AsyncIterator[PlanService]:
    """The day-ahead and forecast emulators and the plan service with the plan set, beside the daemon."""
    offset = trace.utc_offset_s
    market = DayAheadMarket(lambda t_s: winter_day_eur_mwh(t_s + offset))
    async with (
        AwattarEmulator(market, clock=clock.now) as awattar,
        OpenMeteoEmulator(_LocalSky(offset), clock=clock.now) as open_meteo,
    ):
        tariff = TariffConfig(
            source="awattar",
            url=awattar.url,
            charges_per_kwh=CHARGES_PER_KWH,
            vat_pct=VAT_PCT,
            grid_price_per_kwh=0.40,
            currency=run.currency,
        )
        forecast = ForecastConfig(source="open-meteo", url=open_meteo.url, arrays=(SITE_ARRAY,))
        config = daemon.config
        service = PlanService(
            daemon,
            (),
            limits=ChargeLimits.of(config.charge_point, config.site.voltage_v),
            prices=tariff_source(tariff, clock=clock.now),
            forecast=forecast_source(forecast, clock=clock.now),
            fallback_price_per_kwh=tariff.grid_price_per_kwh,
            pv_factor=forecast.pv_factor,
            base_load_w=forecast.base_load_w,
            currency=run.currency,
        )
        service.attach()
        service.set_plan(run.entry, source="demo")

        def record(cycle: Cycle) -> None:
            if service.plan is not None and (not run.plans or run.plans[-1] is not service.plan):
                run.plans.append(service.plan)
                if service.prices is not None and service.prices.values is not None:
                    run.prices.update(service.prices.values)  # (each fetch holds the next 24 h only)
            power_w = cycle.charger.power_w if cycle.charger is not None else 0.0
            run.cycles.append((cycle.now, site.energy.car_wh, service.grid_charging, power_w))

        daemon.listeners.append(record)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop, clock.now, clock.sleep_until))
        try:
            yield service
        finally:
            stop.set()
            await task
            if service.prices is not None and service.prices.values is not None:
                run.prices.update(service.prices.values)
            await close_services([service])


async def run_plan_demo(
    trace: Trace,
    text: str,
    *,
    seconds: float,
    base_config: Config | None = None,
    out: TextIO | None = None,
    meter: str = "huawei",
    charger: str = "warp",
    api: ApiConfig | None = None,
    start_h: int = NIGHT_START_H,
) -> tuple[DemoResult, PlanRun, Trace]:
    """Run the night demo for the plan ``text`` (an energy plan, e.g. ``20 kWh by 07:00``) in about
    ``seconds`` of real time, from ``start_h`` local (the evening; an hour before noon: the next
    morning's). Returns the demo's result, the plan service's record and the night's trace. Raises
    SettingError for a plan that is not an energy plan in the text form."""
    from pvcharge.planning import runtime
    from pvcharge.settings import SettingError

    entry, _ = runtime.parse_command(text)
    if entry.energy_kwh is None:
        raise SettingError("plan", "the demo's car reports no SoC: give the energy, e.g. 20 kWh by 07:00")
    entry = dataclasses.replace(entry, timezone=zone_name(trace), weekdays="mon,tue,wed,thu,fri,sat,sun")
    night = night_trace(trace)
    tz = timezone(timedelta(seconds=trace.utc_offset_s))
    day = datetime.fromtimestamp(trace.start_s, tz)
    start_s = day.replace(hour=start_h, minute=0, second=0).timestamp() + (86400 if start_h < 12 else 0)
    start_s = max(start_s, night.start_s)
    deadline_s = next_deadline(start_s, entry.deadline_time(), ZoneInfo(zone_name(trace)))
    end_s = min(deadline_s + 900, night.end_s)
    base = base_config or parse_config(PLAN_BASE_CONFIG, "<demo>")
    run = PlanRun(entry, deadline_s, base.tariff.currency)
    result = await run_demo(
        night,
        speed=max(1.0, (end_s - start_s) / seconds),
        start_s=start_s,
        end_s=end_s,
        base_config=base,
        out=out,
        meter=meter,
        charger=charger,
        api=api,
        car=NIGHT_CAR,
        beside=lambda daemon, clock, site, _stop: _plan_service(daemon, clock, site, run, trace),
    )
    return result, run, night
