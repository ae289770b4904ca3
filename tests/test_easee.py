"""The Easee cloud driver against the Easee emulator over loopback, plus its pure parts.

Device facts under test: reference chargers.md §1 (Easee cloud API).  Every driver, emulator and site in
a test shares one fake clock, so rate windows, token lifetimes and the car's response run in simulated
seconds and the file finishes in seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import structlog
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from sitestub import FakeClock

from pvcharge.chargers.easee import Config, EaseeCharger, create
from pvcharge.chargers.easee_observations import parse_observations, reading_from_observations
from pvcharge.clients.budget import RequestBudget, TokenBucket
from pvcharge.clients.easee import BUDGETS, COMMAND_WINDOW, EaseeClient
from pvcharge.config import parse_config
from pvcharge.control import ChargePoint, ControlConfig, Controller
from pvcharge.daemon import Daemon
from pvcharge.errors import (
    DeviceError,
    DeviceProtocolError,
    DeviceUnavailable,
    RateLimited,
    WriteDeferred,
    WritesBlocked,
)
from pvcharge.readings import ChargerCommand, ChargerReading, IecState, SiteReading
from pvcharge.retry import parse_retry_after
from pvcharge.settings import Secret, SettingError
from pvcharge.sim.easee import EaseeEmulator
from pvcharge.sim.easee_gate import BLOCKED_TEXT
from pvcharge.sim.faults import Fault
from pvcharge.sim.site import CarParams, SiteModel
from pvcharge.sim.trace import Trace, bundled_trace

NAME = "charger easee-test"
USER, PASSWORD, CHARGER = "demo@example.com", "demo-password", "EH000001"
NOON_S = 12 * 3600  # the bundled day's car is plugged in 08:00–18:00 local
EVENING_S = 19 * 3600
COMMANDS = f"/api/chargers/{CHARGER}/commands/"
CIRCUIT = "/api/sites/1/circuits/2/settings"


class Recorder(httpx.AsyncBaseTransport):
    """Loopback transport that records every request as ``(method, path, decoded JSON body)``."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[tuple[str, str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.sent.append((request.method, request.url.path, body))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def writes(self) -> list[tuple[str, Any]]:
        return [
            (path, body) for method, path, body in self.sent if method == "POST" and "/accounts/" not in path
        ]


async def another_tool(emulator: EaseeEmulator, requests: list[tuple[str, Any]]) -> list[int]:
    """Another client of the same account (an app, Home Assistant) logs in and POSTs ``(path, JSON body)``
    one after another; their HTTP statuses."""
    async with httpx.AsyncClient(base_url=emulator.url) as other:
        login = await other.post("/api/accounts/login", json={"userName": USER, "password": PASSWORD})
        auth = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        return [(await other.post(path, json=body, headers=auth)).status_code for path, body in requests]


def make_config(url: str, **overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "username": USER,
        "password": Secret(PASSWORD),
        "charger_id": CHARGER,
        "url": url,
        "timeout_s": 2.0,
        "retries": 1,
        **overrides,
    }
    return Config(**settings)


def circuit_settings(**overrides: Any) -> dict[str, Any]:
    return {"control": "circuit_current", "site_id": 1, "circuit_id": 2, **overrides}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(bundled_trace().start_s + NOON_S)


@pytest.fixture
def site(clock: FakeClock) -> SiteModel:
    return SiteModel(bundled_trace(), t_s=clock.t_s, clock=clock)


@pytest.fixture
async def emulator(site: SiteModel, clock: FakeClock) -> AsyncIterator[EaseeEmulator]:
    async with EaseeEmulator(site, clock=clock) as emu:
        yield emu


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def charger(
    emulator: EaseeEmulator, clock: FakeClock, recorder: Recorder
) -> AsyncIterator[EaseeCharger]:
    driver = EaseeCharger(make_config(emulator.url), name=NAME, clock=clock, transport=recorder)
    yield driver
    await driver.close()


def circuit_charger(
    emulator: EaseeEmulator, clock: FakeClock, recorder: Recorder, **overrides: Any
) -> EaseeCharger:
    config = make_config(emulator.url, **circuit_settings(**overrides))
    return EaseeCharger(config, name=NAME, clock=clock, transport=recorder)


def paths(emulator: EaseeEmulator) -> list[str]:
    return [path for _, _, path, _ in emulator.request_log]


def max_in_window(times: list[float], window_s: float = 60.0) -> int:
    """The most of ``times`` inside any half-open window of ``window_s`` (the emulator's sliding window)."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# -- pure: observations -------------------------------------------------------------------------


def obs(i: int, data_type: int, value: object) -> dict[str, object]:
    return {"id": i, "dataType": data_type, "value": value, "timestamp": "2026-09-02T10:00:00Z"}


def observations(
    op_mode: int, power_kw: float = 0.0, output_a: float = 16.0, currents: tuple[float, ...] | None = None
) -> dict[str, list[dict[str, object]]]:
    items = [obs(109, 4, op_mode), obs(120, 3, power_kw), obs(114, 3, output_a)]
    if currents is not None:
        items += [obs(183 + i, 3, a) for i, a in enumerate(currents)]
    return {"observations": items}


def test_observation_values_decode_by_data_type() -> None:
    parsed = parse_observations(
        {
            "observations": [
                obs(109, 4, "3"),  # SignalR-style string values are accepted too
                obs(120, 3, "7.36"),
                obs(114, 3, 16),
                obs(38, 4, 2.0),
                obs(48, 3, 10.5),
                obs(31, 2, "true"),  # id not used by the driver: left out
                obs(999, 7, {"x": 1}),  # unknown id with an unknown dataType: ignored
                obs(110, 4, 30),
                obs(111, 2, "1"),  # a boolean decodes as bool (a wrong dataType for 111, but typed)
                obs(112, 6, "sixteen"),
            ]
        }
    )
    assert parsed == {109: 3, 120: 7.36, 114: 16.0, 38: 2, 48: 10.5, 110: 30, 111: True, 112: "sixteen"}
    assert type(parsed[109]) is int and type(parsed[114]) is float


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "'observations' list"),
        ({"observations": {}}, "'observations' list"),
        ({"observations": [42]}, "expected objects"),
        ({"observations": [{"dataType": 4, "value": 1}]}, "integer 'id'"),
        ({"observations": [{"id": 109, "value": 1}]}, "dataType"),
        ({"observations": [obs(109, 4, 2.5)]}, "dataType 4 (integer)"),
        ({"observations": [obs(120, 3, True)]}, "dataType 3"),
        ({"observations": [obs(120, 3, "nan")]}, "not finite"),
        ({"observations": [obs(120, 3, "many")]}, "dataType 3"),
        ({"observations": [obs(111, 2, "maybe")]}, "dataType 2"),
        ({"observations": [obs(109, 6, 3)]}, "dataType 6"),
        ({"observations": [obs(109, 5, 3)]}, "unsupported dataType 5"),
    ],
)
def test_malformed_observations_name_the_problem(payload: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_observations(payload)


@pytest.mark.parametrize(
    ("op_mode", "iec", "connected", "charging"),
    [
        (0, IecState.F, False, False),  # Offline
        (1, IecState.A, False, False),  # Disconnected
        (2, IecState.B, True, False),  # AwaitingStart
        (3, IecState.C, True, True),  # Charging
        (4, IecState.B, True, False),  # Completed
        (5, IecState.F, True, False),  # Error
        (6, IecState.B, True, False),  # ReadyToCharge
        (7, IecState.B, True, False),  # AwaitingAuthentication
        (8, IecState.B, True, False),  # Deauthenticating
    ],
)
def test_op_mode_table(op_mode: int, iec: IecState, connected: bool, charging: bool) -> None:
    reading = reading_from_observations(parse_observations(observations(op_mode)), timestamp_s=5.0)
    assert (reading.iec_state, reading.connected, reading.charging) == (iec, connected, charging)
    assert reading.timestamp_s == 5.0


def test_kilowatts_become_watts_and_phases_come_from_the_phase_currents() -> None:
    three = reading_from_observations(
        parse_observations(observations(3, power_kw=7.36, output_a=10, currents=(10.2, 10.1, 9.9))),
        timestamp_s=1,
    )
    assert three.power_w == pytest.approx(7360.0)
    assert (three.current_a, three.phases, three.phase_currents_a) == (10.0, 3, (10.2, 10.1, 9.9))
    one = reading_from_observations(
        parse_observations(observations(3, power_kw=3.68, currents=(16.0, 0.4, 1.0))), timestamp_s=1
    )
    assert one.phases == 1  # only currents above 1 A count
    ramping = reading_from_observations(
        parse_observations(observations(3, currents=(0, 0, 0))), timestamp_s=1
    )
    assert ramping.phases == 0
    idle = reading_from_observations(
        parse_observations(observations(2, currents=(16, 16, 16))), timestamp_s=1
    )
    assert idle.phases == 0  # not charging: 0 whatever the currents say


@pytest.mark.parametrize(("output_phase", "phases"), [(10, 1), (13, 1), (21, 2), (30, 3), (0, 3), (None, 3)])
def test_without_phase_currents_the_output_phase_decides(output_phase: int | None, phases: int) -> None:
    payload = observations(3, power_kw=3.0)
    if output_phase is not None:
        payload["observations"].append(obs(110, 4, output_phase))
    reading = reading_from_observations(parse_observations(payload), timestamp_s=1)
    assert reading.phases == phases and reading.phase_currents_a is None


def test_power_noise_clamps_but_missing_or_negative_values_fail() -> None:
    assert (
        reading_from_observations(parse_observations(observations(2, power_kw=-0.02)), timestamp_s=1).power_w
        == 0
    )
    with pytest.raises(ValueError, match=r"120 \(totalPower\) is -1.0 kW"):
        reading_from_observations(parse_observations(observations(2, power_kw=-1.0)), timestamp_s=1)
    with pytest.raises(ValueError, match=r"114 \(outputCurrent\) is -2.0 A"):
        reading_from_observations(parse_observations(observations(2, output_a=-2)), timestamp_s=1)
    with pytest.raises(ValueError, match=r"unknown value 9"):
        reading_from_observations(parse_observations(observations(9)), timestamp_s=1)
    with pytest.raises(ValueError, match=r"120 \(totalPower\) missing"):
        reading_from_observations({109: 3, 114: 16.0}, timestamp_s=1)
    with pytest.raises(ValueError, match=r"114 \(outputCurrent\) missing"):
        reading_from_observations({109: 3, 120: 7.0}, timestamp_s=1)
    offline = reading_from_observations({109: 0}, timestamp_s=1)  # not charging: what is left out reads 0
    assert (offline.power_w, offline.current_a, offline.connected) == (0.0, 0.0, False)
    with pytest.raises(ValueError, match=r"109 \(chargerOpMode\) must be a number"):
        reading_from_observations({109: "3", 120: 0.0, 114: 16.0}, timestamp_s=1)


def test_retry_after_seconds_or_http_date() -> None:
    now = 1_790_000_000.0
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(" 2 ", now) == 2.0
    date = format_datetime(datetime.fromtimestamp(now + 90, UTC), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(90.0)
    past = format_datetime(datetime.fromtimestamp(now - 90, UTC), usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    for bad in (None, "", "soon", "-5", "nan", "inf"):
        assert parse_retry_after(bad, now) is None


# -- pure: token bucket -------------------------------------------------------------------------


def test_token_bucket_burst_refill_and_hold() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(2, 6.0, clock)  # 2 at once, then one per 10 s
    assert bucket.max_per_minute == 8
    assert bucket.try_take() == 0.0 and bucket.try_take() == 0.0
    assert bucket.try_take() == pytest.approx(10.0)  # refused: nothing taken
    assert bucket.wait_s(2) == pytest.approx(20.0)
    clock.advance(10)
    assert bucket.try_take() == 0.0
    clock.advance(3600)
    assert bucket.wait_s(2) == 0.0 and bucket.wait_s(3) == pytest.approx(10.0)  # capped at capacity
    bucket.hold_until(clock() + 45)  # a Retry-After of 45 s
    assert bucket.try_take() == pytest.approx(45.0)
    clock.advance(45)
    assert bucket.try_take() == 0.0 and bucket.try_take() > 0  # exactly one token at the Retry-After time
    clock.advance(-500)  # a clock stepping back adds nothing
    assert bucket.try_take() > 0
    with pytest.raises(ValueError):
        TokenBucket(0, 6.0, clock)
    with pytest.raises(ValueError):
        TokenBucket(1, 0.0, clock)


def test_token_bucket_holds_even_a_tiny_retry_after() -> None:
    """Found by hypothesis: a hold of 6e-8 s on a slow bucket was rounded away by the token tolerance."""
    clock = FakeClock(0.0)
    bucket = TokenBucket(1, 0.5, clock)
    bucket.hold_until(5.960464477539063e-08)
    assert bucket.try_take() > 0
    clock.advance(1e-7)
    assert bucket.try_take() == 0.0


def takes(budget: TokenBucket, clock: FakeClock, steps: list[tuple[float, float | None]]) -> list[float]:
    """Try a take after each ``(gap_s, Retry-After or None)`` step; the times of the takes let through,
    none of them before a Retry-After."""
    taken: list[float] = []
    held_until = -math.inf
    for gap, hold_s in steps:
        clock.advance(gap)
        if hold_s is not None:
            budget.hold_until(clock() + hold_s)
            held_until = max(held_until, clock() + hold_s)
        if budget.try_take() == 0.0:
            assert clock() >= held_until - 1e-9  # nothing before a Retry-After
            taken.append(clock())
    return taken


@given(
    capacity=st.integers(1, 4),
    per_minute=st.floats(0.5, 20),
    steps=st.lists(st.tuples(st.floats(0, 30), st.none() | st.floats(0, 120)), min_size=1, max_size=150),
)
def test_token_bucket_never_exceeds_its_budget_in_any_window(
    capacity: int, per_minute: float, steps: list[tuple[float, float | None]]
) -> None:
    clock = FakeClock(0.0)
    taken = takes(TokenBucket(capacity, per_minute, clock), clock, steps)
    for window_s in (10.0, 60.0, 300.0):
        assert max_in_window(taken, window_s) <= capacity + per_minute * window_s / 60 + 1e-6


def send(budget: RequestBudget) -> float:
    """Send one request answered at once if the budget lets it go now and return 0; otherwise send
    nothing and return the wait in s."""
    wait_s = budget.wait_s()
    if wait_s == 0.0:
        budget.begin()
        budget.end()
    return wait_s


def test_command_window_counts_requests_and_keeps_a_reserve() -> None:
    """The charger commands' budget as :class:`EaseeClient` builds it (``COMMAND_WINDOW``, no margin);
    answered at once, so a slot frees 61 s after the request was sent."""
    clock = FakeClock(1000.0)
    window = RequestBudget(2, 61.0, clock, margin_s=0.0)
    assert window.wait_s(2) == 0.0 and send(window) == 0.0
    assert window.wait_s(2) == pytest.approx(61.0)  # a reserve of one: not until the request has left
    clock.advance(10)
    assert send(window) == 0.0 and send(window) == pytest.approx(51.0)
    clock.advance(51)
    assert window.wait_s(1) == 0.0 and window.wait_s(2) == pytest.approx(10.0)
    assert window.wait_s(3) == math.inf
    window.hold_until(clock() + 30)  # a 429 with Retry-After: 30
    assert send(window) == pytest.approx(30.0)
    clock.advance(30)
    # the server counts more than the window knew: one slot at Retry-After, the next half a window later
    assert send(window) == 0.0 and window.wait_s(1) == pytest.approx(30.5)
    clock.advance(100)
    assert send(window) == 0.0 and send(window) == 0.0  # both in the window now
    window.hold_until(clock() + 20, refused=True)  # the second drew a 429: it did not go through
    assert send(window) == pytest.approx(20.0)
    clock.advance(20)
    # one slot at Retry-After (had the refused request counted: none before the first leaves, 41 s on);
    # the next when the first request leaves
    assert send(window) == 0.0 and window.wait_s(1) == pytest.approx(41.0)
    with pytest.raises(ValueError):
        RequestBudget(0, 60.0, clock)


def test_a_hold_counts_requests_in_flight_and_those_held_longer() -> None:
    """``hold_until`` never frees a slot the budget knew was taken: a request in flight keeps its slot
    until a window after it ends, one held beyond the Retry-After keeps its own."""
    clock = FakeClock(1000.0)
    budget = RequestBudget(3, 60.0, clock, margin_s=0.0)
    assert send(budget) == 0.0
    budget.begin()  # in flight
    budget.hold_until(clock() + 10)
    # held: 1010 (Retry-After), 1030 (the spaced slot), 1060 (the first request); and the one in flight
    # takes the next to free: one is free again only when the second frees
    assert budget.wait_s(reserved=True) == pytest.approx(30.0)
    clock.advance(5)
    budget.end()  # held until 1065
    clock.advance(25)
    assert send(budget) == 0.0 and budget.wait_s() == pytest.approx(30.0)  # the first leaves at 1060
    clock.advance(30)
    assert send(budget) == 0.0 and budget.wait_s() == pytest.approx(5.0)  # the one in flight at 1065


@given(
    limit=st.integers(1, 4),
    margin_s=st.sampled_from([0.0, 1.0]),
    steps=st.lists(
        st.tuples(st.floats(0, 30), st.none() | st.floats(0, 120), st.floats(0, 20)), min_size=1, max_size=100
    ),
)
def test_request_budget_never_exceeds_its_limit_in_any_window_whatever_the_latency(
    limit: int, margin_s: float, steps: list[tuple[float, float | None, float]]
) -> None:
    """After each ``(gap_s, Retry-After or None, latency_s)`` step a request is sent as soon as the
    budget lets it go, and answered ``latency_s`` later; others may be in flight meanwhile.  The server
    counts a request at any moment between sending and answer: no choice of those moments puts more
    than ``limit`` into one window of 61 s (half-open, as ``max_in_window``: with a margin of 1 s it
    holds every closed window of 60 s), and nothing is sent before a Retry-After."""
    clock = FakeClock(0.0)
    budget = RequestBudget(limit, 61.0 - margin_s, clock, margin_s=margin_s)
    sent: list[float] = []  # when each request was sent
    answered: list[float] = []  # when each request was answered (as the clock read then)
    answers: list[tuple[float, int]] = []  # (when, which) for the requests in flight
    held_until = -math.inf

    def advance(delay_s: float) -> None:  # answering the requests in flight on the way
        until = clock() + delay_s
        while answers and min(answers)[0] <= until:
            answers.remove(answer := min(answers))
            clock.advance(answer[0] - clock())
            budget.end()
            answered[answer[1]] = clock()
        clock.advance(until - clock())

    for gap_s, hold_s, latency_s in steps:
        advance(gap_s)
        if hold_s is not None:
            budget.hold_until(clock() + hold_s)
            held_until = max(held_until, clock() + hold_s)
        while (wait_s := budget.wait_s()) > 0:
            advance(wait_s)
        assert clock() >= held_until  # nothing before a Retry-After
        budget.begin()
        answers.append((clock() + latency_s, len(sent)))
        sent.append(clock())
        answered.append(math.inf)  # in flight
    for last_s in sent:  # the most a window ending with a request sent at last_s can hold (to 1 ns:
        # a slot frees at the instant end + 61 s, which float rounding may put a hair either side)
        window = [s for s, e in zip(sent, answered, strict=True) if s <= last_s and e > last_s - 61.0 + 1e-9]
        assert len(window) <= limit


# -- config ---------------------------------------------------------------------------------------


def test_config_validation_names_the_key() -> None:
    with pytest.raises(SettingError) as err:
        make_config("https://api.easee.com", control="circuit_current", circuit_id=2)
    assert err.value.key == "site_id"
    with pytest.raises(SettingError) as err:
        make_config("https://api.easee.com", control="circuit_current", site_id=1)
    assert err.value.key == "circuit_id"
    with pytest.raises(SettingError) as err:
        make_config("https://api.easee.com", phase_switching=True, site_id=1, circuit_id=2)
    assert err.value.key == "phase_switching"
    for url in ("ftp://api.easee.com", "https://user:pw@api.easee.com", "https://"):
        with pytest.raises(SettingError) as err:
            make_config(url)
        assert err.value.key == "url"
    for key, value in [("charger_id", "EH12/../x"), ("username", " "), ("site_id", 0)]:
        with pytest.raises(SettingError) as err:
            make_config("https://api.easee.com", **{key: value})
        assert err.value.key == key
    config = make_config("https://api.easee.com", **circuit_settings(phase_switching=True))
    driver = create(config, name=NAME, clock=lambda: 0.0)
    assert isinstance(driver, EaseeCharger) and driver.capabilities.phase_switching
    caps = create(make_config("https://api.easee.com"), name=NAME, clock=lambda: 0.0).capabilities
    assert (caps.current_step_a, caps.min_current_a, caps.max_current_a) == (1.0, 6, 32)
    assert not caps.phase_switching and not caps.on_off_only
    assert PASSWORD not in repr(config) + repr(driver) + str(config)


# -- driver against the emulator: reading ---------------------------------------------------------


async def test_login_then_read_maps_state_and_units(
    charger: EaseeCharger, emulator: EaseeEmulator, clock: FakeClock, recorder: Recorder
) -> None:
    first = await charger.read()
    # a fresh Easee holds no limit: the plugged-in car is offered 32 A on 3 phases and has not started yet
    assert (first.connected, first.charging, first.iec_state, first.current_a) == (
        True,
        False,
        IecState.B,
        32.0,
    )
    assert first.phases == 0 and first.timestamp_s == clock()
    clock.advance(20)  # the simulated car starts 15 s after the offer
    reading = await charger.read()
    assert (reading.charging, reading.iec_state, reading.phases) == (True, IecState.C, 3)
    assert reading.power_w == pytest.approx(32 * 3 * 230.0)  # totalPower kW → W
    assert reading.phase_currents_a == (32.0, 32.0, 32.0)
    assert paths(emulator) == [
        "/api/accounts/login",
        f"/state/{CHARGER}/observations?ids=109,120,114,48,38,110,111,112,113,183,184,185",
        f"/state/{CHARGER}/observations?ids=109,120,114,48,38,110,111,112,113,183,184,185",
    ]
    assert recorder.sent[0] == ("POST", "/api/accounts/login", {"userName": USER, "password": PASSWORD})
    assert not any("/api/chargers/" in p and p.endswith("/state") for p in paths(emulator))


async def test_unplugged_car_reads_state_a(
    emulator: EaseeEmulator, clock: FakeClock, site: SiteModel
) -> None:
    clock.advance(EVENING_S - NOON_S)
    driver = EaseeCharger(make_config(emulator.url), name=NAME, clock=clock)
    reading = await driver.read()
    await driver.close()
    assert (reading.connected, reading.charging, reading.iec_state, reading.power_w) == (
        False,
        False,
        IecState.A,
        0,
    )
    assert reading.current_a == 0.0


async def test_reads_inside_the_poll_interval_are_cached_with_their_timestamp(
    charger: EaseeCharger, emulator: EaseeEmulator, clock: FakeClock
) -> None:
    first = await charger.read()
    requests = emulator.requests
    for _ in range(2):
        clock.advance(7)
        assert await charger.read() is first  # 14 s < poll_interval_s 15 s: no request
    assert emulator.requests == requests
    clock.advance(1)
    fresh = await charger.read()
    assert fresh.timestamp_s == clock() and emulator.requests == requests + 1


async def test_removed_state_endpoint_answers_404(emulator: EaseeEmulator) -> None:
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        assert (await http.get(f"/api/chargers/{CHARGER}/state")).status_code == 404


async def test_token_expiry_mid_run_recovers_without_a_missed_read(
    charger: EaseeCharger, emulator: EaseeEmulator, clock: FakeClock
) -> None:
    await charger.read()
    emulator.expire_tokens()  # e.g. revoked server-side: access and refresh token both dead
    clock.advance(15)
    reading = await charger.read()
    assert reading.timestamp_s == clock()
    log = [(p.split("?")[0], s) for _, _, p, s in emulator.request_log][2:]
    observations_path = f"/state/{CHARGER}/observations"
    assert log == [
        (observations_path, 401),
        ("/api/accounts/refresh_token", 401),  # the refresh is refused too: fresh login
        ("/api/accounts/login", 200),
        (observations_path, 200),
    ]


async def test_token_is_refreshed_before_it_expires(site: SiteModel, clock: FakeClock) -> None:
    async with EaseeEmulator(site, clock=clock, token_lifetime_s=300) as emu:
        driver = EaseeCharger(make_config(emu.url), name=NAME, clock=clock)
        await driver.read()
        clock.advance(239)  # the refresh is due 60 s before expiry
        await driver.read()
        clock.advance(16)
        await driver.read()
        clock.advance(600)  # long past expiry: refresh still works with the refresh token
        await driver.read()
        await driver.close()
        assert [p.split("?")[0].rsplit("/", 1)[-1] for p in paths(emu)] == [
            "login",
            "observations",
            "observations",
            "refresh_token",
            "observations",
            "refresh_token",
            "observations",
        ]
        assert emu.count_403 == 0 and 401 not in [s for *_, s in emu.request_log]


def leaked(secrets: list[str], *texts: str) -> list[str]:
    everything = " ".join(texts)
    return [s for s in secrets if s and s in everything]


async def test_wrong_password_is_a_clear_error_without_the_password(
    emulator: EaseeEmulator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + PASSWORD
    driver = EaseeCharger(make_config(emulator.url, password=Secret(wrong)), name=NAME, clock=clock)
    with structlog.testing.capture_logs() as events, pytest.raises(DeviceProtocolError) as err:
        await driver.read()
    assert "login refused (HTTP 400): check charger.username and charger.password" in str(err.value)
    assert str(err.value).startswith(f"{NAME}: ")
    clock.advance(60)
    with pytest.raises(DeviceProtocolError, match="next login attempt in 240 s"):
        await driver.read()  # no new login attempt for a while: an account may get locked
    assert paths(emulator) == ["/api/accounts/login"]
    await driver.close()
    captured = capsys.readouterr()
    texts = [
        str(err.value),
        repr(err.value),
        caplog.text,
        repr(events),
        captured.out,
        captured.err,
        repr(driver),
    ]
    assert not leaked([wrong, PASSWORD], *texts)


async def test_tokens_and_password_never_reach_logs_errors_or_reprs(
    emulator: EaseeEmulator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        driver = EaseeCharger(make_config(emulator.url), name=NAME, clock=clock)
        await driver.read()
        await driver.apply(ChargerCommand(10, 3))
        emulator.expire_tokens()
        clock.advance(3600)
        await driver.read()  # 401 → refresh refused (401) → login
        clock.advance(3600)
        await driver.read()  # due: refresh
        emulator.fail_next = 5
        clock.advance(3600)
        with pytest.raises(DeviceUnavailable) as unavailable:
            await driver.read()
    await driver.close()
    captured = capsys.readouterr()
    assert len(emulator.issued_tokens) == 6  # three logins/refreshes, each an access and a refresh token
    assert any(e["event"] == "easee.refreshed" for e in events)
    texts = [str(unavailable.value), repr(unavailable.value), repr(events), caplog.text, captured.out]
    assert not leaked([PASSWORD, *emulator.issued_tokens], *texts, captured.err, repr(driver))


async def test_server_errors_are_retried_then_unavailable(
    charger: EaseeCharger, emulator: EaseeEmulator, clock: FakeClock
) -> None:
    emulator.fail_next = 1
    assert (await charger.read()).connected  # one 500 on the login, retried
    emulator.fail_next = 10
    clock.advance(15)
    with pytest.raises(DeviceUnavailable, match=r"HTTP 500 .*\(2 attempts\)"):
        await charger.read()


async def test_slow_cloud_is_unavailable(emulator: EaseeEmulator, clock: FakeClock) -> None:
    emulator.reply_delay_s = 1.5
    driver = EaseeCharger(make_config(emulator.url, timeout_s=1.0, retries=0), name=NAME, clock=clock)
    with pytest.raises(DeviceUnavailable, match="no answer within 1 s"):
        await driver.read()
    await driver.close()


async def test_unknown_charger_is_a_protocol_error(emulator: EaseeEmulator, clock: FakeClock) -> None:
    driver = EaseeCharger(make_config(emulator.url, charger_id="EH999999"), name=NAME, clock=clock)
    with pytest.raises(DeviceProtocolError, match="not found \\(HTTP 404\\): check charger_id"):
        await driver.read()
    await driver.close()


async def test_out_of_range_current_fails_before_any_request(
    charger: EaseeCharger, emulator: EaseeEmulator
) -> None:
    for amps in (5.9, 33.0):
        with pytest.raises(ValueError, match="neither 0 nor within 6–32 A"):
            await charger.apply(ChargerCommand(amps, 3))
    assert emulator.requests == 0


# -- driver against the emulator: writing ---------------------------------------------------------

DCC = COMMANDS + "set_dynamic_charger_current"
PAUSE, RESUME = COMMANDS + "pause_charging", COMMANDS + "resume_charging"


def three(amps: int, p2: int | None = None, p3: int | None = None) -> dict[str, int]:
    return {
        "dynamicCircuitCurrentP1": amps,
        "dynamicCircuitCurrentP2": amps if p2 is None else p2,
        "dynamicCircuitCurrentP3": amps if p3 is None else p3,
    }


def dcc(amps: int) -> tuple[str, dict[str, int]]:
    return (DCC, {"amps": amps, "minutes": 0})


async def test_charger_current_pauses_and_starts_by_the_dynamic_current_and_sends_only_changes(
    charger: EaseeCharger, emulator: EaseeEmulator, clock: FakeClock, recorder: Recorder, site: SiteModel
) -> None:
    await charger.apply(ChargerCommand(0, 3))
    assert recorder.writes() == [dcc(0)]  # 0 A pauses [E-amqp]
    assert site.state().offered_current_a == 0 and emulator.dynamic_charger_a == 0
    clock.advance(61)
    # no resume_charging: it would run the car at 32 A until the setpoint got through
    await charger.apply(ChargerCommand(10, 3))
    assert recorder.writes()[1:] == [dcc(10)]
    assert site.state().offered_current_a == 10 and emulator.dynamic_charger_a == 10
    clock.advance(61)
    await charger.apply(ChargerCommand(12.7, 3))  # whole amps: floored
    assert recorder.writes()[-1] == dcc(12)
    sent = len(recorder.writes())
    clock.advance(61)
    await charger.apply(ChargerCommand(12, 1))  # phases are not switchable here: nothing changed
    await charger.apply(ChargerCommand(12.4, 3))
    assert len(recorder.writes()) == sent
    await charger.apply(ChargerCommand(0, 3))
    await charger.apply(ChargerCommand(0, 3))
    assert recorder.writes()[sent:] == [dcc(0)]
    assert [p for p, _ in recorder.writes() if p != DCC] == []  # never pause, resume, start or stop


async def test_a_dynamic_current_lifts_a_pause_charging_left_by_someone_else(
    charger: EaseeCharger, emulator: EaseeEmulator, recorder: Recorder, site: SiteModel
) -> None:
    """pause_charging "limits dynamic charger current to 0" [GEN]: a current lifts it without a resume
    (e.g. the pause an older pvcharge left at exit)."""
    assert await another_tool(emulator, [(PAUSE, None)]) == [202]
    assert site.state().offered_current_a == 0
    await charger.apply(ChargerCommand(16, 3))
    assert recorder.writes() == [dcc(16)]
    assert site.state().offered_current_a == 16


async def test_circuit_current_always_sends_all_three_phases(
    emulator: EaseeEmulator, clock: FakeClock, recorder: Recorder, site: SiteModel
) -> None:
    driver = circuit_charger(emulator, clock, recorder)
    await driver.apply(ChargerCommand(16, 3))
    # the circuit first, then resume: a resumed car never sees an old circuit limit
    assert recorder.writes() == [(CIRCUIT, three(16)), (RESUME, None)]
    assert emulator.circuit_a == (16, 16, 16)
    assert (site.state().offered_current_a, site.state().offered_phases) == (16, 3)
    clock.advance(30)
    await driver.apply(ChargerCommand(10, 1))  # no phase switching configured: still all three at 10 A
    assert recorder.writes()[-1] == (CIRCUIT, three(10))
    # a pause is the circuit at 0 A: a resume cannot lift it, and it has the circuit's own budget
    await driver.apply(ChargerCommand(0, 3))
    assert recorder.writes()[-1] == (CIRCUIT, three(0)) and site.state().offered_current_a == 0
    clock.advance(30)
    await driver.apply(ChargerCommand(10, 3))  # resumed once already: only the circuit
    assert recorder.writes()[-1] == (CIRCUIT, three(10)) and len(recorder.writes()) == 5
    assert site.state().offered_current_a == 10
    driver.forget()  # e.g. a car plugged in: the charger's own pause is unknown again
    clock.advance(30)
    await driver.apply(ChargerCommand(8, 3))
    assert recorder.writes()[-2:] == [(CIRCUIT, three(8)), (RESUME, None)]
    assert site.state().offered_current_a == 8  # the circuit caps the 32 A the resume sets
    await driver.close()


async def test_phase_switching_through_the_circuit_phase_limits(
    emulator: EaseeEmulator, clock: FakeClock, recorder: Recorder, site: SiteModel
) -> None:
    driver = circuit_charger(emulator, clock, recorder, phase_switching=True)
    assert driver.capabilities.phase_switching
    await driver.apply(ChargerCommand(16, 1))
    assert recorder.writes()[0] == (CIRCUIT, three(16, 0, 0))
    assert (site.state().offered_current_a, site.state().offered_phases) == (16, 1)
    clock.advance(30)
    await driver.apply(ChargerCommand(8, 3))
    assert recorder.writes()[-1] == (CIRCUIT, three(8))
    assert (site.state().offered_current_a, site.state().offered_phases) == (8, 3)
    await driver.close()


async def test_min_write_interval_and_the_reserve_hold_increases_but_not_decreases_or_pauses(
    charger: EaseeCharger, emulator: EaseeEmulator, clock: FakeClock, recorder: Recorder
) -> None:
    assert COMMAND_WINDOW == (2, 61.0)
    await charger.apply(ChargerCommand(10, 3))  # one of the 2 commands a window allows
    clock.advance(10)
    with pytest.raises(WriteDeferred) as deferred:
        await charger.apply(ChargerCommand(12, 3))
    assert deferred.value.retry_after_s == pytest.approx(20.0)
    assert "min_write_interval_s 30 s" in deferred.value.message
    await charger.apply(ChargerCommand(8, 3))  # a decrease goes early, with the command held in reserve
    clock.advance(10)
    with structlog.testing.capture_logs() as events:
        await charger.apply(ChargerCommand(0, 3))  # so does a pause: commands spent, so by the setting
    assert [e["event"] for e in events if e["log_level"] != "debug"] == []  # routine: not logged above debug
    assert "easee.decrease_by_setting" in [e["event"] for e in events]
    assert recorder.writes()[-1] == (f"/api/chargers/{CHARGER}/settings", {"dynamicChargerCurrent": 0})
    clock.advance(35)  # t = 55 s, the min_write_interval_s is over
    with pytest.raises(WriteDeferred) as deferred:
        await charger.apply(ChargerCommand(6, 3))  # an increase keeps a command for a decrease
    assert "keeping one request for a decrease" in deferred.value.message
    assert deferred.value.retry_after_s == pytest.approx(10 + 61 - 55)  # both commands out of the window
    clock.advance(deferred.value.retry_after_s)
    await charger.apply(ChargerCommand(6, 3))
    assert [p for p, _ in recorder.writes()] == [DCC, DCC, f"/api/chargers/{CHARGER}/settings", DCC]
    assert emulator.dynamic_charger_a == 6 and emulator.count_429 == 0


@pytest.mark.parametrize("control", ["charger_current", "circuit_current"])
async def test_a_burst_of_commands_is_deferred_and_never_draws_a_429(
    control: str, emulator: EaseeEmulator, clock: FakeClock, recorder: Recorder
) -> None:
    settings = circuit_settings(phase_switching=True) if control == "circuit_current" else {}
    driver = EaseeCharger(make_config(emulator.url, **settings), name=NAME, clock=clock, transport=recorder)
    rng = random.Random(3)
    deferred = 0
    start = clock()
    for _ in range(300):  # a new command every second for 5 minutes
        command = ChargerCommand(rng.choice([0, 6, 8, 10, 13, 16, 20, 32]), rng.choice([1, 3]))
        try:
            await driver.apply(command)
        except WriteDeferred as exc:
            deferred += 1
            assert exc.retry_after_s > 0
        clock.advance(1)
    await driver.close()
    assert emulator.count_429 == 0 and emulator.count_403 == 0
    assert deferred > 200
    writes = [(t, p) for t, m, p, _ in emulator.request_log if m == "POST" and "/accounts/" not in p]
    commands = [t for t, p in writes if "/commands/" in p]
    circuit = [t for t, p in writes if p == CIRCUIT]
    settings = [t for t, p in writes if p.endswith("/settings") and p != CIRCUIT]
    assert max_in_window(commands, 61) <= 2 and max_in_window(circuit) <= 2 + 8  # COMMAND_WINDOW, BUDGETS
    assert max_in_window(settings) <= 2 + 8
    assert BUDGETS["charger_settings"] == (2, 8.0) and BUDGETS["circuit_settings"] == (2, 8.0)
    assert len(writes) <= (2 + 8 + 2 + 8) * 5 + 2 * 5  # far below the 300 the caller wanted
    assert all(start <= t <= clock() for t, _ in writes)


async def test_429_retry_after_is_honoured(site: SiteModel, clock: FakeClock, recorder: Recorder) -> None:
    async with EaseeEmulator(site, clock=clock, settings_per_min=2) as emu:  # tighter than the driver's 10
        driver = circuit_charger(emu, clock, recorder)
        await driver.apply(ChargerCommand(16, 3))
        clock.advance(8)
        await driver.apply(ChargerCommand(14, 3))
        clock.advance(8)
        with structlog.testing.capture_logs() as events, pytest.raises(WriteDeferred) as deferred:
            await driver.apply(ChargerCommand(12, 3))  # the third circuit write within 60 s
        assert emu.count_429 == 1 and deferred.value.retry_after_s == 44  # Retry-After: 44
        assert "HTTP 429" in deferred.value.message
        assert [e["event"] for e in events if e["log_level"] == "warning"] == ["easee.rate_limited"]
        requests = emu.requests
        clock.advance(20)
        with pytest.raises(WriteDeferred) as deferred:
            await driver.apply(ChargerCommand(12, 3))
        assert deferred.value.retry_after_s == pytest.approx(24.0) and emu.requests == requests  # not sent
        clock.advance(24)
        await driver.apply(ChargerCommand(12, 3))
        assert emu.circuit_a == (12, 12, 12) and emu.count_429 == 1
        await driver.close()


class InTransit(Recorder):
    """A recorder whose next command requests take ``delays_s`` (one each, in order) to reach the
    server: the fake clock moves that much before the request arrives."""

    def __init__(self, clock: FakeClock, delays_s: list[float]) -> None:
        super().__init__()
        self.clock = clock
        self.delays_s = delays_s

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "/commands/" in request.url.path and self.delays_s:
            self.clock.advance(self.delays_s.pop(0))
        return await super().handle_async_request(request)


async def test_a_command_holds_its_slot_a_window_after_its_answer(site: SiteModel, clock: FakeClock) -> None:
    """Easee counts a command when it arrives.  One 20 s in transit and one right after it arrive
    together; counted from sending, a third would go 61 s after the first was sent, 41 s after both
    arrived, and draw a 429 from a cloud allowing 2 a minute.  Counted from the answer, it waits."""
    async with EaseeEmulator(site, clock=clock, commands_per_min=2) as emu:
        client = EaseeClient(
            name=NAME,
            base_url=emu.url,
            username=USER,
            password=Secret(PASSWORD),
            charger_id=CHARGER,
            timeout_s=30.0,
            retries=0,
            clock=clock,
            transport=InTransit(clock, [20.0]),
        )
        start = clock()
        for _ in range(2):
            response = await client.request("commands", "POST", DCC, {"amps": 6, "minutes": 0})
            assert response.status_code == 202
        clock.advance(start + 61 - clock())
        wait_s = client.wait_s("commands")
        assert wait_s == pytest.approx(20.0)  # before: 0, and the command drew a 429
        clock.advance(wait_s)
        assert (await client.request("commands", "POST", DCC, {"amps": 8, "minutes": 0})).status_code == 202
        commands = [t for t, _, p, _ in emu.request_log if "/commands/" in p]
        assert len(commands) == 3 and max_in_window(commands) <= 2 and emu.count_429 == 0
        await client.close()


async def test_a_read_refused_with_429_is_rate_limited_until_retry_after(
    charger: EaseeCharger, emulator: EaseeEmulator, clock: FakeClock
) -> None:
    await charger.read()  # logged in
    clock.advance(15)
    emulator.faults.set(Fault.HTTP_429, retry_after_s=40)
    with pytest.raises(RateLimited, match="HTTP 429") as limited:
        await charger.read()
    assert limited.value.retry_after_s == 40 and str(limited.value).startswith(f"{NAME}: ")
    emulator.faults.clear()
    received = len(emulator.received)
    clock.advance(15)
    with pytest.raises(RateLimited, match="not sent") as limited:
        await charger.read()
    assert limited.value.retry_after_s == pytest.approx(25.0) and len(emulator.received) == received
    clock.advance(25)
    assert (await charger.read()).timestamp_s == clock()


async def test_ip_block_stops_every_request_and_is_logged_once(
    charger: EaseeCharger, emulator: EaseeEmulator, clock: FakeClock
) -> None:
    await charger.read()  # logged in
    # another tool on the same network hammers the API until Easee blocks the IP
    statuses = await another_tool(emulator, [(PAUSE, None)] * 20)
    assert statuses == [202] * 10 + [429] * 5 + [403] * 5
    requests = emulator.requests
    with structlog.testing.capture_logs() as events:
        with pytest.raises(WritesBlocked) as blocked:
            await charger.apply(ChargerCommand(10, 3))
        assert emulator.requests == requests + 1  # the one request that met the 403
        for amps in (6, 8, 0):
            clock.advance(60)
            with pytest.raises(WritesBlocked):
                await charger.apply(ChargerCommand(amps, 3))
            with pytest.raises(DeviceUnavailable, match="blocked"):
                await charger.read()
    assert emulator.requests == requests + 1  # nothing more was sent
    assert "HTTP 403" in blocked.value.message and BLOCKED_TEXT[:40] in blocked.value.message
    assert "sends nothing more" in blocked.value.message
    errors = [e for e in events if e["log_level"] == "error"]
    assert len(errors) == 1 and errors[0]["event"] == "easee.ip_blocked" and errors[0]["device"] == NAME
    assert "contact Easee" in errors[0]["action"] and "other tools" in errors[0]["action"]


# -- emulator details -----------------------------------------------------------------------------


async def test_emulator_circuit_settings_and_commands(emulator: EaseeEmulator, site: SiteModel) -> None:
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        login = await http.post("/api/accounts/login", json={"userName": USER, "password": PASSWORD})
        assert login.json()["expiresIn"] == 3600 and login.json()["tokenType"] == "Bearer"
        auth = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        reply = await http.post(CIRCUIT, json={"dynamicCircuitCurrentP1": 10.9}, headers=auth)
        assert reply.status_code == 202 and reply.json()[0]["device"] == CHARGER
        assert emulator.circuit_a == (10, 0, 0)  # floored; the omitted phases went to 0
        assert (site.state().offered_current_a, site.state().offered_phases) == (10, 1)
        assert (await http.post(CIRCUIT, json=three(10, 0, 0), headers=auth)).status_code == 200  # unchanged
        assert (await http.post(CIRCUIT, json={"maxCircuitCurrentP1": 16}, headers=auth)).status_code == 400
        assert (await http.post(CIRCUIT, json=three(81), headers=auth)).status_code == 400
        assert (await http.post(CIRCUIT, json=three(16))).status_code == 401
        assert (
            await http.post("/api/sites/9/circuits/2/settings", json=three(16), headers=auth)
        ).status_code == 404
        assert (await http.post(DCC, json={"amps": 40}, headers=auth)).status_code == 400
        assert (await http.post(DCC, content=b"{", headers=auth)).status_code == 400
        assert (await http.post(COMMANDS + "reboot", headers=auth)).status_code == 404
        settings = f"/api/chargers/{CHARGER}/settings"
        for bad in ({"maxCircuitCurrentP1": 16}, {"phaseMode": 4}, {"maxChargerCurrent": 5}, {"enabled": 1}):
            assert (await http.post(settings, json=bad, headers=auth)).status_code == 400, bad
        assert (
            await http.post(settings, json={"phaseMode": 2}, headers=auth)
        ).status_code == 200  # unchanged
        writes = emulator.writes
        for command in ("start_charging", "stop_charging"):  # accepted, no effect without authorization
            assert (await http.post(COMMANDS + command, headers=auth)).status_code == 202
        assert site.state().offered_current_a == 10
        stale = {"accessToken": "x", "refreshToken": login.json()["refreshToken"]}
        assert (await http.post("/api/accounts/refresh_token", json=stale)).status_code == 401
        bad = await http.post("/api/accounts/login", json={"userName": USER, "password": "nope"})
        assert bad.status_code == 400  # as the cloud answers a wrong login
    assert writes == 3 and emulator.writes == 5  # two circuit settings (one unchanged), a charger setting
    # (unchanged), start and stop


@pytest.mark.parametrize(("share", "statuses"), [(True, [202, 202, 429, 429]), (False, [202, 202, 202, 202])])
async def test_emulator_counts_all_commands_of_a_charger_together_by_default(
    site: SiteModel, clock: FakeClock, share: bool, statuses: list[int]
) -> None:
    async with EaseeEmulator(site, clock=clock, commands_per_min=2, commands_share_budget=share) as emu:
        sent = await another_tool(
            emu, [(PAUSE, None), (RESUME, None), (DCC, {"amps": 10}), (DCC, {"amps": 8})]
        )
    assert sent == statuses
    assert emu.dynamic_charger_a == (8 if not share else 32)  # the resume reset it to the maximum


def test_emulator_refuses_non_loopback_host(site: SiteModel) -> None:
    with pytest.raises(ValueError, match="loopback"):
        EaseeEmulator(site, host="192.168.1.10")


# -- a variable PV hour through the real controller -----------------------------------------------


def cloudy_hour(start_s: float) -> Trace:
    """70 minutes of PV that jumps between 6–9 kW sun and 0.8–2.5 kW cloud; 400 W house load."""
    rng = random.Random(5)
    pv: list[float] = []
    cloudy = False
    for _ in range(70):
        if rng.random() < 0.35:
            cloudy = not cloudy
        pv.append(rng.uniform(800, 2500) if cloudy else rng.uniform(6000, 9000))
    times = tuple(start_s + 60.0 * i for i in range(70))
    return Trace("cloudy-hour", times, tuple(pv), (400.0,) * 70, utc_offset_s=0, step_s=60.0)


def power_of(command: ChargerCommand) -> float:
    return command.current_a * command.phases


@pytest.mark.parametrize("commands_per_min", [10, 2])
@pytest.mark.parametrize(
    ("settings", "phases"),
    [({}, 3), (circuit_settings(phase_switching=True), "auto")],
    ids=["charger_current-3p", "circuit_current-1p3p"],
)
async def test_variable_pv_hour_through_the_controller_draws_no_429(
    settings: dict[str, Any], phases: Any, commands_per_min: int
) -> None:
    """Also against a cloud allowing only 2 commands a minute: no 429, and the charger never offers more
    power than the controller wants for longer than 15 s."""
    start = 1_790_000_000.0 - 1_790_000_000.0 % 60
    clock = FakeClock(start)
    car = CarParams(plug_in_s=0.0, plug_out_s=86400.0, soc_start_pct=20.0)
    site = SiteModel(cloudy_hour(start), t_s=start, clock=clock, battery=None, car=car)
    control = ControlConfig(
        interval_s=5,
        cloud_filter=30,
        min_on_s=60,
        min_off_s=60,
        up_energy_wh=2,
        down_energy_wh=1,
        grid_tolerance_s=30,
        phase_window_s=120,
        phase_switch_gain_wh=10,
        phase_switch_interval_s=120,
        phase_switches_per_hour=10,
    )
    sent: list[tuple[float, ChargerCommand]] = []
    wanted: list[tuple[float, float]] = []  # (t_s, W per 230 V: current × phases)
    deferred = read_failures = 0
    async with EaseeEmulator(
        site, clock=clock, token_lifetime_s=900, commands_per_min=commands_per_min
    ) as emu:
        driver = EaseeCharger(make_config(emu.url, **settings), name=NAME, clock=clock)
        controller = Controller(
            control, ChargePoint(max_current_a=16, phases=phases), capabilities=driver.capabilities
        )
        applied: ChargerCommand | None = None
        for cycle in range(720):  # one hour, a cycle every 5 simulated seconds
            now = clock()
            if cycle == 360:
                emu.expire_tokens()  # tokens revoked mid-run
            state = site.state()
            meter = SiteReading(state.grid_power_w, state.pv_power_w, 0.0, None, timestamp_s=now)
            reading: ChargerReading | None
            try:
                reading = await driver.read()
            except DeviceError:
                read_failures += 1
                reading = None
            command = controller.step(now, meter, reading).command
            wanted.append((now, power_of(command)))
            if command != applied:
                try:
                    await driver.apply(command)
                except WriteDeferred:
                    deferred += 1
                else:
                    applied = command
                    sent.append((now, command))
            clock.advance(5)
        await driver.close()
    assert emu.count_429 == 0 and emu.count_403 == 0
    assert longest_above_s([(t, a * p, 1) for t, a, p in emu.offers], wanted) <= 15
    assert read_failures == 0  # token expiry and refreshes cost no cycle
    log = list(emu.request_log)
    writes = [t for t, m, p, _ in log if m == "POST" and "/accounts/" not in p]
    assert len(writes) == emu.writes
    commands = [t for t, _, p, _ in log if "/commands/" in p]
    circuit = [t for t, _, p, _ in log if p == CIRCUIT]
    polls = [t for t, _, p, _ in log if p.startswith("/state/")]
    assert max_in_window(commands, 61) <= 2 and max_in_window(circuit) <= 10 and max_in_window(polls) <= 6
    assert len(polls) <= 3600 / 15 + 1
    # an increase waits min_write_interval_s (30 s) after the previous write; decreases and pauses need not
    for (t0, c0), (t1, c1) in itertools.pairwise(sent):
        if power_of(c1) > power_of(c0):
            assert t1 - t0 >= 30, (t0, c0, t1, c1)
    # the controller wanted many changes, the car charged, and PV paid for most of it
    assert len(sent) >= 15 and deferred > 0, (len(sent), deferred)
    assert site.energy.car_wh > 2000
    assert site.energy.pv_to_car_wh > 0.6 * site.energy.car_wh, site.energy
    if phases == "auto":
        assert {c.phases for _, c in sent} == {1, 3}


async def test_a_read_and_a_write_at_once_refresh_the_token_once(site: SiteModel, clock: FakeClock) -> None:
    """The daemon may apply while a slow read is still running (the read rolls over to the next cycle):
    when the token is due, only one of them refreshes it; the other waits and uses the new one (two
    refreshes with one refresh token: the second is refused and costs a login)."""
    async with EaseeEmulator(site, clock=clock, token_lifetime_s=300) as emu:
        driver = EaseeCharger(make_config(emu.url), name=NAME, clock=clock)
        await driver.read()
        clock.advance(255)  # the refresh is due
        emu.reply_delay_s = 0.05
        await asyncio.gather(driver.read(), driver.apply(ChargerCommand(10, 1)))
        await driver.close()
        ends = [p.split("?")[0].rsplit("/", 1)[-1] for p in paths(emu)]
        assert (ends.count("login"), ends.count("refresh_token")) == (1, 1), ends
        assert 401 not in [s for *_, s in emu.request_log]


# -- never above the command, whatever the cloud answers (issue 12) --------------------------------


class Exit:
    """What pvcharge's exit did: the ``stopped`` log line's ``charger_left`` and the charger's current."""

    def __init__(self, charger_left: str, offered_a: float) -> None:
        self.charger_left, self.offered_a = charger_left, offered_a


async def run_wanted(
    driver: EaseeCharger, emu: EaseeEmulator, clock: FakeClock, wanted: list[float], *, cycle_s: float = 5
) -> tuple[list[tuple[float, float]], Exit]:
    """Drive ``driver`` as the daemon does (``Daemon._apply``/``_shutdown``): every ``cycle_s`` the wanted
    current of that cycle, offered again while deferred; at the end the exit pause, skipped when the last
    command the charger took was a pause.  Returns ``(t_s, wanted A)`` per cycle and the exit."""
    history: list[tuple[float, float]] = []
    applied: float | None = None
    for amps in wanted:
        history.append((clock(), amps))
        if amps != applied:
            try:
                await driver.apply(ChargerCommand(amps, 3))
            except WriteDeferred:
                pass
            except DeviceError:
                applied = None
            else:
                applied = amps
        clock.advance(cycle_s)
    if applied == 0:
        charger_left = "paused"
    else:
        try:
            await driver.apply(ChargerCommand(0, 3))
            charger_left = "paused"
        except DeviceError:
            charger_left = "unknown: pause failed"
    await driver.close()
    return history, Exit(charger_left, emu.offers[-1][1])


def longest_above_s(offers: list[tuple[float, float, int]], history: list[tuple[float, float]]) -> float:
    """The longest time the charger offered more than was wanted, from the emulator's record of what it
    offered and the wanted current of each cycle (both on the shared clock), in 1-s steps."""
    longest = above_since = None
    end = history[-1][0] + 5
    t = history[0][0]
    while t <= end:
        offered = [a for s, a, _ in offers if s <= t][-1]
        wanted = [a for s, a in history if s <= t][-1]
        if offered > wanted:
            above_since = t if above_since is None else above_since
            longest = max(longest or 0.0, t - above_since)
        else:
            above_since = None
        t += 1
    return longest or 0.0


async def test_a_start_refused_by_a_strict_cloud_never_leaves_the_car_above_the_command(
    site: SiteModel, clock: FakeClock
) -> None:
    """Issue 12: a cloud allowing 2 commands a minute for the charger.  A start used to be
    ``resume_charging`` (which sets 32 A) then ``set_dynamic_charger_current``: the second one drew a 429,
    the car ran at 32 A while pvcharge wanted 16 A and then 0 A (the pause waited behind the start's
    Retry-After), and at exit the log said ``paused`` over a charger at 32 A."""
    wanted = [0.0] * 2 + [16.0] * 6 + [0.0] * 12 + [16.0] * 4 + [0.0] * 2 + [16.0] * 3
    async with EaseeEmulator(site, clock=clock, commands_per_min=2) as emu:
        driver = EaseeCharger(make_config(emu.url), name=NAME, clock=clock)
        history, left = await run_wanted(driver, emu, clock, wanted)
    assert longest_above_s(emu.offers, history) <= 15, (emu.offers, emu.request_log)
    assert max(a for _, a, _ in emu.offers[1:]) <= 16  # never the 32 A of a resume
    assert left.charger_left != "paused" or left.offered_a == 0, (left.charger_left, emu.offers)


async def test_a_decrease_refused_with_429_goes_by_the_setting_at_once(
    site: SiteModel, clock: FakeClock, recorder: Recorder
) -> None:
    """Another tool spent the charger's commands: the decrease is not held until Retry-After."""
    async with EaseeEmulator(site, clock=clock, commands_per_min=2) as emu:
        driver = EaseeCharger(make_config(emu.url), name=NAME, clock=clock, transport=recorder)
        await driver.apply(ChargerCommand(16, 3))
        assert await another_tool(emu, [(DCC, {"amps": 16})]) == [202]
        clock.advance(5)
        await driver.apply(ChargerCommand(6, 3))
        assert [p for p, _ in recorder.writes()] == [DCC, DCC, f"/api/chargers/{CHARGER}/settings"]
        assert emu.count_429 == 1 and site.state().offered_current_a == 6
        await driver.close()


async def test_circuit_current_a_refused_resume_leaves_a_paused_charger_paused(
    site: SiteModel, clock: FakeClock, recorder: Recorder
) -> None:
    """Paused by the circuit (0 A), the charger's own pause unknown; another tool spent the commands: the
    start's resume gets a 429.  The circuit must not be opened before the resume got through: the
    daemon still counts the pause as the last command the charger took, and leaves it at that at exit."""
    async with EaseeEmulator(site, clock=clock, commands_per_min=2) as emu:
        driver = circuit_charger(emu, clock, recorder)
        await driver.apply(ChargerCommand(0, 3))
        assert emu.circuit_a == (0, 0, 0) and site.state().offered_current_a == 0
        assert await another_tool(emu, [(DCC, {"amps": 32})] * 2) == [202, 202]
        clock.advance(31)
        with pytest.raises(WriteDeferred):
            await driver.apply(ChargerCommand(16, 3))
        assert emu.count_429 == 1
        assert site.state().offered_current_a == 0, recorder.writes()  # still the pause it last took
        clock.advance(31)
        await driver.apply(ChargerCommand(16, 3))
        assert site.state().offered_current_a == 16
        assert recorder.writes()[-2:] == [(RESUME, None), (CIRCUIT, three(16))]
        await driver.close()


class NoSettingsEmulator(EaseeEmulator):
    """A cloud without ``POST /api/chargers/{id}/settings`` (as some emulators are)."""

    async def _charger_settings(self, request: web.Request) -> web.Response:
        return web.json_response({"title": "Not Found", "status": 404}, status=404)


async def test_without_the_setting_a_decrease_waits_for_the_commands_and_says_so_once(
    site: SiteModel, clock: FakeClock, recorder: Recorder
) -> None:
    async with NoSettingsEmulator(site, clock=clock, commands_per_min=2) as emu:
        driver = EaseeCharger(make_config(emu.url), name=NAME, clock=clock, transport=recorder)
        await driver.apply(ChargerCommand(16, 3))
        clock.advance(5)
        await driver.apply(ChargerCommand(10, 3))
        clock.advance(5)
        with structlog.testing.capture_logs() as events:
            for _ in range(3):
                with pytest.raises(WriteDeferred) as deferred:
                    await driver.apply(ChargerCommand(0, 3))
                clock.advance(5)
        assert "setting was refused (HTTP 404" in deferred.value.message
        assert [e["event"] for e in events if e["log_level"] == "warning"] == ["easee.setting_refused"]
        settings_path = f"/api/chargers/{CHARGER}/settings"
        assert [p for p, _ in recorder.writes()] == [DCC, DCC, settings_path]  # tried once
        clock.advance(deferred.value.retry_after_s)
        await driver.apply(ChargerCommand(0, 3))
        assert recorder.writes()[-1] == dcc(0) and site.state().offered_current_a == 0
        await driver.close()


@pytest.mark.parametrize("control", ["charger_current", "circuit_current"])
@pytest.mark.parametrize("seed", range(4))
async def test_whatever_a_strict_cloud_answers_the_car_is_never_above_the_command_for_15_s(
    control: str, seed: int, site: SiteModel, clock: FakeClock
) -> None:
    """Random commands every 5 s for 15 minutes against a cloud allowing 2 commands a minute: the charger
    runs above what pvcharge wants for at most 15 s (one cycle here), and an exit that says ``paused``
    left it paused."""
    rng = random.Random(seed)
    wanted: list[float] = []
    while len(wanted) < 180:
        wanted += [float(rng.choice([0, 0, 6, 8, 10, 13, 16, 20, 32]))] * rng.randint(1, 8)
    settings = circuit_settings() if control == "circuit_current" else {}
    async with EaseeEmulator(site, clock=clock, commands_per_min=2) as emu:
        driver = EaseeCharger(make_config(emu.url, **settings), name=NAME, clock=clock)
        history, left = await run_wanted(driver, emu, clock, wanted)
    assert longest_above_s(emu.offers, history) <= 15, (emu.offers, emu.request_log)
    assert left.charger_left == "paused" and left.offered_a == 0
    assert emu.count_403 == 0


class SiteMeter:
    """The simulated site's meter, read in process (the meter is not under test here)."""

    name = "meter site"

    def __init__(self, site: SiteModel, clock: FakeClock) -> None:
        self.site, self.clock = site, clock

    async def read(self) -> SiteReading:
        state = self.site.state()
        return SiteReading(state.grid_power_w, state.pv_power_w, 0.0, None, timestamp_s=self.clock())

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("control", ["charger_current", "circuit_current"])
async def test_the_daemon_against_a_strict_cloud_never_leaves_the_car_above_its_command(control: str) -> None:
    """The whole loop (controller, daemon, driver) through a cloudy hour against a cloud allowing 2
    commands a minute, then stopped: at most 15 s above what the controller wanted, and the ``stopped``
    line says ``paused`` only over a paused charger."""
    start = 1_790_000_000.0 - 1_790_000_000.0 % 60
    clock = FakeClock(start)
    car = CarParams(plug_in_s=0.0, plug_out_s=86400.0, soc_start_pct=20.0)
    site = SiteModel(cloudy_hour(start), t_s=start, clock=clock, battery=None, car=car)
    wanted: list[tuple[float, float]] = []

    async def sleep(delay_s: float) -> None:
        clock.advance(delay_s)

    async with EaseeEmulator(site, clock=clock, commands_per_min=2) as emu:
        circuit = (
            ", control: circuit_current, site_id: 1, circuit_id: 2" if control == "circuit_current" else ""
        )
        config = parse_config(
            "meter: {type: huawei, host: 127.0.0.1}\n"
            f"charger: {{type: easee, url: '{emu.url}', username: {USER}, password: {PASSWORD}, "
            f"charger_id: {CHARGER}{circuit}}}\n"
            "control: {interval_s: 5, cloud_filter: 30, min_on_s: 60, min_off_s: 60}\n"
        )
        driver = EaseeCharger(config.charger.settings, name=NAME, clock=clock)
        daemon = Daemon(config, SiteMeter(site, clock), driver, clock=clock, sleep=sleep)
        daemon.on_cycle = lambda cycle: wanted.append((cycle.now, power_of(cycle.decision.command)))
        with structlog.testing.capture_logs() as events:
            await daemon.run(max_cycles=600)
    assert daemon.stats.starts >= 2 and daemon.stats.charger_writes >= 10, daemon.stats
    assert longest_above_s([(t, a * p, 1) for t, a, p in emu.offers], wanted) <= 15, emu.offers
    (stopped,) = [e for e in events if e["event"] == "stopped"]
    assert stopped["charger_left"] != "paused" or emu.offers[-1][1] == 0, (stopped, emu.offers[-1])
