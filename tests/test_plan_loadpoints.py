"""Plans per loadpoint (``plans[i].loadpoint``): the config check, one plan service per loadpoint, a plan
on the second loadpoint steering only that loadpoint's mode, and the plan set at run time for any
loadpoint (API, MQTT, CLI, state file)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sitestub import FakeClock, run_daemon
from test_api import loopback
from test_daemon_loadpoints import night_with_two_cars, two_warps
from test_plan_service import LIMITS, Charger, Meter, Prices, service_of, utc

from pvcharge.api.server import start_api
from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.errors import ConfigError
from pvcharge.planning.service import PlanService, build_services, close_services
from pvcharge.planning.source import CachedSource, SlotValues
from pvcharge.sim.site import CarParams

#: two loadpoints in pv, a plan on the second (garage)
TWO = """
meter: {type: huawei, host: 127.0.0.1}
control: {cloud_filter: 'off', interval_s: 5, max_age_s: 30}
loadpoints:
  - {name: carport, priority: 1, charger: {type: warp, url: 'http://127.0.0.1', phases: 3}}
  - {name: garage, charger: {type: warp, url: 'http://127.0.0.2', phases: 3}}
plans:
  - {deadline: "07:00", energy_kwh: 11.04, timezone: UTC, loadpoint: garage}
"""


def two_loadpoints(tmp_path: Path, text: str = TWO) -> tuple[Daemon, FakeClock, Charger, Charger]:
    clock = FakeClock(utc(7, 22))
    carport, garage = Charger(clock), Charger(clock)
    daemon = Daemon(
        parse_config(text, environ={}),
        Meter(clock),  # type: ignore[arg-type]
        [carport, garage],  # type: ignore[list-item]
        clock=clock,
        state_file=tmp_path / "state.json",
    )
    return daemon, clock, carport, garage


def modes(daemon: Daemon) -> dict[str, str]:
    return {lp.name: lp.controller.mode for lp in daemon.loadpoints}


def test_an_unknown_loadpoint_is_a_config_error_naming_the_entry_and_the_names() -> None:
    expected = r"plans\[0\]\.loadpoint: no loadpoint 'barn' \(expected one of carport, garage\)"
    with pytest.raises(ConfigError, match=expected):
        parse_config(TWO.replace("loadpoint: garage", "loadpoint: barn"), environ={})
    single = (
        "meter: {type: huawei, host: 127.0.0.1}\ncharger: {type: warp, url: 'http://127.0.0.1'}\nplans:\n"
    )
    plan = "  - {deadline: '07:00', energy_kwh: 5%s}\n"
    with pytest.raises(ConfigError, match=r"plans\[1\]\.loadpoint: .*expected one of main"):
        parse_config(single + plan % "" + plan % ", loadpoint: x", environ={})
    assert parse_config(single + plan % ", loadpoint: main", environ={}).plans[0].loadpoint == "main"


async def test_run_builds_a_service_per_loadpoint_sharing_the_sources(tmp_path: Path) -> None:
    config = parse_config(TWO.replace("plans:", "tariff: {smart_cost_limit: 0.1}\nplans:"), environ={})
    daemon, clock, _, _ = two_loadpoints(tmp_path)
    first, garage = build_services(config, daemon, clock=clock)
    assert (first.loadpoint, first.plans, first.takes_runtime) == ("carport", (), True)
    assert (garage.loadpoint, garage.plans, garage.takes_runtime) == ("garage", config.plans, True)
    assert first.smart_cost_limit == garage.smart_cost_limit == 0.1
    assert garage.prices is first.prices and garage.forecast is first.forecast
    await close_services([first, garage])
    on_first = TWO.replace("loadpoint: garage", "loadpoint: carport")
    on_first = parse_config(on_first.replace("plans:", "tariff: {smart_cost_limit: 0.1}\nplans:"), environ={})
    carport, other = build_services(on_first, daemon, clock=clock)
    assert (carport.loadpoint, carport.plans, carport.smart_cost_limit) == ("carport", on_first.plans, 0.1)
    # (a service for run-time plans only: the cost limit stays with the first loadpoint and those with plans:)
    assert (other.loadpoint, other.plans, other.smart_cost_limit) == ("garage", (), None)
    assert other.prices is carport.prices
    await close_services([carport, other])


async def test_a_plan_on_the_second_loadpoint_raises_only_its_mode_in_its_grid_slot(tmp_path: Path) -> None:
    daemon, clock, carport, garage = two_loadpoints(tmp_path)
    service = service_of(daemon, daemon.config.plans, loadpoint="garage", takes_runtime=False)
    carport.power_w = 11040.0  # the carport's car charges from PV: not the garage's energy
    await daemon.cycle()
    clock.t_s += 60
    await daemon.cycle()
    assert service.charged_kwh == 0.0 and service.connected
    garage.power_w = 3600.0
    clock.t_s += 60
    await daemon.cycle()
    assert service.charged_kwh == pytest.approx(3600 * 60 / 3.6e6)
    service.charged_kwh = 0.0
    plan = await service.step(clock())
    assert plan is not None and plan.met
    assert [datetime.fromtimestamp(s.start_s, UTC).hour for s in plan.grid_slots] == [2] * 4
    assert modes(daemon) == {"carport": "pv", "garage": "pv"}
    clock.t_s = utc(8, 2)
    await service.step(clock())
    assert modes(daemon) == {"carport": "pv", "garage": "fast"}
    assert daemon.mode == "pv" and not (tmp_path / "state.json").exists()
    clock.t_s = utc(8, 3)
    await service.step(clock())
    assert modes(daemon) == {"carport": "pv", "garage": "pv"}


async def test_get_plans_names_the_loadpoint(tmp_path: Path) -> None:
    daemon, clock, _, _ = two_loadpoints(tmp_path)
    [first, _garage] = build_services(daemon.config, daemon, clock=clock)
    server = await start_api(daemon, loopback(), loadpoint_plans={first.loadpoint: first})
    assert server.url is not None
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            answer = (await client.get("/api/plans")).json()
        assert answer["loadpoint"] == "carport" and answer["plans"] == []
    finally:
        await server.stop()
        await close_services([first, _garage])


class SlowPrices(Prices):
    """:class:`Prices` that yields to the loop while it fetches, counting its fetches."""

    def __init__(self) -> None:
        self.fetches = 0

    async def fetch(self, now_s: float) -> SlotValues:
        self.fetches += 1
        await asyncio.sleep(0)
        return await super().fetch(now_s)


async def test_services_stepping_together_share_one_fetch_of_the_prices(tmp_path: Path) -> None:
    daemon, clock, _, _ = two_loadpoints(tmp_path)
    source = SlowPrices()
    prices = CachedSource(source, refresh_s=3600, max_age_s=86400)
    plans = (daemon.config.plans[0],)
    services = [
        PlanService(
            daemon,
            plans,
            limits=LIMITS,
            prices=prices,
            forecast=None,
            fallback_price_per_kwh=0.30,
            loadpoint=name,
            takes_runtime=False,
        )
        for name in ("carport", "garage")
    ]
    for service in services:
        service.attach()
    await daemon.cycle()  # both see their car
    made = await asyncio.gather(*(service.step(clock()) for service in services))
    assert source.fetches == 1
    for plan in made:  # both planned with the prices: the cheap hour, not the flat fallback
        assert plan is not None
        assert [datetime.fromtimestamp(s.start_s, UTC).hour for s in plan.grid_slots] == [2] * 4


async def test_pvcharge_run_with_an_impossible_plan_on_the_garage_charges_only_the_garage(
    tmp_path: Path,
) -> None:
    """``pvcharge run`` with two WARPs in pv at night (no PV) and 60 kWh due in 30 min on the garage:
    the garage's plan service switches the garage to fast (16 A), the carport stays paused in pv."""
    site, cars = night_with_two_cars(CarParams(plug_in_s=0.0, plug_out_s=23 * 3600.0))  # in all night
    deadline = datetime.fromtimestamp(time.time() + 1800, UTC).strftime("%H:%M")
    async with two_warps(site, cars) as (head, url):
        path = tmp_path / "pvcharge.yaml"
        path.write_text(
            head + f"state: {{file: {tmp_path / 'state.json'}}}\nsessions: {{enabled: false}}\n"
            "api: {enabled: false}\n"
            "loadpoints:\n"
            f"  - {{name: carport, priority: 1, charger: {{type: warp, url: '{url['carport']}'}}}}\n"
            f"  - {{name: garage, charger: {{type: warp, url: '{url['garage']}'}}}}\n"
            f'plans: [{{deadline: "{deadline}", energy_kwh: 60, timezone: UTC, loadpoint: garage}}]\n'
        )
        offers: dict[str, float] = {}

        def garage_at_16_a() -> bool:
            offers.update({n: c.state().offered_current_a for n, c in cars.items()})
            return offers["garage"] == 16.0

        held, code, log = await run_daemon(path, until=garage_at_16_a, polls=300)
    assert code == 0, log
    assert held, log
    assert offers["carport"] == 0.0, offers
    assert "mode_changed" in log and "loadpoint=garage" in log and "source=plan" in log, log
    assert "loadpoint=carport" not in [line for line in log.splitlines() if "mode_changed" in line], log
