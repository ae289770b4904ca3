"""The AlphaESS wallbox driver (on/off over the Open API): pure mapping, and against the emulator.

Device facts under test: reference chargers.md §2.1 (wallbox endpoints, ``evchargerStatus`` table, the
HA integration's start/stop rule, rate limits) and §2.3 (emulator checklist); signing and envelope as
in meters.md §3.  Time is a shared fake clock that the simulated site follows, so poll and write
intervals, the car's start delay and a few hours of a PV day run in seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from sitestub import FakeClock

from pvcharge.chargers import CHARGER_TYPES
from pvcharge.chargers.alphaess import (
    CAPABILITIES,
    STATUSES,
    AlphaEssWallbox,
    Config,
    create,
    parse_pev,
    parse_status,
    pick_wallbox,
    to_reading,
)
from pvcharge.clients.alphaess_account import OpenApiAccount
from pvcharge.clients.alphaess_api import sign
from pvcharge.config import parse_config
from pvcharge.control import ChargePoint, ControlConfig, Controller
from pvcharge.errors import DeviceError, DeviceProtocolError, DeviceUnavailable, RateLimited, WriteDeferred
from pvcharge.meters.alphaess import Config as MeterConfig
from pvcharge.meters.alphaess import create as create_meter
from pvcharge.readings import ChargerCommand, IecState, SiteReading
from pvcharge.settings import Secret, SettingError
from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.alphaess_wallbox import FINISHING_S
from pvcharge.sim.faults import Fault
from pvcharge.sim.site import BatteryParams, CarParams, SiteModel
from pvcharge.sim.trace import Trace, bundled_trace

NAME = "charger alphaess-test"
APP_ID = "alpha3f1c0e2b"
APP_SECRET = "b5d0c7e4a1f94e2c"
SYS_SN = "AL2002321010043"
EV_SN = "EV1102321010043"
NOON_S = 12 * 3600
START = ChargerCommand(16, 3)
STOP = ChargerCommand(0, 3)
FIXED_W = 16 * 3 * 230  #: the emulated wallbox's default: 16 A on 3 phases


def make_site(clock: FakeClock, trace: Trace | None = None, **site: Any) -> SiteModel:
    """The site at the clock's time, following it (so the car's delays play out as the clock moves)."""
    return SiteModel(trace or bundled_trace(), t_s=clock(), clock=clock, **site)


def make_emulator(site: SiteModel, clock: FakeClock, **options: Any) -> AlphaEssEmulator:
    # an account allowing 5 requests in any 10 s (two GETs per wallbox poll, three on the first), and
    # POSTs at least 10 s apart
    settings: dict[str, Any] = {"window_s": 10.0, "requests_per_window": 5, "min_write_interval_s": 10.0}
    settings |= options
    return AlphaEssEmulator(
        site, app_id=APP_ID, app_secret=APP_SECRET, sys_sn=SYS_SN, evcharger_sn=EV_SN, clock=clock, **settings
    )


def make_wallbox(
    url: str, clock: Callable[[], float], account: OpenApiAccount | None = None, **config: Any
) -> AlphaEssWallbox:
    settings: dict[str, Any] = {
        "sys_sn": SYS_SN,
        "app_id": APP_ID,
        "app_secret": Secret(APP_SECRET),
        "url": url,
        "timeout_s": 1.0,
        "retries": 1,
        "backoff_s": 0.01,
        **config,
    }
    return create(Config(**settings), name=NAME, clock=clock, account=account)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(bundled_trace().start_s + NOON_S)


@pytest.fixture
def site(clock: FakeClock) -> SiteModel:
    return make_site(clock)


@pytest.fixture
async def emulator(site: SiteModel, clock: FakeClock) -> AsyncIterator[AlphaEssEmulator]:
    async with make_emulator(site, clock) as emu:
        yield emu


@pytest.fixture
async def wallbox(emulator: AlphaEssEmulator, clock: FakeClock) -> AsyncIterator[AlphaEssWallbox]:
    driver = make_wallbox(emulator.url, clock)
    yield driver
    await driver.close()


@pytest.fixture
async def http(emulator: AlphaEssEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emulator.url + "/") as client:
        yield client


def signed(clock: FakeClock, secret: str = APP_SECRET) -> dict[str, str]:
    stamp = str(int(clock()))
    return {"appId": APP_ID, "timeStamp": stamp, "sign": sign(APP_ID, secret, stamp)}


# -- pure mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "iec", "connected", "charging"),
    [
        (1, IecState.A, False, False),  # Available: not plugged
        (2, IecState.B, True, False),  # Preparing: plugged, not started
        (3, IecState.C, True, True),  # Charging
        (4, IecState.B, True, False),  # SuspendedEVSE: started, no power available
        (5, IecState.B, True, False),  # SuspendedEV: started, waiting for the car
        (6, IecState.B, True, False),  # Finishing: stopped
        (9, IecState.F, False, False),  # Faulted
    ],
)
def test_status_table(code: int, iec: IecState, connected: bool, charging: bool) -> None:
    assert parse_status({"evchargerStatus": code}) == code
    reading = to_reading(code, 1234.0, 1700000000.0)
    assert (reading.iec_state, reading.connected, reading.charging) == (iec, connected, charging)
    assert reading.power_w == 1234.0 and reading.timestamp_s == 1700000000.0
    assert (reading.current_a, reading.phases) == (0.0, 0)  # the Open API reports neither


def test_the_table_covers_exactly_the_documented_codes() -> None:
    assert sorted(STATUSES) == [1, 2, 3, 4, 5, 6, 9]


@pytest.mark.parametrize("code", [0, 7, 8, 10, -1, "3", True, None, 3.0])
def test_unknown_status_names_the_value(code: object) -> None:
    with pytest.raises(ValueError, match=rf"unknown evchargerStatus {code!r} \(documented: 1–6 and 9"):
        parse_status({"evchargerStatus": code})


@pytest.mark.parametrize("data", [None, [], {"status": 2}])
def test_status_data_must_be_an_object_with_the_field(data: object) -> None:
    with pytest.raises(ValueError, match="getEvChargerStatusBySn: expected"):
        parse_status(data)


def test_pev_is_watts_and_null_is_missing_data() -> None:
    assert parse_pev({"pev": 11040.0, "pgrid": 11.0}) == 11040.0
    assert parse_pev({"pev": 0}) == 0.0
    for data, message in [
        ({"pev": None}, "'pev' is null"),
        ({"pev": -5.0}, "'pev' is negative: -5 W"),
        ({"pev": "7"}, "'pev' must be a finite number"),
        ({"pev": float("nan")}, "'pev' must be a finite number"),
        ({"pgrid": 1.0}, "missing field 'pev'"),
        (None, "missing field 'pev'"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_pev(data)


def test_pick_wallbox() -> None:
    listed = [
        {"evchargerSn": "EV1", "evchargerModel": "SMILE-EVCT11"},
        {"evchargerSn": "EV2", "evchargerModel": "SMILE-EVCT11"},
    ]
    assert pick_wallbox(listed, None) == ("EV1", 2)
    assert pick_wallbox(listed, "EV2") == ("EV2", 2)
    with pytest.raises(ValueError, match=r"evcharger_sn EV3 is not a wallbox .*lists: EV1, EV2"):
        pick_wallbox(listed, "EV3")
    with pytest.raises(ValueError, match="no wallbox bound"):
        pick_wallbox([], None)
    for bad in (None, {"evchargerSn": "EV1"}, [{"evchargerSn": 1}], ["EV1"]):
        with pytest.raises(ValueError, match="expected a list"):
            pick_wallbox(bad, None)


def test_config_capabilities_and_create() -> None:
    base: dict[str, Any] = {"sys_sn": SYS_SN, "app_id": APP_ID, "app_secret": Secret(APP_SECRET)}
    config = Config(**base)
    assert config.url == "https://openapi.alphaess.com/api" and config.evcharger_sn is None
    assert (config.poll_interval_s, config.min_write_interval_s) == (10.0, 30.0)
    assert APP_SECRET not in repr(config)
    for change, key in [
        ({"url": "openapi.alphaess.com"}, "url"),
        ({"url": "https://u:p@x/api"}, "url"),
        ({"sys_sn": " "}, "sys_sn"),
        ({"app_id": ""}, "app_id"),
        ({"evcharger_sn": " "}, "evcharger_sn"),
    ]:
        with pytest.raises(SettingError, match=key):
            Config(**base | change)
    charger = create(config, name=NAME, clock=time.time)
    assert charger.name == NAME and charger.capabilities is CAPABILITIES
    assert CAPABILITIES.on_off_only and not CAPABILITIES.phase_switching
    assert (CAPABILITIES.min_current_a, CAPABILITIES.max_current_a) == (6, 32)


@pytest.mark.skipif("alphaess" not in CHARGER_TYPES, reason="charger type alphaess not registered yet")
def test_config_file_with_app_secret_file(tmp_path: Path) -> None:
    (tmp_path / "alphaess.secret").write_text(APP_SECRET + "\n")
    text = f"""
meter: {{type: huawei, host: 192.0.2.10}}
charger:
  type: alphaess
  max_current_a: 16
  phases: 3
  sys_sn: {SYS_SN}
  app_id: {APP_ID}
  app_secret_file: alphaess.secret
  evcharger_sn: {EV_SN}
"""
    settings = parse_config(text, str(tmp_path / "c.yaml"), environ={}).charger.settings
    assert isinstance(settings, Config) and settings.app_secret.reveal() == APP_SECRET
    assert settings.evcharger_sn == EV_SN


# -- the emulator's wallbox endpoints -------------------------------------------------------------


async def test_emulator_wallbox_reads(http: httpx.AsyncClient, clock: FakeClock) -> None:
    async def data(path: str, **params: str) -> Any:
        clock.advance(10)
        body = (await http.get(path, params=params, headers=signed(clock))).json()
        assert body["code"] == 200, body
        return body["data"]

    listed = await data("getEvChargerConfigList", sysSn=SYS_SN)
    assert listed == [{"evchargerSn": EV_SN, "evchargerModel": "SMILE-EVCT11"}]
    assert await data("getEvChargerStatusBySn", sysSn=SYS_SN, evchargerSn=EV_SN) == {"evchargerStatus": 2}
    assert await data("getEvChargerCurrentsBySn", sysSn=SYS_SN) == {"currentsetting": 16}


async def test_emulator_remote_control_checks_and_status_machine(
    http: httpx.AsyncClient, emulator: AlphaEssEmulator, site: SiteModel, clock: FakeClock
) -> None:
    async def post(path: str, body: Any) -> int:
        clock.advance(10)  # the emulator's POST limit: one per 10 s
        response = await http.post(path, json=body, headers=signed(clock))
        assert response.status_code == 200
        code: int = response.json()["code"]
        return code

    control = {"sysSn": SYS_SN, "evchargerSn": EV_SN}
    assert await post("remoteControlEvCharger", control | {"controlMode": 2}) == 6001
    assert await post("remoteControlEvCharger", control | {"controlMode": True}) == 6001
    assert await post("remoteControlEvCharger", {"sysSn": SYS_SN, "controlMode": 1}) == 6001
    assert await post("remoteControlEvCharger", [control]) == 6001
    assert await post("remoteControlEvCharger", control | {"sysSn": "AL0", "controlMode": 1}) == 6002
    assert await post("remoteControlEvCharger", control | {"evchargerSn": "EV0", "controlMode": 1}) == 6038
    assert await post("remoteControlEvCharger", control | {"controlMode": 0}) == 6008  # stop in 2
    assert site.state().offered_current_a == 0
    assert await post("remoteControlEvCharger", control | {"controlMode": 1}) == 200
    state = site.state()
    assert (state.offered_current_a, state.offered_phases) == (16, 3)
    assert emulator.wallbox_status() == 5  # started, the car not drawing yet (its start delay)
    clock.advance(20)  # past the car's start delay of 15 s
    assert emulator.wallbox_status() == 3 and site.state().car_power_w == FIXED_W
    assert await post("remoteControlEvCharger", control | {"controlMode": 0}) == 200
    assert site.state().offered_current_a == 0
    assert emulator.wallbox_status() == 6  # finishing: the car still draws for a few seconds
    clock.advance(FINISHING_S)  # as long as the car's follow delay: both are 5 s
    assert emulator.wallbox_status() == 2 and site.state().car_power_w == 0
    # the household limit (never written by the driver) is writable within 6–32 A
    assert await post("setEvChargerCurrentsBySn", {"sysSn": SYS_SN, "currentsetting": 5}) == 6001
    assert await post("setEvChargerCurrentsBySn", {"sysSn": SYS_SN, "currentsetting": 20}) == 200
    assert emulator.household_current_a == 20
    assert emulator.writes == 11
    # POSTs faster than min_write_interval_s answer 6053; GET on a setter is 405
    clock.advance(10)
    start, stop = control | {"controlMode": 1}, control | {"controlMode": 0}
    first = await http.post("remoteControlEvCharger", json=start, headers=signed(clock))
    again = await http.post("remoteControlEvCharger", json=stop, headers=signed(clock))
    assert (first.json()["code"], again.json()["code"]) == (200, 6053)
    assert (await http.get("remoteControlEvCharger", headers=signed(clock))).status_code == 405


async def test_emulator_writes_are_signed_like_reads(http: httpx.AsyncClient, clock: FakeClock) -> None:
    body = {"sysSn": SYS_SN, "evchargerSn": EV_SN, "controlMode": 1}
    wrong = await http.post("remoteControlEvCharger", json=body, headers=signed(clock, secret="guess"))
    assert wrong.json()["code"] == 6007
    stale = signed(clock) | {"timeStamp": str(int(clock()) - 301)}
    assert (await http.post("remoteControlEvCharger", json=body, headers=stale)).json()["code"] == 6006


def test_emulator_options_are_checked(site: SiteModel) -> None:
    with pytest.raises(ValueError, match="requests_per_window"):
        AlphaEssEmulator(site, requests_per_window=0)
    with pytest.raises(ValueError, match="wallbox_phases"):
        AlphaEssEmulator(site, wallbox_phases=2)


# -- the driver against the emulator --------------------------------------------------------------


async def test_reads_a_then_b_by_the_simulated_car() -> None:
    trace = bundled_trace()
    clock = FakeClock(trace.start_s + 8 * 3600 - 20)  # 20 s before the car is plugged in at 08:00
    async with make_emulator(make_site(clock), clock) as emu:
        wallbox = make_wallbox(emu.url, clock)
        unplugged = await wallbox.read()
        assert (unplugged.iec_state, unplugged.connected, unplugged.power_w) == (IecState.A, False, 0.0)
        clock.advance(30)
        plugged = await wallbox.read()
        assert (plugged.iec_state, plugged.connected, plugged.charging) == (IecState.B, True, False)
        assert plugged.timestamp_s == clock()
        await wallbox.close()


async def test_start_charges_at_the_fixed_current_then_stop(
    wallbox: AlphaEssWallbox, emulator: AlphaEssEmulator, site: SiteModel, clock: FakeClock
) -> None:
    assert (await wallbox.read()).iec_state == IecState.B
    await wallbox.apply(ChargerCommand(6, 1))  # any current > 0 starts; the amps are the app's
    state = site.state()
    assert (state.offered_current_a, state.offered_phases) == (16, 3)
    assert emulator.writes == 1
    clock.advance(20)  # past the car's start delay (15 s) and the poll interval
    charging = await wallbox.read()
    assert (charging.iec_state, charging.charging, charging.power_w) == (IecState.C, True, FIXED_W)
    assert (charging.current_a, charging.phases) == (0.0, 0)
    await wallbox.apply(START)  # already on: nothing sent
    assert emulator.writes == 1
    clock.advance(30)
    await wallbox.apply(STOP)
    assert emulator.writes == 2 and site.state().offered_current_a == 0
    await wallbox.apply(STOP)  # already off (by the last command; not polled since): nothing sent
    assert emulator.writes == 2
    clock.advance(12)  # the stop and the poll before it hold the account's request budget 11 s
    assert (await wallbox.read()).power_w == 0  # the car stopped 5 s after the stop
    assert emulator.wallbox_status() == 2
    assert emulator.household_current_a == 16  # currentsetting is never written


async def test_start_refused_while_unplugged_is_a_no_op() -> None:
    trace = bundled_trace()
    clock = FakeClock(trace.start_s + 7 * 3600)  # the car comes at 08:00
    async with make_emulator(make_site(clock), clock) as emu:
        wallbox = make_wallbox(emu.url, clock)
        with structlog.testing.capture_logs() as events:
            await wallbox.apply(START)
        await wallbox.close()
    assert emu.writes == 0
    dropped = [e for e in events if e["event"] == "alphaess.wallbox_start_dropped"]
    assert dropped and dropped[0]["status"] == 1 and dropped[0]["log_level"] == "debug"


async def test_min_write_interval_defers_a_start_but_not_a_stop(
    wallbox: AlphaEssWallbox, emulator: AlphaEssEmulator, site: SiteModel, clock: FakeClock
) -> None:
    await wallbox.apply(START)
    clock.advance(12)
    await wallbox.apply(STOP)  # 12 s after the start: a stop goes at once
    assert emulator.writes == 2 and site.state().offered_current_a == 0
    clock.advance(10)
    with pytest.raises(WriteDeferred) as deferred:
        await wallbox.apply(START)
    assert deferred.value.retry_after_s == pytest.approx(20.0)
    assert "min_write_interval_s 30 s" in str(deferred.value)
    assert emulator.writes == 2
    clock.advance(20)
    await wallbox.apply(START)
    assert emulator.writes == 3 and site.state().offered_current_a == 16


async def test_a_start_waits_for_a_poll_after_the_last_stop(
    emulator: AlphaEssEmulator, site: SiteModel, clock: FakeClock
) -> None:
    wallbox = make_wallbox(emulator.url, clock, poll_interval_s=30, min_write_interval_s=10)
    await wallbox.apply(START)
    clock.advance(30)
    assert (await wallbox.read()).charging
    await wallbox.apply(STOP)
    clock.advance(10)  # past the write interval, but the last poll came before the stop
    with pytest.raises(WriteDeferred, match="not yet reported the end of the last session") as deferred:
        await wallbox.apply(START)
    assert deferred.value.retry_after_s == pytest.approx(20.0)  # the next poll
    clock.advance(20)
    await wallbox.apply(START)  # polled: status 2
    assert site.state().offered_current_a == 16 and emulator.writes == 3
    await wallbox.close()


async def test_a_start_waits_while_the_wallbox_is_finishing(clock: FakeClock) -> None:
    site = make_site(clock, car=CarParams(follow_delay_s=30))  # the car takes 30 s to stop drawing
    async with make_emulator(site, clock) as emu:
        wallbox = make_wallbox(emu.url, clock, min_write_interval_s=10)
        await wallbox.apply(START)
        clock.advance(20)
        assert (await wallbox.read()).charging
        await wallbox.apply(STOP)
        clock.advance(12)  # past the write interval, and the stop's hold on the request budget (11 s)
        with pytest.raises(WriteDeferred, match=r"status 6: Finishing \(stopped\) at the last poll"):
            await wallbox.apply(START)
        clock.advance(28)
        await wallbox.apply(START)
        assert site.state().offered_current_a == 16 and emu.writes == 3
        await wallbox.close()


async def test_too_fast_defers_the_write_backs_off_and_recovers(
    emulator: AlphaEssEmulator, site: SiteModel, clock: FakeClock
) -> None:
    emulator.min_write_interval_s = 50.0
    wallbox = make_wallbox(emulator.url, clock)
    await wallbox.apply(START)
    clock.advance(40)
    with structlog.testing.capture_logs() as events, pytest.raises(WriteDeferred) as deferred:
        await wallbox.apply(STOP)  # the emulator allows one POST per 50 s
    assert isinstance(deferred.value.__cause__, RateLimited)
    assert deferred.value.retry_after_s == 60.0 and "code 6053" in str(deferred.value)
    assert [e["event"] for e in events if e["log_level"] == "warning"] == ["alphaess.rate_limited"]
    assert site.state().offered_current_a == 16
    sent = emulator.request_count
    clock.advance(30)
    with pytest.raises(WriteDeferred, match="not sent, backing off 30 s more") as waiting:
        await wallbox.apply(STOP)
    assert waiting.value.retry_after_s == pytest.approx(30.0)
    with pytest.raises(RateLimited):
        await wallbox.read()  # reads wait out the backoff too
    assert emulator.request_count == sent
    clock.advance(30)
    await wallbox.apply(STOP)
    assert site.state().offered_current_a == 0
    await wallbox.close()


async def test_set_failed_and_offline(emulator: AlphaEssEmulator, clock: FakeClock) -> None:
    emulator.site = make_site(clock, car=CarParams(plug_out_s=NOON_S + 5))  # the car leaves at 12:00:05
    wallbox = make_wallbox(emulator.url, clock)
    assert (await wallbox.read()).connected
    clock.advance(6)  # unplugged, but the last poll (status 2) is 6 s old
    with pytest.raises(DeviceProtocolError, match=r"code 6008 \(Set failed\)"):
        await wallbox.apply(START)
    assert emulator.wallbox_status() == 1
    clock.advance(10)
    emulator.offline = True
    with pytest.raises(DeviceUnavailable, match=r"code 6042 \(System offline\)"):
        await wallbox.read()
    with pytest.raises(DeviceUnavailable, match="6042"):
        await wallbox.apply(START)  # the poll's error again, within the poll interval
    await wallbox.close()


async def test_wrong_secret_is_clear_and_never_leaks(
    emulator: AlphaEssEmulator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-f00dfacecafe"
    wallbox = make_wallbox(emulator.url, clock, app_secret=Secret(wrong))
    emulator.fail_next = 1  # one retry, so the retry log line is checked too
    errors: list[DeviceError] = []
    with structlog.testing.capture_logs() as events:
        for call in (wallbox.read(), wallbox.apply(START)):
            with pytest.raises(DeviceProtocolError) as err:
                await call
            errors.append(err.value)
    await wallbox.close()
    message = str(errors[0])
    assert message.startswith(
        f"{NAME}: GET {emulator.url}/getEvChargerConfigList: code 6007 (Sign verification error)"
    )
    assert f"check app_id (appId {APP_ID}) and app_secret (appSecret)" in message
    assert any(e["event"] == "alphaess.retry" for e in events)
    captured = capsys.readouterr()
    everything = " ".join(
        [
            *map(str, errors),
            *map(repr, errors),
            caplog.text,
            repr(events),
            captured.out,
            captured.err,
            repr(wallbox.__dict__),
        ]
    )
    assert wrong not in everything and APP_SECRET not in everything
    assert emulator.writes == 0


async def test_wallbox_serial_is_checked_against_the_list(
    emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    wallbox = make_wallbox(emulator.url, clock, evcharger_sn="EV0000000000000")
    with pytest.raises(
        DeviceProtocolError, match=f"evcharger_sn EV0000000000000 is not a wallbox .*lists: {EV_SN}"
    ):
        await wallbox.read()
    await wallbox.close()
    named = make_wallbox(emulator.url, clock, evcharger_sn=EV_SN)
    clock.advance(10)
    assert (await named.read()).connected
    await named.close()


# -- a variable PV day through the real controller ------------------------------------------------


DAY_S = 1717200000.0  #: 2024-06-01 00:00 UTC; the trace is in UTC (offset 0)


def cloudy_trace(seed: int = 5) -> Trace:
    """09:00–14:00 of a day with passing clouds: 5.2 kW PV in sun, 0.5–1.5 kW under a cloud, a
    300 W house; sunny spells of 8–40 min, clouds of 3–25 min, one sample per minute."""
    rng = random.Random(seed)
    pv: list[float] = []
    while len(pv) < 5 * 60:
        pv += [5200.0 + rng.uniform(-300, 300) for _ in range(rng.randint(8, 40))]
        level = rng.uniform(500, 1500)
        pv += [level + rng.uniform(-100, 100) for _ in range(rng.randint(3, 25))]
    pv = pv[: 5 * 60]
    t0 = DAY_S + 9 * 3600
    return Trace(
        name="cloudy",
        t_s=tuple(t0 + 60.0 * i for i in range(len(pv))),
        pv_power_w=tuple(pv),
        house_power_w=tuple(300.0 + rng.uniform(-50, 50) for _ in pv),
        utc_offset_s=0,
        step_s=60.0,
    )


async def test_a_cloudy_day_cycles_on_and_off_within_the_controllers_limits() -> None:
    """The controller (on/off capability) drives the wallbox through this driver, with the AlphaESS
    meter on the same emulated system: 3 h of passing clouds, every 5 s of simulated time."""
    control = ControlConfig(interval_s=5, cloud_filter="weak", min_on_s=600, min_off_s=300, max_age_s=30)
    clock = FakeClock(DAY_S + 10 * 3600)
    end_s = clock() + 3 * 3600
    site = make_site(clock, cloudy_trace(), battery=BatteryParams(soc_start_pct=60))
    # one account, allowing 5 requests in any 10 s: one poll of meter and wallbox is two GETs (three
    # with the charger list at the start), plus the starts and stops
    emulator = make_emulator(site, clock, wallbox_current_a=16, wallbox_phases=1)
    async with emulator:
        account = OpenApiAccount(emulator.url, APP_ID, Secret(APP_SECRET), clock=clock)
        wallbox = make_wallbox(emulator.url, clock, account)
        meter = create_meter(
            MeterConfig(sys_sn=SYS_SN, app_id=APP_ID, app_secret=Secret(APP_SECRET), url=emulator.url),
            name="meter alphaess-test",
            clock=clock,
            account=account,
        )
        # the wallbox is set to 16 A on one phase in the app: charger.max_current_a and phases say so
        controller = Controller(
            control, ChargePoint(max_current_a=16, phases=1), capabilities=wallbox.capabilities
        )
        applied: ChargerCommand | None = None
        switches: list[tuple[float, bool]] = []  # (time, the wallbox offers current)
        deferred: list[WriteDeferred] = []
        charging_readings = 0
        last_site: SiteReading | None = None
        with structlog.testing.capture_logs() as events:
            while clock() < end_s:
                last_site = await meter.read()
                reading = await wallbox.read()
                charging_readings += reading.charging
                decision = controller.step(clock(), last_site, reading)
                if decision.command != applied:
                    try:
                        await wallbox.apply(decision.command)
                        applied = decision.command
                    except WriteDeferred as exc:
                        deferred.append(exc)
                on = site.state().offered_current_a > 0
                if on != (switches[-1][1] if switches else False):
                    switches.append((clock(), on))
                clock.advance(control.interval_s)
        await wallbox.close()
        await meter.close()

    starts = [t for t, on in switches if on]
    stops = [t for t, on in switches if not on]
    assert len(starts) >= 3, switches
    on_periods = [stop - start for start, stop in zip(starts, stops, strict=False)]
    off_periods = [start - stop for stop, start in zip(stops, starts[1:], strict=False)]
    assert min(on_periods) >= control.min_on_s, on_periods
    assert min(off_periods) >= control.min_off_s, off_periods
    assert emulator.writes == len(switches)  # one POST per start or stop, none refused or redundant
    # a start right after a poll waits a cycle for the account's budget (the polls before count 11 s)
    assert all("request budget" in str(exc) for exc in deferred), deferred
    assert not [e for e in events if e["log_level"] in ("warning", "error")]  # no 6053, no failure
    assert charging_readings > 0
    tally = site.energy
    assert tally.car_wh > 3000 and tally.pv_to_car_wh / tally.car_wh > 0.8  # measured: 7.7 kWh, 95 %


async def test_apply_during_a_slow_first_poll_waits_for_it_instead_of_polling_again(
    emulator: AlphaEssEmulator, wallbox: AlphaEssWallbox
) -> None:
    """The daemon applies while a slow read() is still running (the read rolls over to the next cycle):
    apply() must use that poll, not send a second one beside it (twice the requests: 6053 from a cloud
    that allows three per interval)."""
    emulator.faults.set(Fault.SLOW, delay_s=0.1)
    read = asyncio.create_task(wallbox.read())
    for _ in range(200):  # until the poll's last request (after the list and the status) is in flight
        if emulator.requests_to("/api/getLastPowerData"):
            break
        await asyncio.sleep(0.005)
    await wallbox.apply(STOP)  # a stop while stopped: no POST, but it needs the status
    reading = await read
    emulator.faults.clear()
    assert reading.connected
    counts = {
        path: len(emulator.requests_to(f"/api/{path}"))
        for path in ("getEvChargerConfigList", "getEvChargerStatusBySn", "getLastPowerData")
    }
    assert counts == {"getEvChargerConfigList": 1, "getEvChargerStatusBySn": 1, "getLastPowerData": 1}


def test_next_poll_follows_the_start_but_rests_after_a_slow_poll() -> None:
    from pvcharge.clients.alphaess_device import next_poll_s

    assert next_poll_s(100.0, 100.3, 100.3, 10.0) == 110.0  # a quick poll: one interval after its start
    assert next_poll_s(100.0, 100.3, 96.0, 10.0) == 106.0  # a reply the meter got at 96: in step with it
    assert next_poll_s(100.0, 112.0, 112.0, 10.0) == 117.0  # 12 s long: half an interval after its end


async def test_a_slow_poll_is_not_followed_at_once_by_the_next(site: SiteModel, clock: FakeClock) -> None:
    """A poll that took longer than the poll interval (a slow cloud) rests half an interval after it
    ended before the next: not three GETs and at once two more (6053 from a cloud allowing three GETs
    in 5 s)."""
    async with make_emulator(site, clock, window_s=5.0, requests_per_window=3) as emulator:
        # (a client budget that lets the cloud's limit show: this is about the rest after a slow poll)
        account = OpenApiAccount(emulator.url, APP_ID, Secret(APP_SECRET), clock=clock, budget_requests=100)
        wallbox = make_wallbox(emulator.url, clock, account)
        try:
            await _slow_poll_then_rest(emulator, wallbox, clock)
        finally:
            await wallbox.close()


async def _slow_poll_then_rest(
    emulator: AlphaEssEmulator, wallbox: AlphaEssWallbox, clock: FakeClock
) -> None:
    emulator.faults.set(Fault.SLOW, delay_s=0.1)
    read = asyncio.create_task(wallbox.read())
    for _ in range(200):
        if emulator.requests_to("/api/getEvChargerConfigList"):
            break
        await asyncio.sleep(0.005)
    clock.advance(12)  # the first request took 12 s
    await read
    emulator.faults.clear()
    before = len(emulator.received)
    for _ in range(4):  # 1 s apart: inside the rest (due 5 s after the end)
        clock.advance(1)
        await wallbox.read()
    assert len(emulator.received) == before
    clock.advance(1.5)
    await wallbox.read()  # 5.5 s after the end: polls again, and the cloud allows it
    assert len(emulator.received) == before + 2
