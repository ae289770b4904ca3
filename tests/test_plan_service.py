"""The plan service (pvcharge.planning.service) steering a daemon with in-process fake devices."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sitestub import FakeClock, run_daemon

from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.errors import DeviceUnavailable
from pvcharge.planning.config import PlanConfig
from pvcharge.planning.forecast import Array, ForecastSolarForecast
from pvcharge.planning.planner import SLOT_S, ChargeLimits, slot_start
from pvcharge.planning.service import PlanService, build_service
from pvcharge.planning.source import CachedSource, JsonGetter, SlotValues
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading, SiteReading
from pvcharge.sim.demo import SimClock
from pvcharge.sim.faults import Fault
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.solarforecast import ForecastSolarEmulator, Sky
from pvcharge.sim.trace import bundled_trace
from pvcharge.sim.warp import WarpEmulator

CONFIG_TEXT = """
meter: {type: huawei, host: 127.0.0.1}
charger: {type: warp, url: 'http://127.0.0.1', phases: 3}
control: {cloud_filter: 'off', interval_s: 5, max_age_s: 30}
plans:
  - {deadline: "07:00", energy_kwh: 11.04, timezone: UTC}
"""
LIMITS = ChargeLimits(4140, 11040)


def utc(day: int, hh: int, mm: int = 0) -> float:
    return datetime(2026, 12, day, hh, mm, tzinfo=UTC).timestamp()


class Meter:
    name = "meter fake"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.pv_w = 0.0

    async def read(self) -> SiteReading:
        return SiteReading(500.0, self.pv_w, 0.0, 50.0, self.clock())

    async def close(self) -> None:
        pass


class Charger:
    name = "charger fake"
    capabilities = ChargerCapabilities()

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.connected = True
        self.power_w = 0.0

    async def read(self) -> ChargerReading:
        charging = self.power_w > 0
        return ChargerReading(
            self.connected,
            charging,
            self.power_w,
            16.0 if charging else 0.0,
            3 if charging else 0,
            self.clock(),
        )

    async def apply(self, command: ChargerCommand) -> None:
        pass

    def forget(self) -> None:
        pass

    async def close(self) -> None:
        pass


class Prices:
    """A tariff source: 0.30/kWh, 0.12 from 02:00 to 03:00 UTC on the 8th."""

    name = "tariff test"

    async def fetch(self, now_s: float) -> SlotValues:
        prices = {t: 0.30 for t in range(slot_start(now_s), slot_start(now_s) + 2 * 86400, SLOT_S)}
        for t in range(int(utc(8, 2)), int(utc(8, 3)), SLOT_S):
            prices[t] = 0.12
        return prices


def service_of(daemon: Daemon, plans: tuple[PlanConfig, ...] = (), **options: Any) -> PlanService:
    """A plan service on :class:`Prices`, without a forecast, listening to ``daemon``."""
    service = PlanService(
        daemon,
        plans,
        limits=LIMITS,
        prices=CachedSource(Prices(), refresh_s=3600, max_age_s=86400),
        forecast=None,
        fallback_price_per_kwh=0.30,
        **options,
    )
    service.attach()
    return service


def make(tmp_path: Path, start_s: float) -> tuple[Daemon, PlanService, FakeClock, Charger]:
    clock = FakeClock(start_s)
    charger = Charger(clock)
    config = parse_config(CONFIG_TEXT, environ={})
    daemon = Daemon(config, Meter(clock), charger, clock=clock, state_file=tmp_path / "state.json")  # type: ignore[arg-type]
    service = service_of(daemon, config.plans)
    return daemon, service, clock, charger


async def test_fast_in_the_cheapest_hour_then_back_to_pv(tmp_path: Path) -> None:
    daemon, service, clock, _ = make(tmp_path, utc(7, 22))
    await daemon.cycle()  # sees the car
    plan = await service.step(clock())
    assert plan is not None and plan.met and daemon.mode == "pv"
    assert [datetime.fromtimestamp(s.start_s, UTC).hour for s in plan.grid_slots] == [2] * 4
    clock.t_s = utc(8, 2)
    await service.step(clock())
    assert daemon.mode == "fast"
    assert not (tmp_path / "state.json").exists()  # a passing switch: a restart comes back in pv
    clock.t_s = utc(8, 3)
    await service.step(clock())
    assert daemon.mode == "pv"


async def test_energy_charged_counts_towards_the_plan(tmp_path: Path) -> None:
    """An hour at 11.04 kW from PV before the cheap hour: the plan is met, no grid slot remains."""
    daemon, service, clock, charger = make(tmp_path, utc(7, 12))
    charger.power_w = 11040.0
    for _ in range(721):
        await daemon.cycle()
        clock.advance(5)
    assert service.charged_kwh == pytest.approx(11.04, rel=0.01)
    plan = await service.step(clock())
    assert plan is not None and plan.grid_slots == () and plan.need_kwh < 0.1


async def test_a_plan_set_or_cleared_before_its_deadline_keeps_the_energy_charged(tmp_path: Path) -> None:
    """Half an hour at 11.04 kW under the config's 07:00 plan, then a run-time plan for 06:00: the
    energy since the car connected counts towards it (only a passed deadline starts again at 0)."""
    daemon, service, clock, charger = make(tmp_path, utc(7, 12))
    await daemon.cycle()
    await service.step(clock())
    assert service.target is not None and service.target.deadline_s == utc(8, 7)
    charger.power_w = 11040.0
    for _ in range(361):
        clock.advance(5)
        await daemon.cycle()
    assert service.charged_kwh == pytest.approx(5.52, rel=0.01)
    service.set_plan(PlanConfig(deadline="06:00", energy_kwh=11.04, timezone="UTC"), source="api")
    plan = await service.step(clock())
    assert service.target is not None and service.target.deadline_s == utc(8, 6)
    assert plan is not None and plan.need_kwh == pytest.approx(5.52, rel=0.01)
    service.clear_plan(source="api")
    plan = await service.step(clock())
    assert plan is not None and plan.need_kwh == pytest.approx(5.52, rel=0.01)


async def test_a_user_choice_during_a_grid_slot_stands(tmp_path: Path) -> None:
    daemon, service, clock, _ = make(tmp_path, utc(8, 2))
    await daemon.cycle()
    await service.step(clock())
    assert daemon.mode == "fast"
    daemon.set_mode("off", source="api")
    clock.t_s = utc(8, 3)
    await service.step(clock())
    assert daemon.mode == "off"


async def test_car_leaving_ends_the_grid_slot(tmp_path: Path) -> None:
    daemon, service, clock, charger = make(tmp_path, utc(8, 2))
    await daemon.cycle()
    await service.step(clock())
    assert daemon.mode == "fast"
    charger.connected = False
    clock.advance(5)
    await daemon.cycle()
    assert daemon.mode == "pv" and service.charged_kwh == 0
    assert await service.step(clock()) is None


async def test_without_plans_the_service_is_idle(tmp_path: Path) -> None:
    """Always built (a plan may be set at run time), it fetches nothing and leaves the mode alone."""
    config = parse_config(CONFIG_TEXT.split("plans:")[0], environ={})
    clock = FakeClock(utc(8, 2))
    daemon = Daemon(config, Meter(clock), Charger(clock), clock=clock)  # type: ignore[arg-type]
    idle = build_service(config, daemon, clock=clock)
    idle.attach()
    await daemon.cycle()
    assert idle.connected and await idle.step(clock()) is None
    assert daemon.mode == "pv" and idle.prices is not None and idle.prices.values is None  # nothing fetched
    with_plans = parse_config(CONFIG_TEXT, environ={})
    service = build_service(with_plans, daemon, clock=clock)
    assert service is not None and service.limits.max_power_w == pytest.approx(11040)
    assert service.forecast is None and service.prices is not None


async def test_forecast_solar_key_never_in_messages() -> None:
    clock = FakeClock(utc(7, 9))
    async with ForecastSolarEmulator(Sky(), clock=clock) as emulator:
        emulator.faults.set(Fault.HTTP_503)
        source = ForecastSolarForecast(
            JsonGetter("forecast forecast.solar", clock=clock, retries=0, timeout_s=2),
            [Array(48, 11, 30, 0, 5)],
            api_key="s3cr3t-key",
            url=emulator.url,
        )
        with pytest.raises(DeviceUnavailable) as caught:
            await source.fetch(clock())
        await source.close()
    assert "s3cr3t-key" not in str(caught.value) and "/***/estimate/48/11/30/0/5" in str(caught.value)
    assert emulator.received[0].path.startswith("/s3cr3t-key/estimate/")


def evening_site() -> SiteModel:
    """The bundled day at 17:00 on the real clock's pace (the car plugged in, little PV)."""
    trace = bundled_trace()
    site = SiteModel(trace, t_s=trace.start_s + 17 * 3600)
    site.advance(120)
    site.clock = SimClock(site.now, 1.0).now
    return site


def run_config(tmp_path: Path, meter: HuaweiEmulator, charger: WarpEmulator, more: str) -> Path:
    """A config for ``pvcharge run`` against the emulators, its state file in ``tmp_path``."""
    path = tmp_path / "config.yaml"
    path.write_text(
        f"meter: {{type: huawei, host: 127.0.0.1, port: {meter.port}, timeout_s: 2}}\n"
        f"charger: {{type: warp, url: '{charger.url}', timeout_s: 2, phases: 1}}\n"
        "control: {interval_s: 1, cloud_filter: 'off', max_age_s: 10}\n"
        f"state: {{file: {tmp_path / 'state.json'}}}\nsessions: {{enabled: false}}\n" + more
    )
    return path


async def test_run_with_an_impossible_plan_charges_fast_and_says_so(tmp_path: Path) -> None:
    """``pvcharge run`` with a plan of 60 kWh due in 30 min: flagged as not met, fast from now: 16 A on
    the emulated WARP at 17:00 on the bundled day, when pv mode would not charge at all."""
    site = evening_site()
    deadline = datetime.fromtimestamp(time.time() + 1800, UTC).strftime("%H:%M")
    async with HuaweiEmulator(site) as meter, WarpEmulator(site) as charger:
        more = (
            f'api: {{enabled: false}}\nplans: [{{deadline: "{deadline}", energy_kwh: 60, timezone: UTC}}]\n'
        )
        path = run_config(tmp_path, meter, charger, more)
        at_16_a, code, log = await run_daemon(
            path, until=lambda: site.state().offered_current_a == 16, polls=300
        )
    assert code == 0, log
    assert at_16_a, log
    assert "plan_made" in log and "met=False" in log
    assert "mode_changed" in log and "source=plan" in log
    assert not (tmp_path / "state.json").exists()


async def test_smart_cost_limit_charges_fast_while_cheap_without_a_plan(tmp_path: Path) -> None:
    clock = FakeClock(utc(8, 1, 45))
    config = parse_config(
        CONFIG_TEXT.split("plans:")[0] + "tariff: {smart_cost_limit: 0.15, grid_price_per_kwh: 0.3}\n",
        environ={},
    )
    daemon = Daemon(config, Meter(clock), Charger(clock), clock=clock)  # type: ignore[arg-type]
    built = build_service(config, daemon, clock=clock)
    assert built is not None and built.smart_cost_limit == 0.15 and built.plans == ()
    service = service_of(daemon, smart_cost_limit=0.15)
    await daemon.cycle()
    assert await service.step(clock()) is None and daemon.mode == "pv"  # 0.30 at 01:45
    clock.t_s = utc(8, 2)
    await service.step(clock())
    assert daemon.mode == "fast"  # 0.12 from 02:00
    clock.t_s = utc(8, 3)
    await service.step(clock())
    assert daemon.mode == "pv"
    dead = PlanService(
        daemon,
        (),
        limits=LIMITS,
        prices=None,
        forecast=None,
        fallback_price_per_kwh=0.10,
        smart_cost_limit=0.15,
    )
    dead.attach()
    clock.advance(5)
    await daemon.cycle()
    clock.t_s = utc(8, 2, 15)
    await dead.step(clock())
    assert daemon.mode == "pv"  # no prices: the flat fallback never counts as cheap


class FlatPv:
    """A forecast source: 8 kW of PV in every slot."""

    name = "forecast test"

    async def fetch(self, now_s: float) -> SlotValues:
        return {t: 8000.0 for t in range(slot_start(now_s), slot_start(now_s) + 86400, SLOT_S)}

    async def close(self) -> None:
        pass


async def test_measured_pv_corrects_the_forecast(tmp_path: Path) -> None:
    """Forecast 8 kW, measured 6 kW from 08:00 to 10:00: the day's factor is 0.75, so the plan counts
    on 8 × 0.75 − 0.3 base load = 5.7 kW, × 0.8 margin = 4.56 kW per slot."""
    clock = FakeClock(utc(8, 8))
    meter = Meter(clock)
    meter.pv_w = 6000.0
    config = parse_config(CONFIG_TEXT, environ={})
    daemon = Daemon(config, meter, Charger(clock), clock=clock)  # type: ignore[arg-type]
    service = PlanService(
        daemon,
        config.plans,
        limits=LIMITS,
        prices=None,
        forecast=CachedSource(FlatPv(), refresh_s=3600, max_age_s=86400),
        fallback_price_per_kwh=0.30,
        base_load_w=300.0,
    )
    service.attach()
    await daemon.cycle()
    first = await service.step(clock())
    assert first is not None and service.pv_factor_today == 1.0
    assert first.slots[0].pv_kwh == pytest.approx((8000 - 300) * 0.8 / 4000)
    while clock.t_s < utc(8, 10):
        clock.advance(5)
        await daemon.cycle()
        if clock.t_s % SLOT_S == 0:
            await service.step(clock())
    plan = await service.step(clock())
    assert service.pv_factor_today == pytest.approx(0.75, abs=0.01)
    assert plan is not None and plan.slots[0].pv_kwh == pytest.approx(4560 / 4000, rel=0.02)


async def test_grid_charging_ends_when_the_target_is_reached_not_at_the_end_of_the_slot(
    tmp_path: Path,
) -> None:
    """fast charges at full power, the planner's last slot may be a partial one: once the energy is
    there, the user's mode is back at once."""
    daemon, service, clock, charger = make(tmp_path, utc(8, 2, 30))
    await daemon.cycle()
    await service.step(clock())
    assert daemon.mode == "fast"
    service.charged_kwh = 11.0  # (of 11.04)
    charger.power_w = 11040.0
    for _ in range(2):  # 11.0 + 2 × 15.3 Wh
        clock.advance(5)
        await daemon.cycle()
        assert daemon.mode == "fast"
    clock.advance(5)
    await daemon.cycle()
    assert service.charged_kwh >= 11.04 and daemon.mode == "pv" and clock() < utc(8, 2, 45)
    assert not service.grid_charging
