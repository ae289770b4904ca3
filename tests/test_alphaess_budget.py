"""The AlphaESS account's request budget and the pause on the way out, with the real daemon.

Issue 12, AlphaESS part: the budget counted polls, not requests (the first poll sends three), and the
start/stop commands were outside it, so a start in the first 10 s drew a 6053 from an account that
allows 5 requests in 10 s (6 requests in 10 s); and a SIGTERM during the 6053 backoff that followed
left the wallbox charging (``charger_left='unknown: pause failed'``) although ``exit_state: pause``.

The daemon, the drivers (meter and wallbox on one account, as :func:`pvcharge.devices.create_devices`
builds them) and the emulator on 127.0.0.1 run on one fake clock; the daemon's sleep moves it.  The
emulator models the account of the issue: 5 requests, GETs and POSTs together, in any 10 s (reference
meters.md §3.4 publishes no limit; 6053 answers a client that asks too often).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sitestub import FakeClock
from structlog.testing import capture_logs

from pvcharge.clients.alphaess import AlphaEssClient
from pvcharge.clients.alphaess_account import OpenApiAccount
from pvcharge.clients.budget import BudgetSpent, RequestBudget
from pvcharge.config import parse_config
from pvcharge.daemon import Cycle, Daemon
from pvcharge.devices import create_devices
from pvcharge.errors import RateLimited
from pvcharge.loadpoint import SHUTDOWN_WRITE_S
from pvcharge.settings import Secret
from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace

APP_ID = "alpha3f1c0e2b"
APP_SECRET = "b5d0c7e4a1f94e2c"  # the emulator's credentials: test values
SYS_SN = "AL2002321010043"
EV_SN = "EV1102321010043"
NOON_S = 12 * 3600  #: the car is plugged in, the sun is up
CHARGER_NAME = "charger alphaess"
REMOTE = "/api/remoteControlEvCharger"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(bundled_trace().start_s + NOON_S)


@pytest.fixture
async def emulator(clock: FakeClock) -> AsyncIterator[AlphaEssEmulator]:
    site = SiteModel(bundled_trace(), t_s=clock(), clock=clock)
    async with AlphaEssEmulator(
        site,
        app_id=APP_ID,
        app_secret=APP_SECRET,
        sys_sn=SYS_SN,
        evcharger_sn=EV_SN,
        clock=clock,
        window_s=10.0,  # the account of the issue: 5 requests in any 10 s
        requests_per_window=5,
        wallbox_current_a=16,
        wallbox_phases=1,
    ) as emu:
        yield emu


def config_for(url: str) -> str:
    """Meter and wallbox on one account, default settings; ``fast`` starts the car at once."""
    account = f"url: '{url}', sys_sn: {SYS_SN}, app_id: {APP_ID}, app_secret: {APP_SECRET}"
    return (
        f"meter: {{type: alphaess, {account}}}\n"
        f"charger: {{type: alphaess, {account}, phases: 1, min_current_a: 6, max_current_a: 16}}\n"
        "control: {mode: fast, interval_s: 5, max_age_s: 30}\n"
    )


def make_daemon(
    emulator: AlphaEssEmulator, clock: FakeClock, on_cycle: Any = None, text: str | None = None
) -> Daemon:
    config = parse_config(text or config_for(emulator.url), "<test>")
    meter, charger = create_devices(config, clock=clock, charger_name=CHARGER_NAME)

    async def sleep(delay_s: float) -> None:
        clock.advance(delay_s)
        await asyncio.sleep(0)

    return Daemon(config, meter, charger, clock=clock, sleep=sleep, on_cycle=on_cycle)


def offered_a(emulator: AlphaEssEmulator) -> float:
    return emulator.site.state().offered_current_a


# -- the budget ------------------------------------------------------------------------------------


def test_budget_counts_each_request_until_a_window_after_its_answer() -> None:
    clock = FakeClock(1000.0)
    budget = RequestBudget(5, 10.0, clock, reserve=1, margin_s=1.0)
    for _ in range(3):
        assert budget.wait_s() == 0
        budget.begin()
        clock.advance(0.5)  # answered half a second later
        budget.end()
    # the first ended at 1000.5: it counts until 1011.5, 10 s from now
    assert budget.wait_s(2) == pytest.approx(10.0, abs=1e-3)
    budget.begin()  # a fourth in flight: the ordinary slots are taken, the reserve is not
    assert budget.wait_s() > 0 and budget.wait_s(reserved=True) == 0
    clock.advance(30.0)
    for _ in range(3):
        budget.begin()
    # four in flight: a slot frees only after one of them ends, 11 s after at the soonest
    assert budget.wait_s() == pytest.approx(11.0) and budget.wait_s(reserved=True) == 0
    budget.end()
    assert budget.wait_s() > 0 and budget.in_flight == 3
    clock.advance(11.1)
    assert budget.wait_s() == 0 and budget.wait_s(2) > 0
    with pytest.raises(ValueError, match="reserve < requests"):
        RequestBudget(1, 10.0, clock, reserve=1)


def test_a_command_refused_for_want_of_room_gets_the_next_free_slot() -> None:
    clock = FakeClock(1000.0)
    budget = RequestBudget(5, 10.0, clock, reserve=1, margin_s=1.0)
    for _ in range(4):  # two polls of two requests
        budget.begin()
        budget.end()
    clock.advance(5.0)
    assert budget.wait_s(command=True) > 0
    budget.command_waiting()
    clock.advance(6.1)  # the slots free: the polls leave one for the command
    assert budget.wait_s(4) > 0 and budget.wait_s(3) == 0 and budget.wait_s(4, command=True) == 0
    budget.begin(command=True)  # sent: the polls need not leave it a slot any more
    assert budget.wait_s(3) == 0
    budget.end()
    budget.command_waiting()
    assert budget.wait_s(3) > 0
    clock.advance(11.1)  # not offered again: the wait ends
    assert budget.wait_s(4) == 0


async def test_a_retry_the_budget_has_no_room_for_ends_as_the_failure_not_as_not_sent(
    emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    """``BudgetSpent`` says that nothing was sent (the wallbox then forgets the start it attempted,
    the poll hands out the last reading as if it had not been tried).  A retry the budget had no room
    for, after an attempt that did reach the cloud, is that attempt's failure, to be tried again when
    the budget has room (a ``RateLimited``: the wallbox defers a stop, the pause on exit waits for
    it); before, it read "not sent"."""
    account = OpenApiAccount(emulator.url, APP_ID, Secret(APP_SECRET), clock=clock, budget_requests=2)
    client = AlphaEssClient.of(account, name=CHARGER_NAME, retries=2, backoff_s=0.01)  # one ordinary slot
    emulator.fail_next = 1  # the first attempt: HTTP 500
    with pytest.raises(RateLimited) as err:
        await client.get("getEssList")
    assert not isinstance(err.value, BudgetSpent)  # before the fix: BudgetSpent, "not sent"
    assert emulator.request_count == 1
    assert "HTTP 500" in str(err.value) and "request budget" in str(err.value)
    assert err.value.retry_after_s == pytest.approx(11.0, abs=0.1)  # the failed attempt's slot
    with pytest.raises(BudgetSpent, match="not sent"):  # no failed attempt before it: nothing sent
        await client.get("getEssList")
    assert emulator.request_count == 1
    await client.close()


async def test_a_start_in_the_first_10_s_draws_no_6053(emulator: AlphaEssEmulator, clock: FakeClock) -> None:
    """``mode: fast`` starts the car on the first cycle, right after the first polls (three requests).
    Before the fix, the start (outside the budget) and the next polls made 6 requests in 10 s: 6053."""
    t0 = clock()
    offered: list[tuple[float, float]] = []

    def on_cycle(cycle: Cycle) -> None:
        offered.append((cycle.now - t0, offered_a(emulator)))

    daemon = make_daemon(emulator, clock, on_cycle)
    with capture_logs() as logs:
        await daemon.run(asyncio.Event(), max_cycles=24)  # two minutes
    assert emulator.too_fast == 0  # before the fix: the 6th request in the first 10 s, at 10 s
    assert emulator.peak_in_window <= 5
    started = [t for t, amps in offered if amps > 0]
    assert started and started[0] < 10  # the start went in the first 10 s
    assert len(emulator.requests_to(REMOTE)) == 2  # the start, and the pause on the way out
    assert emulator.request_count >= 2 * 12  # polled all along (2 requests a poll, every 10 s or so)
    assert not [e for e in logs if e["log_level"] in ("warning", "error")]
    assert offered_a(emulator) == 0


async def test_polls_every_cycle_do_not_starve_a_start(emulator: AlphaEssEmulator, clock: FakeClock) -> None:
    """With ``interval_s: 10`` every cycle polls (two requests, each counted 11 s): a start found the
    four ordinary slots taken at every cycle and never went, until polls left it the next free one."""
    t0 = clock()
    offered: list[tuple[float, float]] = []

    def on_cycle(cycle: Cycle) -> None:
        offered.append((cycle.now - t0, offered_a(emulator)))
        if len(offered) == 6:  # the polls are in their stride: now charge
            daemon.set_mode("fast", source="test")

    config = config_for(emulator.url).replace("mode: fast, interval_s: 5", "mode: 'off', interval_s: 10")
    daemon = make_daemon(emulator, clock, on_cycle, config)
    with capture_logs() as logs:
        await daemon.run(asyncio.Event(), max_cycles=12)
    started = [t for t, amps in offered if amps > 0]
    assert started and started[0] <= 50 + 2 * 10  # within two cycles of the mode change
    assert emulator.too_fast == 0 and emulator.peak_in_window <= 5
    assert not [e for e in logs if e["log_level"] in ("warning", "error")]


@pytest.mark.parametrize("cloud", ["recovers", "keeps refusing"])
async def test_the_pause_on_exit_waits_out_a_6053_backoff_or_says_loudly_that_it_could_not(
    emulator: AlphaEssEmulator, clock: FakeClock, cloud: str
) -> None:
    """SIGTERM while the client backs off after a 6053 (60 s): the pause waits the backoff out within
    ``SHUTDOWN_WRITE_S`` and stops the wallbox; if the cloud still refuses, an error names the charger
    and says that it may still be charging.  Before the fix: a warning, and the wallbox kept charging."""
    stop = asyncio.Event()
    cycles = 0
    t0 = clock()

    def on_cycle(cycle: Cycle) -> None:
        nonlocal cycles
        cycles += 1
        if cycles == 6:  # charging; the account is now refused
            emulator.window_s = 10_000.0
        if cycles == 8:  # a poll was answered 6053: the client backs off; then SIGTERM
            if cloud == "recovers":
                emulator.window_s = 10.0
            stop.set()

    daemon = make_daemon(emulator, clock, on_cycle)
    with capture_logs() as logs:
        await daemon.run(stop)
    stopped = [e for e in logs if e["event"] == "stopped"]
    assert emulator.too_fast >= 1 and len(stopped) == 1
    if cloud == "recovers":
        assert stopped[0]["charger_left"] == "paused" and stopped[0]["log_level"] == "info"
        assert [e["device"] for e in logs if e["event"] == "pause_waiting"] == [CHARGER_NAME]
        assert offered_a(emulator) == 0  # before the fix: 16 A, still charging
        assert emulator.wallbox_status() in (2, 6)
    else:
        assert stopped[0]["log_level"] == "error" and stopped[0]["device"] == CHARGER_NAME
        assert stopped[0]["charger_left"] == "unknown: pause failed"
        assert f"{CHARGER_NAME} may still be charging" in stopped[0]["action"]
        assert "6053" in stopped[0]["error"]
        assert offered_a(emulator) == 16  # what the error says
    assert clock() - t0 <= 8 * 5 + SHUTDOWN_WRITE_S
