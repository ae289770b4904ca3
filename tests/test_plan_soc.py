"""``soc_pct`` plans (pvcharge.planning.target): the energy to add from the car's SoC, from the charger
reading (an OCPP box's SoC measurand), with the charging efficiency; without a SoC from 0 %, said so."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sitestub import FakeClock
from test_ocpp import trace  # noqa: F401 (the trace fixture)
from test_plan_service import LIMITS, Charger, Meter, Prices, utc
from test_vehicle_soc import box_with_a_car

from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.planning.config import PlanConfig
from pvcharge.planning.service import PlanService
from pvcharge.planning.source import CachedSource
from pvcharge.planning.target import CHARGE_EFFICIENCY, NO_SOC_NOTE, Target, need_kwh
from pvcharge.readings import ChargerReading
from pvcharge.sim.site import CarParams
from pvcharge.sim.trace import Trace

CONFIG_TEXT = """
meter: {type: huawei, host: 127.0.0.1}
charger: {type: warp, url: 'http://127.0.0.1', phases: 3}
control: {cloud_filter: 'off', interval_s: 5, max_age_s: 30}
plans:
  - {deadline: "07:00", soc_pct: 80, capacity_kwh: 20, timezone: UTC}
"""


def test_need_from_the_soc_gap_with_the_efficiency() -> None:
    soc_plan = PlanConfig(deadline="07:00", soc_pct=80, capacity_kwh=58)
    target = Target(soc_plan, 0.0, 80 / 100 * 58 / CHARGE_EFFICIENCY)
    assert CHARGE_EFFICIENCY == 0.9  # evcc's soc.ChargeEfficiency
    assert need_kwh(target, 3.0, 30.0) == (pytest.approx(0.5 * 58 / 0.9), None)  # the SoC holds the 3 kWh
    assert need_kwh(target, 3.0, 85.0) == (0.0, None)
    assert need_kwh(target, 3.0, None) == (pytest.approx(0.8 * 58 / 0.9 - 3.0), NO_SOC_NOTE)
    energy = Target(PlanConfig(deadline="07:00", energy_kwh=20), 0.0, 20.0)
    assert need_kwh(energy, 3.0, 30.0) == (17.0, None)  # an energy plan ignores the SoC


class SocCharger(Charger):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.soc_pct: float | None = None

    async def read(self) -> ChargerReading:
        reading = await super().read()
        return ChargerReading(
            reading.connected,
            reading.charging,
            reading.power_w,
            reading.current_a,
            reading.phases,
            reading.timestamp_s,
            vehicle_soc_pct=self.soc_pct,
        )


def service_for(
    tmp_path: Path, daemon_clock: object, charger: object, meter: object
) -> tuple[Daemon, PlanService]:
    config = parse_config(CONFIG_TEXT, environ={})
    daemon = Daemon(config, meter, charger, clock=daemon_clock, state_file=tmp_path / "state.json")  # type: ignore[arg-type]
    service = PlanService(
        daemon,
        config.plans,
        limits=LIMITS,
        prices=CachedSource(Prices(), refresh_s=3600, max_age_s=86400),
        forecast=None,
        fallback_price_per_kwh=0.30,
    )
    service.attach()
    return daemon, service


async def test_a_soc_plan_follows_the_cars_soc_and_says_when_it_has_none(tmp_path: Path) -> None:
    clock = FakeClock(utc(7, 22))
    charger = SocCharger(clock)
    daemon, service = service_for(tmp_path, clock, charger, Meter(clock))
    await daemon.cycle()
    plan = await service.step(clock())
    assert plan is not None and NO_SOC_NOTE in plan.notes
    assert plan.need_kwh == pytest.approx(0.8 * 20 / 0.9)  # from 0 %: 17.8 kWh
    charger.soc_pct = 50.0
    clock.advance(5)
    await daemon.cycle()
    plan = await service.step(clock())
    assert plan is not None and NO_SOC_NOTE not in plan.notes and plan.met
    assert plan.need_kwh == pytest.approx(0.3 * 20 / 0.9)  # 6.7 kWh: 1 h at 11 kW in the cheap hour
    assert [datetime.fromtimestamp(s.start_s, UTC).hour for s in plan.grid_slots] == [2] * 3
    charger.connected = False  # the next car's SoC is not this one's
    clock.advance(5)
    await daemon.cycle()
    assert service.vehicle_soc_pct is None


async def test_a_soc_plan_from_the_ocpp_boxs_soc(trace: Trace, tmp_path: Path) -> None:  # noqa: F811
    car = CarParams(plug_in_s=0, plug_out_s=86400, soc_start_pct=42.0, capacity_wh=20_000)
    async with box_with_a_car(trace, car) as (driver, clock):
        daemon, service = service_for(tmp_path, clock.now, driver, Meter(clock.now))  # type: ignore[arg-type]
        await daemon.cycle()
        soc = service.vehicle_soc_pct
        assert soc is not None and 42 <= soc <= 44
        plan = await service.step(clock.now())
        assert plan is not None and NO_SOC_NOTE not in plan.notes
        assert plan.need_kwh == pytest.approx((80 - soc) / 100 * 20 / 0.9)


async def test_the_chart_data_shows_the_expected_soc_and_the_grid_slots(tmp_path: Path) -> None:
    from pvcharge.planning.chart import chart_data

    clock = FakeClock(utc(7, 22))
    charger = SocCharger(clock)
    charger.soc_pct = 50.0
    daemon, service = service_for(tmp_path, clock, charger, Meter(clock))
    await daemon.cycle()
    plan = await service.step(clock())
    assert plan is not None
    data = chart_data(service, clock())
    summary = data["plan"]
    assert summary["soc_pct"] == 80 and summary["vehicle_soc_pct"] == 50.0 and summary["met"]
    assert summary["expected_soc_pct"] == pytest.approx(80.0)  # 6.7 kWh x 0.9 into 20 kWh: +30 %
    assert data["slots"][0]["start_s"] == utc(7, 22) and len(data["slots"]) == 24 * 4
    grid = [s for s in data["slots"] if s["source"] == "grid"]
    assert len(grid) == 3 and all(utc(8, 2) <= s["start_s"] < utc(8, 3) for s in grid)  # the cheap hour
    assert {s["price_per_kwh"] for s in grid} == {0.12} and data["slots"][0]["pv_forecast_w"] is None
    assert data["prices"] == {"name": "tariff test", "fetched_s": utc(7, 22), "last_error": None}
    assert data["forecast"] is None
