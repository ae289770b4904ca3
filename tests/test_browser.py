"""The status page in a real headless browser: Debian's chromium driven by Playwright.

The daemon runs for real on loopback (fake drivers, interval 0.2 s); the page must show its numbers,
switch the mode with a click (seen on the page and in ``daemon.mode``) and work with a token.  Any
console error (a CSP violation, a script error) fails the test.

Needs ``apt-get install -y chromium`` and ``pip install playwright`` (no ``playwright install``: the
browser is Debian's).  Without them the tests fail, never skip.  ``PVCHARGE_UPDATE_SCREENSHOT=1``
also writes the screenshot to ``docs/status-page.png``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_api import TOKEN, Charger, Clock, Meter, make_daemon

from pvcharge.api.server import ApiServer, start_api
from pvcharge.config import ApiConfig, parse_config
from pvcharge.daemon import Daemon
from pvcharge.settings import Secret

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "status-page.png"


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no browser at {CHROMIUM}: this test needs Debian's chromium: apt-get install -y chromium"
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: pip install playwright (it drives Debian's chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def running(
    token: str | None = None, daemon: Daemon | None = None
) -> AsyncIterator[tuple[Daemon, ApiServer]]:
    """``daemon`` (default: test_api's one charger on the fake site) running on the real clock, and
    its API server on a free loopback port."""
    if daemon is None:
        daemon, *_ = make_daemon(real_clock=True, interval_s=0.2)
    server = await start_api(daemon, ApiConfig(port=0, token=Secret(token) if token else None))
    stop = asyncio.Event()
    loop = asyncio.create_task(daemon.run(stop))
    try:
        yield daemon, server
    finally:
        stop.set()
        await loop
        await server.stop()


#: two loadpoints on the fake site: carport fast (priority 1), garage on the surplus
TWO_TEXT = """\
meter: {type: huawei, host: 127.0.0.1}
control: {cloud_filter: 'off', interval_s: 5, max_age_s: 30}
site: {max_grid_current_a: 25}
loadpoints:
  - {name: carport, priority: 1, mode: fast,
     charger: {type: warp, url: 'http://127.0.0.1', phases: 1, max_current_a: 16}}
  - {name: garage, mode: pv, charger: {type: warp, url: 'http://127.0.0.2', phases: 1, max_current_a: 16}}
"""


def two_loadpoints() -> Daemon:
    """A daemon with :data:`TWO_TEXT` on the real clock: carport's car charges, garage's is unplugged."""
    clock = Clock(real=True)
    carport, garage = Charger(clock), Charger(clock)
    garage.name = "charger garage"  # type: ignore[misc]
    garage.connected = False
    config = parse_config(TWO_TEXT)
    config = dataclasses.replace(config, control=dataclasses.replace(config.control, interval_s=0.2))
    return Daemon(config, Meter(clock, carport), [carport, garage], clock=clock)


async def new_page(browser: Browser) -> tuple[Page, list[str]]:
    """A page in a fresh context (its own sessionStorage) and the list its console errors go to."""
    context = await browser.new_context(viewport={"width": 960, "height": 720}, color_scheme="light")
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page, errors


async def test_the_status_page_shows_the_site_and_switches_the_mode(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with chromium() as browser, running() as (daemon, server):
        page, errors = await new_page(browser)
        await page.goto(f"{server.url}/")
        await expect(page.locator("#conn")).to_have_text("live")
        await expect(page.locator("#car-state")).to_have_text("charging")  # the car started
        await expect(page.locator("#available-sub")).to_have_text("for the car")
        # the numbers of the fake site: 5.2 kW PV, battery charging at 800 W, the car at 16 A on 1 phase
        await expect(page.locator("#pv")).to_have_text("5.20 kW")
        await expect(page.locator("#battery")).to_have_text("800 W")
        await expect(page.locator("#battery-dir")).to_have_text("charging · 64 %")
        await expect(page.locator("#grid-dir")).to_have_text("export")
        await expect(page.locator("#grid")).to_have_text(re.compile(r"^1(19|20) W$"))  # wobbles by 1 W
        await expect(page.locator("#house")).to_have_text("4.28 kW")
        await expect(page.locator("#car-power")).to_have_text("3.68 kW")
        await expect(page.locator("#car-current")).to_have_text("16 A × 1p")
        await expect(page.locator("#command")).to_have_text("16 A on 1p")
        assert daemon.last_cycle is not None
        # the decision in words for people, the numbers behind it in the tooltip (and the log)
        await expect(page.locator("#reason")).to_have_text("Charging from the surplus at 16 A on 1 phase.")
        await expect(page.locator("#reason")).to_have_attribute(
            "title", re.compile(r"^pv: surplus 4(499|500) W, 16 A on 1p$")
        )
        await expect(page.locator("#dev-meter .state")).to_contain_text("ok")
        await expect(page.locator('#modes button[data-mode="pv"]')).to_have_attribute("aria-pressed", "true")

        await page.click('#modes button[data-mode="fast"]')
        await expect(page.locator('#modes button[data-mode="fast"]')).to_have_attribute(
            "aria-pressed", "true"
        )
        await expect(page.locator('#modes button[data-mode="pv"]')).to_have_attribute("aria-pressed", "false")
        await expect(page.locator("#mode-note")).to_have_text(
            "Mode fast: applies from the next control cycle."
        )
        assert daemon.mode == "fast"
        # the next cycles decide in fast mode, and the page's live updates show it
        await expect(page.locator("#reason")).to_contain_text("fast", ignore_case=True)
        assert daemon.last_cycle.decision.mode == "fast"

        # a mode changed elsewhere shows within a poll (~2 s)
        daemon.set_mode("minpv", source="test")
        await expect(page.locator('#modes button[data-mode="minpv"]')).to_have_attribute(
            "aria-pressed", "true", timeout=5000
        )
        await page.click('#modes button[data-mode="pv"]')
        await expect(page.locator('#modes button[data-mode="pv"]')).to_have_attribute("aria-pressed", "true")
        assert str(daemon.mode) == "pv"  # (str: mypy keeps the narrowing from above)
        await expect(page.locator("#reason")).not_to_contain_text("fast", ignore_case=True)
        shot = tmp_path / "status-page.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert errors == []
    assert shot.stat().st_size > 10_000
    if os.environ.get("PVCHARGE_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


async def test_the_status_page_with_a_token_takes_it_once_and_sends_it_as_a_bearer_header() -> None:
    from playwright.async_api import expect

    async with chromium() as browser, running(TOKEN) as (daemon, server):
        page, errors = await new_page(browser)
        sent: list[str | None] = []
        page.on(
            "request", lambda r: sent.append(r.headers.get("authorization")) if "/api/" in r.url else None
        )
        await page.goto(f"{server.url}/?token={TOKEN}")
        await expect(page.locator("#conn")).to_have_text("live")
        assert page.url == f"{server.url}/"  # out of the address bar (and the history entry)
        assert await page.evaluate("sessionStorage.getItem('pvcharge-token')") == TOKEN
        await page.click('#modes button[data-mode="minpv"]')
        await expect(page.locator('#modes button[data-mode="minpv"]')).to_have_attribute(
            "aria-pressed", "true"
        )
        assert daemon.mode == "minpv"
        assert sent and set(sent) == {f"Bearer {TOKEN}"}
        # a reload of / (no token in the URL) still works: the tab kept it
        await page.reload()
        await expect(page.locator("#conn")).to_have_text("live")
        assert page.url == f"{server.url}/"
        assert [e for e in errors if "status of 401" not in e] == []  # the 401 of the reload itself

        # another tab without the token gets the token form; a wrong token is refused and forgotten
        page, errors = await new_page(browser)
        response = await page.goto(f"{server.url}/")
        assert response is not None and response.status == 401
        await page.fill('input[name="token"]', "wrong-token")
        await page.click("form button")
        await expect(page.locator(".bad")).to_have_text("That token was not accepted.")
        assert await page.evaluate("sessionStorage.getItem('pvcharge-token')") is None
        await page.fill('input[name="token"]', TOKEN)
        await page.click("form button")
        await expect(page.locator("#conn")).to_have_text("live")
        await expect(page.locator('#modes button[data-mode="minpv"]')).to_have_attribute(
            "aria-pressed", "true"
        )
        assert [e for e in errors if "status of 401" not in e] == []


HISTORY_SCREENSHOT = SCREENSHOT.parent / "status-page-history.png"


async def test_the_status_page_shows_today_the_sessions_and_the_days_with_a_csv_download(
    tmp_path: Path,
) -> None:
    """With a session history: today's energy by source, the sessions (newest first, the open one as
    "plugged in"), the last days and a CSV download that works with a token too."""
    import time

    from playwright.async_api import expect

    from pvcharge.sessions import SessionRecorder
    from pvcharge.sessions.export import iso, parse_bound
    from pvcharge.sessions.store import SessionStore
    from pvcharge.sessions.tally import DayTotals, Session, Tariff, local_day

    now = time.time()
    yesterday = now - 86400
    store = SessionStore(tmp_path / "s.db")
    old = Session(
        "warp", yesterday - 3600, yesterday, yesterday, 9000, 6000, 1500, 1500, 3680, [1], 2, 0, 0.45, 1.80
    )
    days = [
        DayTotals(local_day(yesterday, None), 25000, 3000, 1500, 4000, 3500, 9000, 6000, 1500, 1500),
        # earlier today (this morning, say): 6 kWh into the car, 95 % of it from the sun
        DayTotals(local_day(now, None), 14200, 2100, 900, 3000, 2000, 6000, 5400, 300, 300),
    ]
    store.write([old], days)
    # the last three hours of today, a minute each: a PV hump, the car following it, the battery balancing
    midnight = parse_bound(local_day(now, None), None)
    first = max(midnight, now - 3 * 3600) // 60 * 60
    minutes = {}
    for k in range(int((now - first) // 60)):
        pv = 4000 * math.sin(math.pi * k / 180) ** 2
        car = 3680 if pv > 2500 else 0
        minutes[int(first + 60 * k)] = [1, pv, 500, car, 0, 500 + car - pv]
    store.write([], [], minutes)
    recorder = SessionRecorder(store, "warp", Tariff(0.30, 0.08, "EUR"))
    daemon, *_ = make_daemon(real_clock=True, interval_s=0.2)
    daemon.listeners.append(recorder)
    server = await start_api(daemon, ApiConfig(port=0, token=Secret(TOKEN)), recorder)
    stop = asyncio.Event()
    loop = asyncio.create_task(daemon.run(stop))
    try:
        async with chromium() as browser:
            page, errors = await new_page(browser)
            await page.goto(f"{server.url}/?token={TOKEN}")
            await expect(page.locator("#conn")).to_have_text("live")
            await expect(page.locator("#today")).to_be_visible()
            # this morning's energy and the fake site's since (all PV); the open session is the first row
            await expect(page.locator("#today-pv")).to_have_text(re.compile(r"^14\.2\d kWh$"))
            await expect(page.locator("#today-share")).to_have_text("95 %")
            await expect(page.locator("#today-car-grid")).to_have_text("0.30 kWh")
            await expect(page.locator("#today-grid")).to_have_text(re.compile(r"^0\.90 / 2\.\d\d$"))
            rows = page.locator("#session-rows tr")
            await expect(rows).to_have_count(2)
            await expect(rows.nth(0).locator("td").nth(1)).to_have_text("plugged in")
            await expect(rows.nth(1).locator("td")).to_have_text(
                [
                    iso(old.start_s, None)[:16].replace("T", " "),
                    re.compile(r"^\d\d:\d\d|\d{4}-"),
                    "9.00",
                    "83 %",
                    "1.50",
                    "0.45 EUR",
                    "1.80 EUR",
                ]
            )
            # the power chart of today: uPlot drew on its canvas, its legend names the five series
            await expect(page.locator("#power .uplot canvas")).to_have_count(1)
            legend = page.locator("#power .u-legend .u-series .u-label")
            await expect(legend).to_have_text(
                ["Time", "PV", "House", "Car", "Grid (+ import)", "Battery (+ discharge)"]
            )
            points = await page.evaluate("chart.data[0].length")
            assert points >= len(minutes) > 0
            days = page.locator("#day-rows tr")
            await expect(days).to_have_count(2)
            await expect(days.nth(1).locator("td").nth(0)).to_have_text(local_day(yesterday, None))
            await expect(days.nth(1).locator("td").nth(3)).to_have_text("83 %")
            async with page.expect_download() as download_info:
                await page.click("#csv")
            download = await download_info.value
            saved = tmp_path / "download.csv"
            await download.save_as(str(saved))
            lines = saved.read_text().splitlines()
            assert lines[0].startswith("start,end,loadpoint,energy_kwh,pv_kwh,battery_kwh,grid_kwh")
            assert len(lines) == 3 and ",warp,9.0,6.0,1.5,1.5," in lines[1]
            shot = tmp_path / "history.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert errors == []
            # a token the API refuses: no file saved with the error in it, the link says why
            await page.evaluate("sessionStorage.setItem(TOKEN_KEY, 'not-the-token')")
            await page.click("#csv")
            await expect(page.locator("#csv")).to_have_text("CSV failed: HTTP 401")
    finally:
        stop.set()
        await loop
        await server.stop()
        recorder.close(time.time())
    if os.environ.get("PVCHARGE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, HISTORY_SCREENSHOT)


async def test_the_surplus_is_not_offered_to_a_car_that_is_not_there() -> None:
    """The page said "Surplus 1.17 kW for the car" with no car plugged in."""
    from playwright.async_api import expect

    async with chromium() as browser, running() as (daemon, server):
        page, errors = await new_page(browser)
        await page.goto(f"{server.url}/")
        await expect(page.locator("#available-sub")).to_have_text("for the car")
        daemon.charger.connected = False  # type: ignore[attr-defined]  # the fake charger: unplugged
        await expect(page.locator("#car-state")).to_have_text("unplugged")
        await expect(page.locator("#available-sub")).to_have_text("no car plugged in")
        assert not errors, errors


async def test_the_status_page_has_one_card_per_loadpoint_whose_buttons_switch_that_loadpoint() -> None:
    from playwright.async_api import expect

    async with chromium() as browser, running(daemon=two_loadpoints()) as (daemon, server):
        page, errors = await new_page(browser)
        await page.goto(f"{server.url}/")
        await expect(page.locator("#conn")).to_have_text("live")
        cards = page.locator("#lp-cards .lp-card")
        await expect(cards).to_have_count(2)
        await expect(page.locator("#loadpoints")).to_be_visible()
        await expect(page.locator("#mode")).to_be_hidden()  # the single-loadpoint mode buttons
        carport = page.locator('#lp-cards .lp-card[data-loadpoint="carport"]')
        garage = page.locator('#lp-cards .lp-card[data-loadpoint="garage"]')
        await expect(carport.locator(".lp-name")).to_have_text("carport")
        await expect(carport.locator(".lp-priority")).to_have_text("priority 1")
        await expect(carport.locator(".lp-command")).to_have_text("16 A on 1p")
        await expect(carport.locator(".lp-car")).to_have_text("16 A × 1p · charging")
        await expect(carport.locator(".lp-power")).to_have_text("3.68 kW")
        await expect(garage.locator(".lp-car")).to_have_text(re.compile(r"· unplugged$"))
        await expect(garage.locator(".lp-device .name")).to_have_text("charger garage")
        await expect(garage.locator(".lp-device .state")).to_contain_text("ok")
        await expect(page.locator("#dev-charger")).to_be_hidden()  # the first charger's: in its card
        await expect(carport.locator('button[data-mode="fast"]')).to_have_attribute("aria-pressed", "true")
        await expect(garage.locator('button[data-mode="pv"]')).to_have_attribute("aria-pressed", "true")
        await expect(page.locator("#car-current")).to_have_text("2 loadpoints")

        await garage.locator('button[data-mode="off"]').click()
        await expect(garage.locator('button[data-mode="off"]')).to_have_attribute("aria-pressed", "true")
        await expect(garage.locator(".lp-note")).to_have_text(
            "Mode off: applies from the next control cycle."
        )
        assert [lp.controller.mode for lp in daemon.loadpoints] == ["fast", "off"]  # garage's, not carport's
        await expect(carport.locator('button[data-mode="fast"]')).to_have_attribute("aria-pressed", "true")
        await carport.locator('button[data-mode="pv"]').click()
        await expect(carport.locator('button[data-mode="pv"]')).to_have_attribute("aria-pressed", "true")
        assert [lp.controller.mode for lp in daemon.loadpoints] == ["pv", "off"]
        # the decision in words, per card, from the next cycles on
        await expect(garage.locator(".lp-summary")).to_contain_text("off", ignore_case=True)
        assert errors == [], errors
