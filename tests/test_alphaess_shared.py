"""An AlphaESS meter and an AlphaESS wallbox on one Open API account share one client state.

Reference meters.md §3.4: the cloud publishes no rate limit and answers a client that asks too often
with 6053, so the two devices of one account (same url, app_id, app_secret) share one 6053 backoff and
one connection pool, and ask ``getLastPowerData`` (the meter for the site, the wallbox for ``pev``)
once per poll instead of twice.  Built by ``pvcharge.devices.create_devices``; against the emulator on
127.0.0.1, counting its requests per path, on a fake clock that the simulated site follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sitestub import FakeClock

from pvcharge.chargers.alphaess import AlphaEssWallbox
from pvcharge.clients.alphaess import AlphaEssClient
from pvcharge.clients.alphaess_account import OpenApiAccount
from pvcharge.config import Config, parse_config
from pvcharge.devices import create_devices, create_site_devices, shared_account
from pvcharge.errors import DeviceUnavailable, RateLimited
from pvcharge.meters.alphaess import AlphaEssMeter
from pvcharge.meters.alphaess import Config as MeterConfig
from pvcharge.meters.alphaess import create as create_meter
from pvcharge.readings import ChargerReading, SiteReading
from pvcharge.settings import Secret
from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.senec import SenecEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace

APP_ID = "alpha3f1c0e2b"
OTHER_APP_ID = "alpha77d09a14"
APP_SECRET = "b5d0c7e4a1f94e2c"  # the emulator's credentials: test values
SYS_SN = "AL2002321010043"
EV_SN = "EV1102321010043"
NOON_S = 12 * 3600
CYCLE_S = 5.0  #: the daemon's default control.interval_s
POLL_S = 10.0  #: poll_interval_s of both devices (the default and the minimum)
POWER = "/api/getLastPowerData"
STATUS = "/api/getEvChargerStatusBySn"
LIST = "/api/getEvChargerConfigList"
METER_NAME, CHARGER_NAME = "meter alphaess", "charger alphaess"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(bundled_trace().start_s + NOON_S)  # the car is plugged in at noon


@pytest.fixture
def site(clock: FakeClock) -> SiteModel:
    return SiteModel(bundled_trace(), t_s=clock(), clock=clock)


def make_emulator(
    site: SiteModel, clock: FakeClock, app_id: str = APP_ID, **options: Any
) -> AlphaEssEmulator:
    # an account allowing 5 requests in any 10 s: meter + wallbox need 3 unshared (LPD, status, LPD;
    # the charger list once)
    settings: dict[str, Any] = {"window_s": 10.0, "requests_per_window": 5, **options}
    return AlphaEssEmulator(
        site, app_id=app_id, app_secret=APP_SECRET, sys_sn=SYS_SN, evcharger_sn=EV_SN, clock=clock, **settings
    )


@pytest.fixture
async def emulator(site: SiteModel, clock: FakeClock) -> AsyncIterator[AlphaEssEmulator]:
    async with make_emulator(site, clock) as emu:
        yield emu


def alphaess(url: str, app_id: str = APP_ID) -> str:
    return (
        f"url: '{url}', sys_sn: {SYS_SN}, app_id: {app_id}, app_secret: {APP_SECRET}, "
        "timeout_s: 1, retries: 1, backoff_s: 0.01"
    )


CHARGER_LIMITS = "phases: 1, min_current_a: 6, max_current_a: 16"


def both_alphaess(meter_url: str, charger_url: str | None = None, charger_app_id: str = APP_ID) -> Config:
    charger = alphaess(charger_url or meter_url, charger_app_id)
    return parse_config(
        f"meter: {{type: alphaess, {alphaess(meter_url)}}}\n"
        f"charger: {{type: alphaess, {charger}, {CHARGER_LIMITS}}}\n",
        "<test>",
    )


def devices(config: Config, clock: FakeClock) -> tuple[Any, Any]:
    return create_devices(config, clock=clock, meter_name=METER_NAME, charger_name=CHARGER_NAME)


async def cycles(
    meter: Any, charger: Any, clock: FakeClock, n: int
) -> list[tuple[SiteReading, ChargerReading]]:
    """``n`` daemon-like cycles: both reads at once, then ``CYCLE_S`` of simulated time."""
    readings = []
    for _ in range(n):
        site_reading, charger_reading = await asyncio.gather(meter.read(), charger.read())
        readings.append((site_reading, charger_reading))
        clock.advance(CYCLE_S)
    return readings


def two_clients(
    emulator: AlphaEssEmulator, clock: FakeClock
) -> tuple[OpenApiAccount, AlphaEssClient, AlphaEssClient]:
    """An account on the emulator and a client on it for each device."""
    account = OpenApiAccount(emulator.url, APP_ID, Secret(APP_SECRET), clock=clock)
    return (
        account,
        AlphaEssClient.of(account, name=METER_NAME, timeout_s=2),
        AlphaEssClient.of(account, name=CHARGER_NAME, timeout_s=2),
    )


def counts(emulator: AlphaEssEmulator) -> dict[str, int]:
    return {path: len(emulator.requests_to(path)) for path in (POWER, STATUS, LIST)}


# -- one getLastPowerData per poll ----------------------------------------------------------------


async def test_one_power_request_per_poll_instead_of_two(site: SiteModel, clock: FakeClock) -> None:
    n = 12  # 60 s: six poll intervals
    # before: each driver built on its own (what the call sites did): two getLastPowerData per poll
    async with make_emulator(site, clock) as unshared_emu:
        config = both_alphaess(unshared_emu.url)
        meter = config.meter.create(name=METER_NAME, clock=clock)
        charger = config.charger.create(name=CHARGER_NAME, clock=clock)
        await cycles(meter, charger, clock, n)
        await meter.close()
        await charger.close()
        before = counts(unshared_emu)
    # after: built together, one account
    async with make_emulator(site, clock) as shared_emu:
        config = both_alphaess(shared_emu.url)
        meter, charger = devices(config, clock)
        assert meter._client.account is charger._client.account
        readings = await cycles(meter, charger, clock, n)
        await meter.close()
        await charger.close()
        after = counts(shared_emu)
    polls = int(n * CYCLE_S / POLL_S)
    assert before == {POWER: 2 * polls, STATUS: polls, LIST: 1}  # measured: 12, 6, 1
    assert after == {POWER: polls, STATUS: polls, LIST: 1}  # measured: 6, 6, 1
    # both stamped with the one reply's arrival; but the wallbox's second poll (cycle 2, at 10 s) waits
    # for the account's request budget: the first poll's three requests count until 11 s, and with the
    # meter's poll the budget's four ordinary requests are taken
    site_reading, charger_reading = readings[2]
    assert (site_reading.timestamp_s - readings[0][0].timestamp_s, charger_reading.timestamp_s) == (
        POLL_S,
        readings[0][1].timestamp_s,
    )
    for site_reading, charger_reading in readings[:2] + readings[3:]:
        assert site_reading.timestamp_s == charger_reading.timestamp_s
    assert len({s.timestamp_s for s, _ in readings}) == polls


async def test_a_reused_reply_carries_its_arrival_time_and_the_devices_fall_into_step(
    emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    meter, charger = devices(both_alphaess(emulator.url), clock)
    t0 = clock()
    site_reading = await meter.read()
    assert site_reading.timestamp_s == t0 and counts(emulator)[POWER] == 1
    clock.advance(CYCLE_S)  # half a poll interval later: the meter's reply is still fresh enough
    charger_reading = await charger.read()
    assert counts(emulator) == {POWER: 1, STATUS: 1, LIST: 1}
    assert charger_reading.timestamp_s == t0  # when the reused reply arrived, not now
    # the wallbox's next poll is due one interval after its data arrived, at t0 + 10 with the meter's;
    # but it waits for the account's request budget (the first polls' three requests count until
    # t0 + 11 and t0 + 16, and the meter's second takes the fourth): the next cycle it reuses the
    # meter's reply, and the two are in step
    clock.advance(POLL_S - CYCLE_S)
    site_reading, charger_reading = await asyncio.gather(meter.read(), charger.read())
    assert (site_reading.timestamp_s, charger_reading.timestamp_s) == (t0 + POLL_S, t0)
    clock.advance(CYCLE_S)
    assert (await charger.read()).timestamp_s == t0 + POLL_S
    assert counts(emulator) == {POWER: 2, STATUS: 2, LIST: 1}
    # just over half an interval is not reused
    clock.advance(POLL_S + CYCLE_S + 0.5)
    await meter.read()
    clock.advance(CYCLE_S + 0.5)
    charger_reading = await charger.read()
    assert charger_reading.timestamp_s == clock() and counts(emulator)[POWER] == 4
    await meter.close()
    await charger.close()


async def test_an_identical_request_in_flight_is_awaited_not_sent_again(
    emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    account, a, b = two_clients(emulator, clock)
    emulator.reply_delay_s = 0.2
    params = {"sysSn": SYS_SN}
    (data_a, at_a), (data_b, at_b) = await asyncio.gather(
        a.get_stamped("getLastPowerData", params), b.get_stamped("getLastPowerData", params)
    )
    assert len(emulator.requests_to(POWER)) == 1 and data_a == data_b and at_a == at_b == clock()
    # without reuse_s a finished reply is not handed out again; other parameters are another request
    await a.get("getLastPowerData", params)
    assert len(emulator.requests_to(POWER)) == 2
    await asyncio.gather(a.get("getEssList"), b.get("getLastPowerData", params))
    assert len(emulator.requests_to(POWER)) == 3 and len(emulator.requests_to("/api/getEssList")) == 1

    clock.advance(20)  # the account's request budget has room again
    # one caller giving up does not cut the request off for the other; the last one does
    task_a = asyncio.create_task(a.get("getLastPowerData", params))
    task_b = asyncio.create_task(b.get("getLastPowerData", params))
    await asyncio.sleep(0.05)
    task_a.cancel()
    assert isinstance(await task_b, dict)
    assert task_a.cancelled() and len(emulator.requests_to(POWER)) == 4
    task_a = asyncio.create_task(a.get("getLastPowerData", params))
    await asyncio.sleep(0.05)
    requests = [flight.task for flight in account.in_flight.values()]
    task_a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task_a
    assert not account.in_flight  # a new caller sends a new request
    await asyncio.wait(requests)
    assert [r.cancelled() for r in requests] == [True]  # cut off with its last caller

    # closing the account under a caller that was not cancelled: a clear DeviceUnavailable
    task_b = asyncio.create_task(b.get("getLastPowerData", params))
    await asyncio.sleep(0.05)
    await a.close()
    with pytest.raises(DeviceUnavailable, match=f"^{CHARGER_NAME}: .*closed while the request was in flight"):
        await task_b
    emulator.reply_delay_s = 0.0
    assert isinstance(await b.get("getLastPowerData", params), dict)  # reopened
    await a.close()
    await b.close()


# -- one backoff ----------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["meter", "charger"])
async def test_a_6053_to_either_device_pauses_both_without_a_request(
    site: SiteModel, clock: FakeClock, first: str
) -> None:
    # 3 GETs per 10 s: exactly the first poll of both (charger list, status, one getLastPowerData)
    async with make_emulator(site, clock, requests_per_window=3) as emulator:
        await _a_6053_pauses_both(emulator, clock, first)


async def _a_6053_pauses_both(emulator: AlphaEssEmulator, clock: FakeClock, first: str) -> None:
    meter, charger = devices(both_alphaess(emulator.url), clock)
    await cycles(meter, charger, clock, 2)  # 10 s: both polled once
    clock.advance(2)  # the client's budget has room again (the account's 5 requests in 10 s)
    emulator.window_s = 1000.0  # the next GET is one too many
    told, other = (meter, charger) if first == "meter" else (charger, meter)
    with pytest.raises(RateLimited, match="code 6053") as err:
        await told.read()
    assert err.value.device == told.name and err.value.retry_after_s == 60.0
    sent = emulator.request_count
    with pytest.raises(
        RateLimited, match=f"not sent, backing off 60 s more after code 6053 to {told.name}"
    ) as err:
        await other.read()
    assert err.value.device == other.name and err.value.retry_after_s == 60.0
    assert emulator.request_count == sent  # nothing sent
    # both resume after the backoff
    emulator.window_s = 10.0
    clock.advance(60.0)
    site_reading, charger_reading = await asyncio.gather(meter.read(), charger.read())
    assert site_reading.timestamp_s == charger_reading.timestamp_s == clock()
    await meter.close()
    await charger.close()


async def test_the_error_of_a_shared_request_names_each_device(
    emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    _, a, b = two_clients(emulator, clock)
    emulator.offline, emulator.reply_delay_s = True, 0.1  # 6042 (system offline)
    params = {"sysSn": SYS_SN}
    errors = await asyncio.gather(
        a.get("getLastPowerData", params), b.get("getLastPowerData", params), return_exceptions=True
    )
    assert len(emulator.requests_to(POWER)) == 1
    assert [type(e) for e in errors] == [DeviceUnavailable, DeviceUnavailable] and errors[0] is not errors[1]
    for error, name in zip(errors, (METER_NAME, CHARGER_NAME), strict=True):
        assert isinstance(error, DeviceUnavailable) and error.device == name
        assert str(error).startswith(f"{name}: ") and "code 6042" in str(error)
    # errors are not reused: the next call sends again
    emulator.offline = False
    assert isinstance(await b.get_stamped("getLastPowerData", params, reuse_s=5.0), tuple)
    assert len(emulator.requests_to(POWER)) == 2
    await a.close()


# -- close ----------------------------------------------------------------------------------------


async def test_closing_one_shared_device_is_harmless_and_closing_twice_is_fine(
    emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    meter, charger = devices(both_alphaess(emulator.url), clock)
    await cycles(meter, charger, clock, 2)
    await meter.close()
    await meter.close()
    assert meter._client.account.http_client is None
    clock.advance(2)  # the account's request budget has room for the wallbox's poll again
    charger_reading = await charger.read()  # reopens the pool
    assert charger_reading.timestamp_s == clock() and meter._client.account.http_client is not None
    clock.advance(POLL_S)
    assert (await meter.read()).timestamp_s == clock()
    for driver in (charger, meter, charger, meter):
        await driver.close()
    assert meter._client.account.http_client is None


# -- what is not shared ---------------------------------------------------------------------------


async def test_two_different_app_ids_share_nothing(site: SiteModel, clock: FakeClock) -> None:
    async with (
        make_emulator(site, clock, requests_per_window=2) as meter_emu,
        make_emulator(site, clock, app_id=OTHER_APP_ID) as box_emu,
    ):
        config = both_alphaess(meter_emu.url, box_emu.url, charger_app_id=OTHER_APP_ID)
        assert shared_account(config, clock=clock) is None
        meter, charger = devices(config, clock)
        assert meter._client.account is not charger._client.account
        await cycles(meter, charger, clock, 4)
        assert counts(meter_emu) == {POWER: 2, STATUS: 0, LIST: 0}
        assert counts(box_emu) == {POWER: 2, STATUS: 2, LIST: 1}
        meter_emu.window_s = 1000.0
        with pytest.raises(RateLimited):
            await meter.read()
        assert isinstance(await charger.read(), ChargerReading)  # not paused by the meter's 6053
        await meter.close()
        await charger.close()


@pytest.mark.parametrize(
    ("url", "app_id", "secret", "shared"),
    [
        ("http://127.0.0.1:8080/api", APP_ID, APP_SECRET, True),
        ("http://127.0.0.1:8080/api/", APP_ID, APP_SECRET, True),  # up to a trailing /
        ("http://127.0.0.1:8080/api", OTHER_APP_ID, APP_SECRET, False),
        ("http://127.0.0.1:8080/api", APP_ID, "another-secret", False),
        ("http://127.0.0.1:8081/api", APP_ID, APP_SECRET, False),
    ],
)
def test_which_accounts_are_shared(url: str, app_id: str, secret: str, shared: bool) -> None:
    config = parse_config(
        f"meter: {{type: alphaess, {alphaess('http://127.0.0.1:8080/api')}}}\n"
        f"charger: {{type: alphaess, url: '{url}', sys_sn: {SYS_SN}, app_id: {app_id}, app_secret: {secret}, "
        f"{CHARGER_LIMITS}}}\n",
        "<test>",
    )
    account = shared_account(config, clock=lambda: 0.0)
    assert (account is not None) == shared
    meter, charger = create_devices(
        config, clock=lambda: 0.0, meter_name=METER_NAME, charger_name=CHARGER_NAME
    )
    assert isinstance(meter, AlphaEssMeter) and isinstance(charger, AlphaEssWallbox)
    assert (meter._client.account is charger._client.account) == shared
    for text in (repr(account), repr(meter._client), repr(charger._client), repr(meter._client.account)):
        assert APP_SECRET not in text and "another-secret" not in text


def test_create_keeps_its_signature_and_refuses_another_account() -> None:
    settings = MeterConfig(
        sys_sn=SYS_SN, app_id=APP_ID, app_secret=Secret(APP_SECRET), url="http://127.0.0.1:1/api"
    )
    meter = create_meter(settings, name=METER_NAME, clock=lambda: 0.0)  # an account of its own
    assert isinstance(meter._client, AlphaEssClient)
    other = OpenApiAccount("http://127.0.0.1:1/api", OTHER_APP_ID, Secret(APP_SECRET), clock=lambda: 0.0)
    with pytest.raises(ValueError, match="not those of OpenApiAccount"):
        create_meter(settings, name=METER_NAME, clock=lambda: 0.0, account=other)


@pytest.mark.parametrize("meter_type", ["huawei", "senec"])
async def test_another_meter_with_the_alphaess_wallbox_still_works(
    site: SiteModel, clock: FakeClock, emulator: AlphaEssEmulator, meter_type: str
) -> None:
    fast = "timeout_s: 1, retries: 1"
    async with HuaweiEmulator(site) if meter_type == "huawei" else SenecEmulator(site) as meter_emu:
        if isinstance(meter_emu, HuaweiEmulator):
            meter_section = (
                f"{{type: huawei, host: 127.0.0.1, port: {meter_emu.port}, connect_delay_s: 0, "
                f"request_gap_s: 0, {fast}}}"
            )
        else:
            meter_section = (
                f"{{type: senec, host: 127.0.0.1, port: {meter_emu.port}, "
                f"ca_file: '{meter_emu.ca_pem_path}', {fast}}}"
            )
        charger_section = f"{{type: alphaess, {alphaess(emulator.url)}, {CHARGER_LIMITS}}}"
        config = parse_config(f"meter: {meter_section}\ncharger: {charger_section}\n", "<test>")
        assert shared_account(config, clock=clock) is None
        meter, charger = devices(config, clock)
        assert type(meter).__module__ == f"pvcharge.meters.{meter_type}"
        assert isinstance(charger, AlphaEssWallbox)
        readings = await cycles(meter, charger, clock, 2)
        assert all(isinstance(s, SiteReading) and isinstance(c, ChargerReading) for s, c in readings)
        assert counts(emulator) == {POWER: 1, STATUS: 1, LIST: 1}
        await meter.close()
        await charger.close()


def test_every_loadpoint_on_the_account_shares_it_and_other_chargers_get_no_account() -> None:
    """Loadpoints: the meter and both AlphaESS wallboxes (first and third loadpoint) are one account, one
    request budget; the WARP between them is built without one (before: the meter's account went to every
    later charger, and a WARP's create failed on the unknown ``account``; the third wallbox got an account
    of its own beside the meter's)."""
    wallbox = (
        f"{{type: alphaess, url: 'http://127.0.0.1:8080/api', sys_sn: {SYS_SN}, app_id: {APP_ID}, "
        f"app_secret: {APP_SECRET}}}"
    )
    config = parse_config(
        f"meter: {{type: alphaess, {alphaess('http://127.0.0.1:8080/api')}}}\n"
        "loadpoints:\n"
        f"  - {{name: carport, charger: {wallbox}}}\n"
        "  - {name: garage, charger: {type: warp, url: 'http://127.0.0.1:8081'}}\n"
        f"  - {{name: shed, charger: {wallbox}}}\n",
        "<test>",
    )
    meter, chargers = create_site_devices(config, clock=lambda: 0.0)
    first, warp, third = chargers
    assert isinstance(first, AlphaEssWallbox) and isinstance(third, AlphaEssWallbox)
    assert meter._client.account is first._client.account is third._client.account
    assert warp.name == "charger garage warp" and third.name == "charger shed alphaess"
