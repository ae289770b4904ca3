"""The status page's plan section in a real headless browser (Debian's chromium through Playwright, as
tests/test_browser.py): with a plan service the page shows the target, whether it is met, the grid
windows with their prices, and a uPlot chart of the PV forecast, the planned charging and the price,
fed by ``GET /api/forecast``. Without one the section stays hidden and the route is never asked. With
several loadpoints a selector switches the section to another loadpoint's plan
(``GET /api/loadpoints/{name}/forecast``)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from test_api import make_daemon
from test_browser import SCREENSHOT as PAGE_SCREENSHOT
from test_browser import chromium, new_page
from test_plan_loadpoint_runtime import served

from pvcharge.api.server import start_api
from pvcharge.config import ApiConfig
from pvcharge.planning.config import PlanConfig
from pvcharge.planning.planner import SLOT_S, ChargeLimits, slot_start
from pvcharge.planning.service import PlanService
from pvcharge.planning.source import CachedSource, SlotValues
from pvcharge.readings import ChargerReading

SCREENSHOT = PAGE_SCREENSHOT.parent / "status-page-plan.png"
NOW_S = time.time()
CHEAP_S = slot_start(NOW_S) + 4 * 3600  #: one cheap hour, 4 h from now


class Prices:
    name = "tariff test"

    async def fetch(self, now_s: float) -> SlotValues:
        prices = {t: 0.30 for t in range(slot_start(now_s), slot_start(now_s) + 2 * 86400, SLOT_S)}
        for t in range(CHEAP_S, CHEAP_S + 3600, SLOT_S):
            prices[t] = 0.12
        return prices

    async def close(self) -> None:
        pass


class Pv:
    """A 7-kW hump 8 to 12 h from now."""

    name = "forecast test"

    async def fetch(self, now_s: float) -> SlotValues:
        start = slot_start(now_s)
        return {
            start + k * SLOT_S: max(0.0, 7000 * math.sin(math.pi * (k - 32) / 16)) if 32 <= k <= 48 else 0.0
            for k in range(192)
        }

    async def close(self) -> None:
        pass


async def test_the_page_shows_the_plan_and_its_chart(tmp_path: Path) -> None:
    from playwright.async_api import expect

    daemon, _, charger, _ = make_daemon(real_clock=True, interval_s=0.2)
    read = charger.read

    async def read_with_a_soc() -> ChargerReading:
        return dataclasses.replace(await read(), vehicle_soc_pct=55.0)

    charger.read = read_with_a_soc  # type: ignore[method-assign]
    deadline = datetime.fromtimestamp(NOW_S + 14 * 3600, UTC).strftime("%H:%M")
    service = PlanService(
        daemon,
        [PlanConfig(deadline=deadline, energy_kwh=20, timezone="UTC")],
        limits=ChargeLimits(4140, 11040),
        prices=CachedSource(Prices(), refresh_s=3600, max_age_s=86400),
        forecast=CachedSource(Pv(), refresh_s=3600, max_age_s=86400),
        fallback_price_per_kwh=0.30,
    )
    service.attach()
    await daemon.cycle()  # the car is plugged in
    plan = await service.step(time.time())
    assert plan is not None and plan.met and plan.grid_slots and plan.pv_kwh > 0
    server = await start_api(daemon, ApiConfig(port=0), loadpoint_plans={service.loadpoint: service})
    stop = asyncio.Event()
    loop = asyncio.create_task(daemon.run(stop))
    try:
        async with chromium() as browser:
            page, errors = await new_page(browser)
            await page.goto(f"{server.url}/")
            await expect(page.locator("#plan")).to_be_visible()
            await expect(page.locator("#plan-pick")).to_be_hidden()  # one loadpoint: no selector
            await expect(page.locator("#car-soc")).to_have_text(" · 55 %")  # the car tile shows the SoC
            await expect(page.locator("#plan-summary")).to_have_text(
                re.compile(rf"^20\.0 kWh by {deadline}: on track \(2\d\.\d kWh expected\)$")
            )
            await expect(page.locator("#plan-grid")).to_have_text(
                re.compile(
                    r"^From PV \d+\.\d kWh, from the grid \d+\.\d kWh: \d\d:\d\d–\d\d:\d\d at 0\.120 EUR/kWh"
                    r" · car at 55 %$"
                )
            )
            await expect(page.locator("#plan-chart .uplot canvas")).to_have_count(1)
            await expect(page.locator("#plan-chart .u-legend .u-series .u-label")).to_have_text(
                ["Time", "PV forecast", "Car from PV", "Car from grid", "Price (EUR/kWh)"]
            )
            slots = await page.evaluate("planChart.data[0].length")
            assert slots >= 14 * 4  # to the deadline, 15 min each
            grid = await page.evaluate("planChart.data[3].filter((w) => w > 0).length")
            assert grid == len(plan.grid_slots)
            assert await page.evaluate("planChart.data[2].some((w) => w > 0)")  # charging from PV later
            assert await page.evaluate("Math.min(...planChart.data[4])") == 0.12
            shot = tmp_path / "plan.png"
            await page.locator("#plan").screenshot(path=str(shot))
            assert errors == []
    finally:
        stop.set()
        await loop
        await server.stop()
    assert shot.stat().st_size > 10_000
    if os.environ.get("PVCHARGE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)


async def test_without_plans_the_section_stays_hidden() -> None:
    from playwright.async_api import expect

    daemon, *_ = make_daemon(real_clock=True, interval_s=0.2)
    server = await start_api(daemon, ApiConfig(port=0))
    asked: list[str] = []
    try:
        async with chromium() as browser:
            page, errors = await new_page(browser)
            page.on("request", lambda r: asked.append(r.url))
            await page.goto(f"{server.url}/")
            await expect(page.locator("#conn")).to_have_text("live")
            await expect(page.locator("#plan")).to_be_hidden()
            assert not [url for url in asked if "/api/forecast" in url]
            assert errors == []
    finally:
        await server.stop()


@pytest.fixture
def utc_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run-time plans are in the daemon's zone: UTC here."""
    monkeypatch.setenv("TZ", "UTC")
    yield


async def test_the_selector_switches_the_plan_section_to_the_garages_plan(
    tmp_path: Path, utc_zone: None
) -> None:
    from playwright.async_api import expect

    async with served(tmp_path) as (url, _, _), httpx.AsyncClient(base_url=url) as client:
        put = await client.put(
            "/api/loadpoints/garage/plans/next", json={"energy_kwh": 11.04, "deadline": "07:00"}
        )
        assert put.status_code == 200 and put.json()["plan"]["met"], put.text
        async with chromium() as browser:
            page, errors = await new_page(browser)
            asked: list[str] = []
            page.on("request", lambda r: asked.append(r.url.removeprefix(url)))
            await page.goto(f"{url}/")
            await expect(page.locator("#plan")).to_be_visible()
            picker = page.get_by_role("combobox", name="Loadpoint")  # the select, by its label
            await expect(picker).to_be_visible()
            await expect(picker.locator("option")).to_have_text(["carport", "garage"])
            await expect(picker).to_have_value("carport")
            await expect(page.locator("#plan-summary")).to_have_text(
                "No plan in force (no car plugged in, or no plan)."
            )
            await picker.select_option("garage")
            await expect(page.locator("#plan-summary")).to_have_text(
                re.compile(r"^11\.0 kWh by 07:00: on track \(\d+\.\d kWh expected\)$")
            )
            assert "/api/loadpoints/garage/forecast" in asked
            await expect(page.locator("#plan-chart .uplot canvas")).to_have_count(1)
            await picker.select_option("carport")  # and back
            await expect(page.locator("#plan-summary")).to_have_text(
                "No plan in force (no car plugged in, or no plan)."
            )
            assert asked.count("/api/forecast") == 2  # (the first loadpoint's)
            assert errors == []
