"""The SENEC driver against the SENEC emulator over loopback HTTPS/HTTP, its config and its errors.

Device facts under test: reference meters.md §2 (lala.cgi over HTTPS with a private-CA certificate,
vendor signs, sentinels, the appliance's sensitivity to traffic).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import trustme
from sitestub import FixedSite, meter_state

from pvcharge.errors import DeviceProtocolError, DeviceUnavailable
from pvcharge.meters.senec import MAX_FAILURE_PAUSE_S, Config, SenecMeter, create
from pvcharge.meters.senec_lala import REQUEST_BODY
from pvcharge.meters.senec_tls import tls_message
from pvcharge.settings import SettingError
from pvcharge.sim.senec import SenecEmulator, encode_float
from pvcharge.sim.site import SiteModel, SiteState
from pvcharge.sim.trace import bundled_trace

NAME = "meter senec-test"

# Exporting 500 W while the battery charges with 1200 W; house 3000 − 500 − 1200 = 1300 W.
CHARGING = meter_state(pv_w=3000.0, grid_w=-500.0, battery_w=-1200.0, soc_pct=55.5)
# Importing 300 W while the battery discharges 700 W at night.
DISCHARGING = meter_state(pv_w=0.0, grid_w=300.0, battery_w=700.0, soc_pct=20.25)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_meter(port: int, clock: Callable[[], float] | None = None, **config: Any) -> SenecMeter:
    """A driver with short timeouts so that the tests run fast."""
    settings: dict[str, Any] = {"timeout_s": 1.0, "retries": 1, "backoff_s": 0.01, "min_interval_s": 5.0}
    settings.update(config)
    return create(Config(host="127.0.0.1", port=port, **settings), name=NAME, clock=clock or Clock())


@pytest.fixture
def site() -> FixedSite:
    return FixedSite(CHARGING)


@pytest.fixture
async def emulator(site: FixedSite) -> AsyncIterator[SenecEmulator]:
    async with SenecEmulator(site) as emu:
        yield emu


@pytest.fixture
async def plain_emulator(site: FixedSite) -> AsyncIterator[SenecEmulator]:
    async with SenecEmulator(site, tls=False) as emu:
        yield emu


def assert_matches(reading: Any, state: SiteState) -> None:
    """Equal to the site state within float32 precision, canonical signs."""
    assert reading.grid_power_w == pytest.approx(state.grid_power_w, rel=1e-6)
    assert reading.pv_power_w == pytest.approx(state.pv_power_w, rel=1e-6)
    assert reading.battery_power_w == pytest.approx(state.battery_power_w, rel=1e-6)
    assert reading.battery_soc_pct == pytest.approx(state.battery_soc_pct, rel=1e-6)


def write_ca(directory: Path) -> str:
    """A fresh throwaway CA as a PEM file in ``directory``."""
    path = directory / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def colon_upper(fingerprint: str) -> str:
    return ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()


# -- trust choices --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [CHARGING, DISCHARGING])
async def test_ca_file_reads_the_site_with_canonical_signs(
    emulator: SenecEmulator, site: FixedSite, state: SiteState
) -> None:
    site.current = state
    meter = make_meter(emulator.port, ca_file=emulator.ca_pem_path, clock=lambda: 77.0)
    try:
        reading = await meter.read()
    finally:
        await meter.close()
    assert_matches(reading, state)
    assert reading.house_power_w == pytest.approx(state.house_power_w, rel=1e-6)
    assert reading.timestamp_s == 77.0
    assert emulator.request_count == 1


async def test_reads_a_simulated_site() -> None:
    trace = bundled_trace()
    model = SiteModel(trace, t_s=trace.start_s + 12 * 3600)
    model.advance(60)  # the battery has started following the surplus
    async with SenecEmulator(model) as emu:
        meter = make_meter(emu.port, ca_file=emu.ca_pem_path)
        try:
            reading = await meter.read()
        finally:
            await meter.close()
    state = model.state()
    assert state.battery_power_w < 0  # charging from the noon surplus
    assert_matches(reading, state)


@pytest.mark.parametrize("form", [str.lower, colon_upper, lambda f: "SHA256 Fingerprint=" + colon_upper(f)])
async def test_pinned_fingerprint_reads(emulator: SenecEmulator, form: Callable[[str], str]) -> None:
    meter = make_meter(emulator.port, fingerprint_sha256=form(emulator.fingerprint_sha256))
    try:
        assert_matches(await meter.read(), CHARGING)
    finally:
        await meter.close()


async def test_wrong_pin_is_a_protocol_error_showing_the_new_fingerprint(emulator: SenecEmulator) -> None:
    meter = make_meter(emulator.port, fingerprint_sha256="00" * 32)
    try:
        with pytest.raises(DeviceProtocolError) as err:
            await meter.read()
    finally:
        await meter.close()
    message = str(err.value)
    assert err.value.device == NAME
    assert "certificate" in message and "changed" in message
    assert colon_upper(emulator.fingerprint_sha256) in message  # so the user can pin the new one
    assert emulator.request_count == 0  # checked during the handshake: nothing was sent


async def test_certificate_from_another_ca_says_how_to_fix_it(
    emulator: SenecEmulator, tmp_path: Path
) -> None:
    meter = make_meter(emulator.port, ca_file=write_ca(tmp_path))
    try:
        with pytest.raises(DeviceProtocolError) as err:
            await meter.read()
    finally:
        await meter.close()
    message = str(err.value)
    assert "verification failed" in message
    for fix in ("ca_file", "SenecGui-Root", "fingerprint_sha256", "verify: false"):
        assert fix in message
    assert emulator.request_count == 0


def test_hostname_mismatch_message_suggests_the_pin(tmp_path: Path) -> None:
    config = Config(host="192.0.2.7", ca_file=write_ca(tmp_path))
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code = 64  # X509_V_ERR_IP_ADDRESS_MISMATCH
    error.verify_message = "IP address mismatch, certificate is not valid for '192.0.2.7'."
    message = tls_message(config, None, error)
    assert "not issued for '192.0.2.7'" in message and "fingerprint_sha256" in message


async def test_verify_false_reads_and_warns_at_start_up(emulator: SenecEmulator) -> None:
    with structlog.testing.capture_logs() as events:
        meter = make_meter(emulator.port, verify=False)
    warnings = [e for e in events if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "senec.tls_unverified"
    assert warnings[0]["device"] == NAME
    try:
        assert_matches(await meter.read(), CHARGING)
    finally:
        await meter.close()


def test_trusted_https_does_not_warn(emulator: SenecEmulator) -> None:
    with structlog.testing.capture_logs() as events:
        make_meter(emulator.port, ca_file=emulator.ca_pem_path)
    assert not [e for e in events if e["log_level"] == "warning"]


async def test_plain_http_for_old_firmware(plain_emulator: SenecEmulator) -> None:
    assert plain_emulator.url.startswith("http://")
    meter = make_meter(plain_emulator.port, scheme="http")
    try:
        assert_matches(await meter.read(), CHARGING)
    finally:
        await meter.close()


async def test_http_against_https_only_firmware_says_try_https(emulator: SenecEmulator) -> None:
    """``scheme: http`` with the port of an HTTPS-only appliance (firmware since Aug 2023): the TLS
    server drops the plain request, which read "connection lost (ReadError)" (issue 12)."""
    meter = make_meter(emulator.port, scheme="http", retries=0)
    try:
        with pytest.raises(DeviceUnavailable) as err:
            await meter.read()
    finally:
        await meter.close()
    assert err.value.device == NAME
    assert f"POST http://127.0.0.1:{emulator.port}/lala.cgi" in str(err.value)
    assert "HTTPS only: try scheme: https" in str(err.value)


async def test_https_against_plain_http_suggests_scheme_http(plain_emulator: SenecEmulator) -> None:
    meter = make_meter(plain_emulator.port, verify=False)
    try:
        with pytest.raises(DeviceProtocolError, match="scheme: http"):
            await meter.read()
    finally:
        await meter.close()


# -- config ---------------------------------------------------------------------------------------


def test_https_without_a_trust_choice_says_how_to_fix_it() -> None:
    with pytest.raises(SettingError) as err:
        Config(host="192.168.1.40")
    assert err.value.key == "ca_file"
    problem = err.value.problem
    assert problem.startswith("HTTPS needs a trust choice")
    for fix in (
        "ca_file",
        "SenecGui-Root",
        "mein-senec.de",
        "fingerprint_sha256",
        "pvcharge probe",
        "verify: false",
    ):
        assert fix in problem
    assert "192.168.1.40:443" in problem  # the openssl command is ready to paste


@pytest.mark.parametrize(
    ("settings", "key", "message"),
    [
        ({"fingerprint_sha256": "abc"}, "fingerprint_sha256", "64 hex digits"),
        ({"fingerprint_sha256": "g" * 64}, "fingerprint_sha256", "64 hex digits"),
        ({"fingerprint_sha256": "00" * 31}, "fingerprint_sha256", "64 hex digits"),
        ({"verify": False, "fingerprint_sha256": "00" * 32}, "verify", "one trust choice"),
        ({"ca_file": "CA", "fingerprint_sha256": "00" * 32}, "fingerprint_sha256", "not both"),
        ({"ca_file": "CA", "verify": False}, "verify", "contradict"),
        ({"ca_file": "/nonexistent/senec-ca.pem"}, "ca_file", "cannot load"),
        ({"scheme": "http", "verify": False}, "verify", "scheme: http"),
        ({"scheme": "http", "ca_file": "CA"}, "ca_file", "scheme: http"),
        ({"host": "https://192.168.1.40", "verify": False}, "host", "IP address or host name"),
        ({"host": "192.168.1.40:443", "verify": False}, "host", "port"),
        ({"host": "", "verify": False}, "host", "IP address or host name"),
    ],
)
def test_bad_settings_name_the_key(settings: dict[str, Any], key: str, message: str, tmp_path: Path) -> None:
    if settings.get("ca_file") == "CA":
        settings = {**settings, "ca_file": write_ca(tmp_path)}
    with pytest.raises(SettingError, match=message) as err:
        Config(**{"host": "192.168.1.40", **settings})
    assert err.value.key == key


def test_ca_file_that_is_not_pem_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(SettingError, match="cannot load") as err:
        Config(host="senec.local", ca_file=str(bad))
    assert err.value.key == "ca_file"


def test_good_settings() -> None:
    assert Config(host="senec.local", scheme="http").port is None
    assert Config(host="fd00::5", verify=False).host == "fd00::5"


# -- request pacing, retries, failures ------------------------------------------------------------


async def test_reads_within_min_interval_return_the_cached_reading(emulator: SenecEmulator) -> None:
    clock = Clock(1000.0)
    meter = make_meter(emulator.port, ca_file=emulator.ca_pem_path, clock=clock, min_interval_s=5.0)
    try:
        first = await meter.read()
        clock.t = 1004.9
        again = await meter.read()
        assert again == first and again.timestamp_s == 1000.0  # same timestamp: not a new measurement
        assert emulator.request_count == 1
        clock.t = 1005.0
        fresh = await meter.read()
        assert fresh.timestamp_s == 1005.0
        assert emulator.request_count == 2
        clock.t = 900.0  # the clock stepped back: do not wait for it
        assert (await meter.read()).timestamp_s == 900.0
        assert emulator.request_count == 3
    finally:
        await meter.close()


async def test_a_cancelled_read_still_counts_as_a_request(emulator: SenecEmulator) -> None:
    clock = Clock(1000.0)
    emulator.reply_delay_s = 0.3
    meter = make_meter(emulator.port, ca_file=emulator.ca_pem_path, clock=clock)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(meter.read(), timeout=0.1)  # as the daemon cuts off a slow read
        assert emulator.request_count == 1
        with pytest.raises(DeviceUnavailable, match="interrupted"):
            await meter.read()
        assert emulator.request_count == 1
        emulator.reply_delay_s = 0.0
        clock.t = 1005.0
        first = await meter.read()
        emulator.reply_delay_s = 0.3
        clock.t = 1010.0
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(meter.read(), timeout=0.1)
        clock.t = 1011.0
        assert await meter.read() is first  # within the interval of the cancelled one: the last reading
        assert emulator.request_count == 3
    finally:
        await meter.close()


async def test_http_500_is_retried(emulator: SenecEmulator) -> None:
    emulator.fail_next = 1
    meter = make_meter(emulator.port, ca_file=emulator.ca_pem_path, retries=1)
    try:
        assert_matches(await meter.read(), CHARGING)
    finally:
        await meter.close()
    assert emulator.request_count == 2


async def test_persistent_500_pauses_requests_with_growing_backoff(emulator: SenecEmulator) -> None:
    clock = Clock(1000.0)
    emulator.fail_next = 100
    meter = make_meter(emulator.port, ca_file=emulator.ca_pem_path, clock=clock, retries=1)
    try:
        with pytest.raises(DeviceUnavailable, match="HTTP 500") as err:
            await meter.read()
        assert err.value.device == NAME and "2 attempts" in str(err.value)
        assert emulator.request_count == 2
        clock.t = 1004.0  # within min_interval_s (5 s) of the failure: no request, same error
        with pytest.raises(DeviceUnavailable, match="pausing requests"):
            await meter.read()
        assert emulator.request_count == 2
        clock.t = 1005.0
        with pytest.raises(DeviceUnavailable, match="HTTP 500"):
            await meter.read()
        assert emulator.request_count == 4
        clock.t = 1014.0  # second failure: the pause doubled to 10 s
        with pytest.raises(DeviceUnavailable, match="pausing"):
            await meter.read()
        assert emulator.request_count == 4
        emulator.fail_next = 0
        clock.t = 1015.0
        assert_matches(await meter.read(), CHARGING)
        assert emulator.request_count == 5
    finally:
        await meter.close()
    assert MAX_FAILURE_PAUSE_S >= 5.0


async def test_dead_port_is_unavailable_quickly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: connections are refused
    meter = make_meter(port, verify=False, retries=2)
    started = time.monotonic()
    try:
        with pytest.raises(DeviceUnavailable) as err:
            await meter.read()
    finally:
        await meter.close()
    assert time.monotonic() - started < 1.0
    assert err.value.device == NAME
    assert f"127.0.0.1:{port}" in str(err.value) and "ConnectError" in str(err.value)


async def test_old_firmware_dead_http_port_hints_at_https() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    meter = make_meter(port, scheme="http", retries=0)
    with pytest.raises(DeviceUnavailable, match="HTTPS only"):
        await meter.read()
    await meter.close()


async def test_slow_reply_past_the_timeout_is_unavailable(emulator: SenecEmulator) -> None:
    emulator.reply_delay_s = 0.4
    meter = make_meter(emulator.port, ca_file=emulator.ca_pem_path, timeout_s=0.1, retries=0)
    started = time.monotonic()
    try:
        with pytest.raises(DeviceUnavailable, match=r"no answer within 0\.1 s"):
            await meter.read()
    finally:
        await meter.close()
    assert time.monotonic() - started < 0.4


# -- malformed answers (httpx mock transport) -----------------------------------------------------


def mock_meter(handler: Callable[[httpx.Request], httpx.Response]) -> SenecMeter:
    config = Config(host="192.0.2.7", scheme="http", retries=0)
    return SenecMeter(config, name=NAME, clock=Clock(), transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("error", [httpx.ReadError(""), httpx.RemoteProtocolError("Server disconnected")])
async def test_plain_http_dropped_by_the_appliance_says_try_https(error: httpx.TransportError) -> None:
    """What an HTTPS-only appliance does to a plain request on its TLS port, as users reported it
    ("connection lost (ReadError)", issue 12) and as the emulator does it."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    meter = mock_meter(handler)
    with pytest.raises(DeviceUnavailable, match=r"HTTPS only: try scheme: https$"):
        await meter.read()
    await meter.close()


async def test_plain_http_answered_400_by_an_https_port_says_try_https() -> None:
    """A web server that tells plain HTTP from TLS on its HTTPS port answers 400 (nginx: "The plain
    HTTP request was sent to HTTPS port")."""
    body = "<html><body>400 The plain HTTP request was sent to HTTPS port</body></html>"
    meter = mock_meter(lambda request: httpx.Response(400, text=body))
    with pytest.raises(DeviceProtocolError, match=r"HTTP 400: .*HTTPS only: try scheme: https$"):
        await meter.read()
    await meter.close()


async def test_sends_one_compact_json_post_with_content_type() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        energy = {"GUI_GRID_POW": encode_float(-14.0), "GUI_INVERTER_POWER": "fl_80000000"}
        energy |= {"GUI_BAT_DATA_POWER": encode_float(0.0), "GUI_BAT_DATA_FUEL_CHARGE": encode_float(100.0)}
        return httpx.Response(200, json={"ENERGY": energy})

    meter = mock_meter(handler)
    reading = await meter.read()
    await meter.close()
    assert (reading.grid_power_w, reading.pv_power_w, reading.battery_soc_pct) == (-14.0, 0.0, 100.0)
    [request] = seen
    assert request.method == "POST" and str(request.url) == "http://192.0.2.7/lala.cgi"
    assert request.headers["Content-Type"] == "application/json"
    assert request.content == REQUEST_BODY


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(200, text="<html>"), "malformed JSON"),
        (httpx.Response(200, json=[1, 2]), "section ENERGY missing"),
        (httpx.Response(200, json={"PV1": {}}), "section ENERGY missing"),
        (httpx.Response(200, json={"ENERGY": "OBJECT_NOT_FOUND"}), "OBJECT_NOT_FOUND"),
        (httpx.Response(200, json={"ENERGY": {"GUI_GRID_POW": "FORBIDDEN"}}), "ENERGY.GUI_GRID_POW"),
        (httpx.Response(200, json={"ENERGY": {"GUI_GRID_POW": "fl_1"}}), "ENERGY.GUI_GRID_POW"),
        (httpx.Response(404, text="Not Found"), "unexpected HTTP 404"),
    ],
)
async def test_malformed_answers_are_protocol_errors(response: httpx.Response, message: str) -> None:
    meter = mock_meter(lambda request: response)
    with pytest.raises(DeviceProtocolError, match=message) as err:
        await meter.read()
    await meter.close()
    assert err.value.device == NAME


async def test_close_twice_is_safe(emulator: SenecEmulator) -> None:
    meter = make_meter(emulator.port, ca_file=emulator.ca_pem_path)
    await meter.read()
    await meter.close()
    await meter.close()


# -- the emulator itself --------------------------------------------------------------------------


async def post(emulator: SenecEmulator, body: object, method: str = "POST", path: str = "/lala.cgi") -> Any:
    context = ssl.create_default_context(cafile=emulator.ca_pem_path)
    async with httpx.AsyncClient(verify=context, base_url=emulator.url) as client:
        content = body if isinstance(body, str) else json.dumps(body)
        return await client.request(method, path, content=content)


async def test_emulator_section_and_variable_rules(emulator: SenecEmulator) -> None:
    response = await post(emulator, {"ENERGY": {}, "PV1": {"POWER_RATIO": ""}, "BAT1OBJ2": {}})
    assert response.status_code == 200
    body = response.json()
    assert set(body["ENERGY"]) == {
        *("GUI_GRID_POW", "GUI_INVERTER_POWER", "GUI_BAT_DATA_POWER", "GUI_BAT_DATA_FUEL_CHARGE"),
        *("GUI_HOUSE_POW", "STAT_STATE", "GUI_BAT_DATA_VOLTAGE", "GUI_BAT_DATA_CURRENT"),
        *("GUI_CHARGING_INFO", "GUI_BOOSTING_INFO", "STAT_LIMITED_NET_SKEW"),
    }
    assert body["ENERGY"]["GUI_BAT_DATA_POWER"] == encode_float(1200.0)  # vendor + = charging
    assert body["ENERGY"]["STAT_STATE"] == "u8_0E"  # 14 CHARGE
    assert (body["ENERGY"]["GUI_CHARGING_INFO"], body["ENERGY"]["GUI_BOOSTING_INFO"]) == ("u8_01", "u8_00")
    assert body["PV1"] == {"POWER_RATIO": "u3_00000064"}  # as in pysenec's capture
    assert body["BAT1OBJ2"] == {"OBJECT_NOT_FOUND": ""}  # an unknown section, as firmware 0826 answers
    response = await post(emulator, {"ENERGY": {"GUI_GRID_POW": "", "NO_SUCH_VAR": ""}})
    assert response.json() == {
        "ENERGY": {"GUI_GRID_POW": encode_float(-500.0), "NO_SUCH_VAR": "VARIABLE_NOT_FOUND"}
    }


async def test_emulator_rejects_what_it_does_not_serve(emulator: SenecEmulator) -> None:
    assert (await post(emulator, "{nope")).status_code == 400
    assert (await post(emulator, {"ENERGY": ""})).status_code == 400
    assert (await post(emulator, "", method="GET")).status_code == 405
    assert (await post(emulator, {}, path="/other")).status_code == 404


def first_line(path: str) -> str | None:
    """The file's first line, ``None`` if it does not exist."""
    try:
        return Path(path).read_text().splitlines()[0]
    except FileNotFoundError:
        return None


async def test_emulator_lifecycle(site: FixedSite) -> None:
    with pytest.raises(ValueError, match="loopback"):
        SenecEmulator(site, host="192.168.1.2")
    emu = SenecEmulator(site)
    with pytest.raises(RuntimeError):
        _ = emu.ca_pem_path
    async with emu:
        path = emu.ca_pem_path
        assert first_line(path) == "-----BEGIN CERTIFICATE-----"
        assert emu.url == f"https://127.0.0.1:{emu.port}"
        assert len(emu.fingerprint_sha256) == 64
    assert first_line(path) is None  # removed on stop
    await emu.stop()
    plain = SenecEmulator(site, tls=False)
    with pytest.raises(RuntimeError):
        _ = plain.fingerprint_sha256
