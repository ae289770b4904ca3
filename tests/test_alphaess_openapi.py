"""The AlphaESS Open API client and meter, pure decoding and against the emulator over loopback.

Device facts under test: reference meters.md §3 (AlphaESS Open API: signing, envelope, return codes,
``getLastPowerData``, rate limits).  Time is a shared fake clock, so the 10 s poll interval, the
±300 s window and the 60 s backoff after 6053 are checked without waiting for them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from sitestub import FakeClock

from pvcharge.clients.alphaess import AlphaEssClient
from pvcharge.clients.alphaess_api import RETURN_CODES, parse_envelope, sign
from pvcharge.config import parse_config
from pvcharge.errors import ConfigError, DeviceProtocolError, DeviceUnavailable, RateLimited
from pvcharge.meters.alphaess import AlphaEssMeter, Config, create, to_reading
from pvcharge.settings import Secret, SettingError
from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace

NAME = "meter alphaess-test"
APP_ID = "alpha3f1c0e2b"
APP_SECRET = "b5d0c7e4a1f94e2c"
SYS_SN = "AL2002321010043"
NOON_S = 12 * 3600

#: the reference's getLastPowerData example, verbatim (meters.md §3.3).
EXAMPLE_SUCCESS = """{"code":200,"msg":"Success","expMsg":null,"extra":null,"data":{
 "ppv":0.0,"ppvDetail":{"ppv1":0.0,"ppv2":0.0,"ppv3":0.0,"ppv4":0.0,"pmeterDc":0.0},
 "soc":56.0,"pev":0,"pevDetail":{"ev1Power":null,"ev2Power":null,"ev3Power":null,"ev4Power":null},
 "prealL1":1159.0,"pgrid":11.0,"pgridDetail":{"pmeterL1":11.0,"pmeterL2":0.0,"pmeterL3":0.0},
 "pload":1275.0,"pbat":1264.0}}"""
#: the reference's 6053 reply, verbatim (meters.md §3.2, alphaess-openAPI#7).
EXAMPLE_TOO_FAST = (
    '{"code":6053,"msg":"The maximum number of requests has been reached",'
    '"expMsg":null,"data":null,"extra":null}'
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(float(int(time.time())))  # whole seconds, as the timeStamp header


@pytest.fixture
def site() -> SiteModel:
    trace = bundled_trace()
    return SiteModel(trace, t_s=trace.start_s + NOON_S)


@pytest.fixture
async def emulator(site: SiteModel, clock: FakeClock) -> AsyncIterator[AlphaEssEmulator]:
    async with AlphaEssEmulator(
        site, app_id=APP_ID, app_secret=APP_SECRET, sys_sn=SYS_SN, clock=clock
    ) as emu:
        yield emu


def make_meter(url: str, clock: Callable[[], float], **config: Any) -> AlphaEssMeter:
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
    return create(Config(**settings), name=NAME, clock=clock)


def make_client(url: str, clock: Callable[[], float], **kwargs: Any) -> AlphaEssClient:
    options: dict[str, Any] = {"timeout_s": 1.0, "retries": 0, "backoff_s": 0.01, **kwargs}
    return AlphaEssClient(url, APP_ID, Secret(APP_SECRET), name=NAME, clock=clock, **options)


@pytest.fixture
async def meter(emulator: AlphaEssEmulator, clock: FakeClock) -> AsyncIterator[AlphaEssMeter]:
    driver = make_meter(emulator.url, clock)
    yield driver
    await driver.close()


# -- pure: signing, envelope, mapping -------------------------------------------------------------


def test_sign_is_lowercase_hex_sha512_of_id_secret_timestamp() -> None:
    # computed by hand: hashlib.sha512(b"alphaef65a2b0" b"a7f3c9e1d25b4f08" b"1700000000").hexdigest()
    expected = (
        "c1ff2c39760ffb0aa0a91b6158706f44d0c7a147d3faea52299220be993fb792"
        "3073b72fdad26ca2d9ea4f1997e6117a7505673d110ac0880c1b9ff6f118f7c3"
    )
    assert sign("alphaef65a2b0", "a7f3c9e1d25b4f08", "1700000000") == expected
    assert expected == hashlib.sha512(b"alphaef65a2b0a7f3c9e1d25b4f081700000000").hexdigest()


def test_envelope_of_the_reference_bodies() -> None:
    ok = parse_envelope(json.loads(EXAMPLE_SUCCESS))
    assert ok.ok and ok.code == 200 and ok.msg == "Success" and ok.exp_msg is None
    assert ok.data["pload"] == 1275.0
    too_fast = parse_envelope(json.loads(EXAMPLE_TOO_FAST))
    assert not too_fast.ok and too_fast.code == 6053 and too_fast.data is None
    assert too_fast.msg == "The maximum number of requests has been reached"
    assert too_fast.meaning == "Request too fast / max requests reached"
    # periodic-charge endpoints say "info" instead of "msg" (meters.md §3.2)
    assert parse_envelope({"code": 200, "info": "Success", "data": None}).msg == "Success"
    assert parse_envelope({"code": 7777, "msg": "?"}).meaning == "undocumented code"
    bad: object
    for bad in ([], {"msg": "Success"}, {"code": "200"}, {"code": True}):
        with pytest.raises(ValueError, match="code"):
            parse_envelope(bad)


def test_every_documented_return_code_has_a_meaning() -> None:
    documented = {6001, 6002, 6003, 6004, 6005, 6006, 6007, 6008, 6009, 6010, 6011, 6012}
    documented |= {6016, 6017, 6026, 6029, 6038, 6042, 6046, 6053, 10001}
    assert set(RETURN_CODES) == documented
    assert RETURN_CODES[6042] == "System offline"


def test_reference_example_to_canonical_reading() -> None:
    data = json.loads(EXAMPLE_SUCCESS)["data"]
    reading = to_reading(data, 1700000000.0)
    assert reading.grid_power_w == 11.0  # importing 11 W
    assert reading.battery_power_w == 1264.0  # discharging 1264 W
    assert reading.pv_power_w == 0.0
    assert reading.battery_soc_pct == 56.0
    assert reading.timestamp_s == 1700000000.0
    assert reading.grid_currents_a is None
    assert reading.house_power_w == data["pload"] == 1275.0  # 0 + 11 + 1264


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pgrid": None}, r"field\(s\) pgrid are null \(missing data, not 0\)"),
        ({"pbat": None, "soc": None}, r"field\(s\) pbat, soc are null"),
        (
            {"ppv": None, "pgrid": None, "pbat": None, "soc": None},
            "all of ppv, pgrid, pbat, soc are null.*Storion-S5",
        ),
        ({"soc": "56"}, "field 'soc' must be a finite number"),
        ({"pgrid": True}, "field 'pgrid' must be a finite number"),
        ({"ppv": -5.0}, "field 'ppv' is negative: -5 W"),
        ({"soc": 250.0}, "field 'soc' is outside 0–100 %: 250"),
    ],
)
def test_null_or_bad_fields_are_errors_naming_the_field(change: dict[str, Any], message: str) -> None:
    data = json.loads(EXAMPLE_SUCCESS)["data"] | change
    with pytest.raises(ValueError, match=message):
        to_reading(data, 0.0)


def test_missing_field_or_no_object() -> None:
    data = json.loads(EXAMPLE_SUCCESS)["data"]
    del data["pbat"]
    with pytest.raises(ValueError, match=r"missing field\(s\) pbat"):
        to_reading(data, 0.0)
    with pytest.raises(ValueError, match="expected a JSON object as data, got NoneType"):
        to_reading(None, 0.0)


def test_config_validation_and_create() -> None:
    base: dict[str, Any] = {"sys_sn": SYS_SN, "app_id": APP_ID, "app_secret": Secret(APP_SECRET)}
    config = Config(**base)
    assert config.url == "https://openapi.alphaess.com/api" and config.poll_interval_s == 10.0
    assert (config.timeout_s, config.retries, config.backoff_s) == (10.0, 2, 1.0)
    assert APP_SECRET not in repr(config)
    for change, key in [({"url": "openapi.alphaess.com"}, "url"), ({"url": "https://u:p@x/api"}, "url")]:
        with pytest.raises(SettingError, match=key):
            Config(**base | change)
    for key in ("sys_sn", "app_id"):
        with pytest.raises(SettingError, match=key):
            Config(**base | {key: " "})
    meter = create(config, name=NAME, clock=time.time)
    assert isinstance(meter, AlphaEssMeter) and meter.name == NAME


def test_config_file_with_app_secret_file(tmp_path: Path) -> None:
    (tmp_path / "alphaess.secret").write_text(APP_SECRET + "\n")
    text = f"""
meter:
  type: alphaess
  sys_sn: {SYS_SN}
  app_id: {APP_ID}
  app_secret_file: alphaess.secret
charger: {{type: warp, url: "http://192.0.2.20"}}
"""
    settings = parse_config(text, str(tmp_path / "c.yaml"), environ={}).meter.settings
    assert isinstance(settings, Config) and settings.app_secret.reveal() == APP_SECRET
    with pytest.raises(ConfigError, match=r"meter\.poll_interval_s"):
        parse_config(
            text.replace("  app_id:", "  poll_interval_s: 5\n  app_id:"), str(tmp_path / "c.yaml"), {}
        )


# -- the emulator itself --------------------------------------------------------------------------


def test_emulator_listens_on_loopback_only(site: SiteModel) -> None:
    with pytest.raises(ValueError, match="loopback"):
        AlphaEssEmulator(site, host="0.0.0.0")


async def test_emulator_checks_headers_with_exact_envelopes(
    emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    stamp = str(int(clock()))
    signed = {"appId": APP_ID, "timeStamp": stamp, "sign": sign(APP_ID, APP_SECRET, stamp)}
    emulator.requests_per_window = 1  # in 60 s: the second signed request is one too many
    async with httpx.AsyncClient(base_url=emulator.url + "/") as http:
        for headers, code in [
            ({}, 6012),
            ({"appId": APP_ID}, 6011),
            ({"appId": APP_ID, "timeStamp": stamp}, 6010),
            (signed | {"timeStamp": "soon"}, 6006),
            (signed | {"sign": sign(APP_ID, "guess", stamp)}, 6007),
            (signed | {"appId": "someone-else"}, 6007),
        ]:
            response = await http.get("getLastPowerData", params={"sysSn": SYS_SN}, headers=headers)
            assert response.status_code == 200
            body = response.json()
            assert list(body) == ["code", "msg", "expMsg", "data", "extra"]
            assert (body["code"], body["data"], body["extra"]) == (code, None, None), headers
        ok = (await http.get("getLastPowerData", params={"sysSn": SYS_SN}, headers=signed)).json()
        assert ok["code"] == 200 and ok["msg"] == "Success"
        assert set(ok["data"]) >= {
            "ppv",
            "ppvDetail",
            "soc",
            "pev",
            "pevDetail",
            "pgrid",
            "pgridDetail",
            "pload",
        }
        assert ok["data"]["pload"] == ok["data"]["ppv"] + ok["data"]["pgrid"] + ok["data"]["pbat"]
        too_fast = (await http.get("getEssList", headers=signed)).json()
        assert json.dumps(too_fast, separators=(",", ":")) == EXAMPLE_TOO_FAST
    assert emulator.request_count == 8


# -- driver against the emulator over loopback ----------------------------------------------------


@pytest.mark.parametrize(
    ("local_s", "battery", "grid"),
    [(NOON_S, "charging", "exporting"), (21 * 3600, "discharging", "importing")],
)
async def test_reading_equals_site_state_with_canonical_signs(
    local_s: int, battery: str, grid: str, clock: FakeClock
) -> None:
    trace = bundled_trace()
    site = SiteModel(trace, t_s=trace.start_s + local_s)
    site.advance(2.0)  # the battery lags the load by a few seconds: grid and battery both non-zero
    state = site.state()
    assert (state.battery_power_w > 0) == (battery == "discharging") and abs(state.battery_power_w) > 1
    assert (state.grid_power_w > 0) == (grid == "importing") and abs(state.grid_power_w) > 1
    async with AlphaEssEmulator(
        site, app_id=APP_ID, app_secret=APP_SECRET, sys_sn=SYS_SN, clock=clock
    ) as emu:
        meter = make_meter(emu.url, clock)
        reading = await meter.read()
        await meter.close()
    assert reading.grid_power_w == pytest.approx(state.grid_power_w, abs=0.5)
    assert reading.battery_power_w == pytest.approx(state.battery_power_w, abs=0.5)
    assert reading.pv_power_w == pytest.approx(state.pv_power_w, abs=0.5)
    assert reading.battery_soc_pct == pytest.approx(state.battery_soc_pct, abs=0.05)
    assert reading.timestamp_s == clock()
    assert emu.request_count == 1


async def test_ess_list_through_the_client(emulator: AlphaEssEmulator, clock: FakeClock) -> None:
    client = make_client(emulator.url, clock)
    systems = await client.get("getEssList")
    await client.close()
    await client.close()
    assert [s["sysSn"] for s in systems] == [SYS_SN]
    assert APP_SECRET not in repr(client)


async def test_poll_interval_cache_keeps_the_original_timestamp(
    meter: AlphaEssMeter, emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    first = await meter.read()
    clock.advance(9.9)
    again = await meter.read()
    assert again is first and again.timestamp_s == first.timestamp_s
    assert emulator.request_count == 1
    clock.advance(0.1)
    fresh = await meter.read()
    assert fresh.timestamp_s == first.timestamp_s + 10.0
    assert emulator.request_count == 2


async def test_a_failed_request_is_not_repeated_inside_the_poll_interval(
    meter: AlphaEssMeter, emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    emulator.offline = True
    with pytest.raises(DeviceUnavailable) as first:
        await meter.read()
    clock.advance(5)
    with pytest.raises(DeviceUnavailable) as again:
        await meter.read()
    assert str(again.value) == str(first.value)
    assert emulator.request_count == 1


async def test_wrong_app_secret_is_clear_and_never_leaks(
    emulator: AlphaEssEmulator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-f00dfacecafe"
    meter = make_meter(emulator.url, clock, app_secret=Secret(wrong))
    emulator.fail_next = 1  # one retry, so the retry log line is checked too
    with structlog.testing.capture_logs() as events, pytest.raises(DeviceProtocolError) as err:
        await meter.read()
    await meter.close()
    message = str(err.value)
    assert message.startswith(
        f"{NAME}: GET {emulator.url}/getLastPowerData: code 6007 (Sign verification error)"
    )
    assert f"check app_id (appId {APP_ID}) and app_secret (appSecret)" in message
    assert any(e["event"] == "alphaess.retry" for e in events)
    captured = capsys.readouterr()
    everything = " ".join(
        [
            message,
            repr(err.value),
            caplog.text,
            repr(events),
            captured.out,
            captured.err,
            repr(meter.__dict__),
        ]
    )
    assert wrong not in everything and APP_SECRET not in everything


async def test_unknown_app_id_or_missing_app_id(emulator: AlphaEssEmulator, clock: FakeClock) -> None:
    client = AlphaEssClient(emulator.url, "", Secret(APP_SECRET), name=NAME, timeout_s=1.0, clock=clock)
    with pytest.raises(
        DeviceProtocolError, match=r"code 6012 \(AppId is empty\).*check that app_id \(appId\)"
    ):
        await client.get("getEssList")
    await client.close()


async def test_wrong_sys_sn_names_the_serial(emulator: AlphaEssEmulator, clock: FakeClock) -> None:
    meter = make_meter(emulator.url, clock, sys_sn="AL0000000000000")
    with pytest.raises(DeviceProtocolError, match=r"code 6002 .*sysSn\) AL0000000000000 .*check sys_sn"):
        await meter.read()
    await meter.close()


async def test_other_codes_carry_code_meaning_and_exp_msg(
    emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    client = make_client(emulator.url, clock)
    with pytest.raises(DeviceProtocolError) as err:
        await client.get("getLastPowerData")  # no sysSn
    await client.close()
    assert str(err.value) == (
        f"{NAME}: GET {emulator.url}/getLastPowerData: AlphaESS error code 6001 (Parameter error): "
        "server says 'Parameter error', 'sysSn is required'"
    )


async def test_clock_skew_says_so(emulator: AlphaEssEmulator, clock: FakeClock) -> None:
    meter = make_meter(emulator.url, lambda: clock() + 301)
    with pytest.raises(DeviceProtocolError) as err:
        await meter.read()
    await meter.close()
    assert "code 6006" in str(err.value)
    assert "the local clock and the AlphaESS server's clock differ by more than 300 s" in str(err.value)
    assert "check NTP" in str(err.value)
    almost = make_meter(emulator.url, lambda: clock() - 299)
    assert (await almost.read()).timestamp_s == clock() - 299
    await almost.close()


async def test_too_fast_backs_off_exponentially_and_recovers(
    emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    emulator.requests_per_window, emulator.window_s = 1, 10.0  # one request per 10 s
    client = make_client(emulator.url, clock, rate_limit_backoff_s=60.0)
    await client.get("getEssList")
    with structlog.testing.capture_logs() as events, pytest.raises(RateLimited) as err:
        await client.get("getEssList")
    assert isinstance(err.value, DeviceUnavailable) and err.value.retry_after_s == 60.0
    assert "code 6053" in str(err.value) and "The maximum number of requests has been reached" in str(
        err.value
    )
    assert [e["event"] for e in events] == ["alphaess.rate_limited"]
    sent = emulator.request_count
    clock.advance(59)
    with pytest.raises(RateLimited, match="not sent, backing off 1 s more") as waiting:
        await client.get("getEssList")
    assert waiting.value.retry_after_s == pytest.approx(1.0)
    assert emulator.request_count == sent  # nothing sent while backing off
    clock.advance(1)
    assert [s["sysSn"] for s in await client.get("getEssList")] == [SYS_SN]

    emulator.window_s = 100.0  # now the backoff is too short: it doubles
    with pytest.raises(RateLimited):
        await client.get("getEssList")
    clock.advance(60)
    with pytest.raises(RateLimited) as doubled:
        await client.get("getEssList")
    assert doubled.value.retry_after_s == 120.0
    clock.advance(120)
    await client.get("getEssList")
    with pytest.raises(RateLimited) as reset:
        await client.get("getEssList")
    assert reset.value.retry_after_s == 60.0  # a success resets the backoff
    await client.close()


async def test_meter_recovers_after_too_fast(
    meter: AlphaEssMeter, emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    emulator.requests_per_window, emulator.window_s = 1, 30.0
    await meter.read()
    clock.advance(10)
    with pytest.raises(RateLimited):
        await meter.read()
    clock.advance(10)
    with pytest.raises(RateLimited, match="not sent"):
        await meter.read()
    assert emulator.request_count == 2
    clock.advance(50)
    reading = await meter.read()
    assert reading.timestamp_s == clock() and emulator.request_count == 3


async def test_system_offline_is_unavailable(meter: AlphaEssMeter, emulator: AlphaEssEmulator) -> None:
    emulator.offline = True
    with pytest.raises(DeviceUnavailable) as err:
        await meter.read()
    assert not isinstance(err.value, RateLimited)
    assert err.value.device == NAME
    assert "code 6042 (System offline)" in str(err.value) and SYS_SN in str(err.value)


async def test_all_null_data_is_a_clear_error(meter: AlphaEssMeter, emulator: AlphaEssEmulator) -> None:
    emulator.null_data = True
    with pytest.raises(DeviceProtocolError, match=f"sysSn {SYS_SN}: getLastPowerData: all of .* Storion-S5"):
        await meter.read()


async def test_http_500_is_retried(
    meter: AlphaEssMeter, emulator: AlphaEssEmulator, clock: FakeClock
) -> None:
    emulator.fail_next = 1
    assert (await meter.read()).timestamp_s == clock()
    assert emulator.request_count == 2
    clock.advance(10)
    emulator.fail_next = 2  # more than the one retry
    with pytest.raises(DeviceUnavailable, match=r"HTTP 500 injected fault \(2 attempts\)"):
        await meter.read()


async def test_slow_cloud_times_out(emulator: AlphaEssEmulator, clock: FakeClock) -> None:
    meter = make_meter(emulator.url, clock, timeout_s=0.1, retries=0)
    emulator.reply_delay_s = 0.3
    with pytest.raises(DeviceUnavailable, match=r"no answer within 0\.1 s \(1 attempts\)"):
        await meter.read()
    await meter.close()


async def test_wrong_path_is_a_protocol_error(emulator: AlphaEssEmulator, clock: FakeClock) -> None:
    client = make_client(emulator.url.removesuffix("/api"), clock)
    with pytest.raises(DeviceProtocolError, match="unexpected HTTP 404"):
        await client.get("getEssList")
    await client.close()
    client = make_client(emulator.url, clock)
    with pytest.raises(DeviceProtocolError, match=r"POST .*/api/getEssList: unexpected HTTP 405"):
        await client.post("getEssList", {"sysSn": SYS_SN})  # the emulator has no write endpoint yet
    await client.close()


async def test_dead_port_is_unavailable_quickly(clock: FakeClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    meter = make_meter(f"http://127.0.0.1:{port}/api", clock)
    started = time.monotonic()
    with pytest.raises(DeviceUnavailable) as err:
        await meter.read()
    await meter.close()
    assert time.monotonic() - started < 1.0
    assert err.value.device == NAME
    assert "ConnectError" in str(err.value) and "(2 attempts)" in str(err.value)
