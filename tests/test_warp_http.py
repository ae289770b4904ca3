"""The WARP driver against the WARP emulator over real loopback sockets, plus pure mapping tests.

Device facts under test: reference chargers.md §3 (Tinkerforge WARP local HTTP API).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog

from pvcharge.chargers.warp import Config, WarpCharger, create, reading_from_json
from pvcharge.errors import DeviceProtocolError, DeviceUnavailable
from pvcharge.readings import ChargerCommand, IecState
from pvcharge.settings import Secret, SettingError
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace
from pvcharge.sim.warp import WarpEmulator

NAME = "charger warp-test"
NOON_S = 12 * 3600  # car plugged in 08:00–18:00 local
EVENING_S = 19 * 3600


def make_site(local_s: float) -> SiteModel:
    trace = bundled_trace()
    return SiteModel(trace, t_s=trace.start_s + local_s)


def make_charger(
    url: str, *, transport: httpx.AsyncBaseTransport | None = None, **config: Any
) -> WarpCharger:
    settings = {"timeout_s": 1.0, "retries": 1, **config}
    return WarpCharger(Config(url=url, **settings), name=NAME, clock=lambda: 1234.5, transport=transport)


@pytest.fixture
def site() -> SiteModel:
    return make_site(NOON_S)


@pytest.fixture
async def emulator(site: SiteModel) -> AsyncIterator[WarpEmulator]:
    async with WarpEmulator(site) as emu:
        yield emu


@pytest.fixture
async def charger(emulator: WarpEmulator) -> AsyncIterator[WarpCharger]:
    driver = make_charger(emulator.url)
    yield driver
    await driver.close()


@pytest.fixture
async def http(emulator: WarpEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emulator.url) as client:
        yield client


# -- pure mapping ---------------------------------------------------------------------------------


def evse(iec: int, allowed_ma: int = 16000) -> dict[str, int]:
    return {
        "iec61851_state": iec,
        "charger_state": 0,
        "allowed_charging_current": allowed_ma,
        "error_state": 0,
    }


@pytest.mark.parametrize(
    ("code", "iec", "connected", "charging"),
    [
        (0, IecState.A, False, False),
        (1, IecState.B, True, False),
        (2, IecState.C, True, True),
        (3, IecState.D, True, True),
        (4, IecState.F, False, False),
    ],
)
def test_iec_codes_map_to_states(code: int, iec: IecState, connected: bool, charging: bool) -> None:
    reading = reading_from_json(evse(code), {"power": 0.0}, None, timestamp_s=7.0)
    assert (reading.iec_state, reading.connected, reading.charging) == (iec, connected, charging)
    assert reading.timestamp_s == 7.0


def test_milliamps_power_and_phases_convert() -> None:
    phases = {"phases_connected": [True, True, True], "phases_active": [True, False, False]}
    reading = reading_from_json(evse(2, 7350), {"power": 1690.5}, phases, timestamp_s=0.0)
    assert reading.current_a == pytest.approx(7.35)
    assert reading.power_w == 1690.5
    assert reading.phases == 1
    # without meter/phases a charging box is assumed to use 3 phases; a box not charging uses none
    assert reading_from_json(evse(2), {"power": 11000}, None, timestamp_s=0.0).phases == 3
    # ... unless the driver knows what the box is switched to (evse/low_level_state.phases_current)
    assert reading_from_json(evse(2), {"power": 2300}, None, timestamp_s=0.0, box_phases=1).phases == 1
    assert reading_from_json(evse(2), {"power": 2300}, phases, timestamp_s=0.0, box_phases=3).phases == 1
    assert reading_from_json(evse(1), {"power": 0}, phases, timestamp_s=0.0).phases == 0
    # no meter at all: power reads 0 W
    assert reading_from_json(evse(2), None, None, timestamp_s=0.0).power_w == 0.0


def test_meter_noise_clamps_but_reverse_power_fails() -> None:
    assert reading_from_json(evse(1), {"power": -3.2}, None, timestamp_s=0.0).power_w == 0.0
    with pytest.raises(ValueError, match=r"meter/values: field 'power' is -4000 W"):
        reading_from_json(evse(2), {"power": -4000}, None, timestamp_s=0.0)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"allowed_charging_current": 6000}, "evse/state: missing field 'iec61851_state'"),
        (
            {"iec61851_state": 5, "allowed_charging_current": 0},
            "evse/state: field 'iec61851_state' must be 0..4",
        ),
        (
            {"iec61851_state": 1, "allowed_charging_current": "16A"},
            "'allowed_charging_current' must be an integer",
        ),
        ([1, 16000], "evse/state: expected a JSON object"),
    ],
)
def test_malformed_state_names_endpoint_and_field(state: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reading_from_json(state, None, None, timestamp_s=0.0)


# -- driver details with a mock transport ---------------------------------------------------------


def mock_box(routes: dict[str, tuple[int, str]], seen: list[str]) -> httpx.MockTransport:
    """A fake box: ``"METHOD path"`` → (status, body); everything else 404."""

    def handle(request: httpx.Request) -> httpx.Response:
        key = f"{request.method} {request.url.path.lstrip('/')}"
        seen.append(key)
        status, body = routes.get(key, (404, "not found"))
        return httpx.Response(status, text=body)

    return httpx.MockTransport(handle)


async def test_external_enabled_404_is_tolerated_and_sent_once_per_connection() -> None:
    seen: list[str] = []
    box = mock_box({"POST evse/external_current": (200, "")}, seen)
    charger = make_charger("http://192.0.2.30", transport=box)
    await charger.apply(ChargerCommand(current_a=6.0, phases=3))
    await charger.apply(ChargerCommand(current_a=7.0, phases=3))
    await charger.close()
    await charger.apply(ChargerCommand(current_a=8.0, phases=3))
    await charger.close()
    enable, write = "POST evse/external_enabled", "POST evse/external_current"
    assert seen == [enable, write, write, enable, write]


async def test_a_missing_endpoint_names_the_request_and_what_it_means() -> None:
    charger = make_charger("http://192.0.2.30", transport=mock_box({}, []))  # every path 404
    with pytest.raises(DeviceProtocolError) as err:
        await charger.read()
    assert err.value.device == NAME
    hint = "is this a WARP charger?"
    assert err.value.message == f"GET http://192.0.2.30/evse/state: not found (HTTP 404); {hint}"
    with pytest.raises(DeviceProtocolError) as err:
        await charger.apply(ChargerCommand(current_a=6.0, phases=3))
    assert err.value.message == "POST http://192.0.2.30/evse/external_current: not found (HTTP 404)"
    await charger.close()


async def test_box_without_meter_reads_zero_power_and_bad_json_is_a_protocol_error() -> None:
    state = json.dumps(evse(2, 10000))
    seen: list[str] = []
    charger = make_charger("http://192.0.2.30", transport=mock_box({"GET evse/state": (200, state)}, seen))
    reading = await charger.read()
    assert (reading.power_w, reading.phases, reading.current_a) == (0.0, 3, 10.0)
    assert seen == ["GET evse/state", "GET meter/values"]  # no meter/phases on a box without a meter

    broken = make_charger("http://192.0.2.30", transport=mock_box({"GET evse/state": (200, "{oops")}, []))
    with pytest.raises(DeviceProtocolError, match=r"GET http://192.0.2.30/evse/state: malformed JSON") as err:
        await broken.read()
    assert err.value.device == NAME
    await charger.close()
    await broken.close()


async def test_box_rejection_carries_its_reason() -> None:
    box = mock_box({"POST evse/external_current": (400, "Failed to update: slot 8 is disabled")}, [])
    charger = make_charger("http://192.0.2.30", transport=box)
    with pytest.raises(
        DeviceProtocolError, match="rejected \\(HTTP 400\\): Failed to update: slot 8 is disabled"
    ):
        await charger.apply(ChargerCommand(current_a=10.0, phases=3))
    await charger.close()


def test_config_validation_and_create() -> None:
    with pytest.raises(SettingError, match="url"):
        Config(url="192.168.1.30")
    with pytest.raises(SettingError, match="url"):
        Config(url="http://admin:pw@192.168.1.30")
    with pytest.raises(SettingError, match="password"):
        Config(url="http://192.168.1.30", username="admin")
    charger = create(Config(url="http://192.168.1.30/"), name=NAME, clock=time.time)
    assert charger.name == NAME
    assert charger.capabilities.current_step_a == 0.001
    assert (charger.capabilities.min_current_a, charger.capabilities.max_current_a) == (6.0, 32.0)
    assert not charger.capabilities.phase_switching


# -- driver against the emulator ------------------------------------------------------------------


async def test_unplugged_car_reads_state_a() -> None:
    async with WarpEmulator(make_site(EVENING_S)) as emu:
        charger = make_charger(emu.url)
        reading = await charger.read()
        await charger.close()
    assert reading.iec_state is IecState.A
    assert not reading.connected and not reading.charging
    assert (reading.power_w, reading.phases, reading.timestamp_s) == (0.0, 0, 1234.5)


async def test_plugged_car_reads_b_then_charges_after_apply(
    charger: WarpCharger, site: SiteModel, http: httpx.AsyncClient
) -> None:
    reading = await charger.read()
    assert (reading.iec_state, reading.connected, reading.charging) == (IecState.B, True, False)
    assert reading.current_a == 0.0  # slot 8 starts blocked

    await charger.apply(ChargerCommand(current_a=10.0, phases=3))
    assert (await http.get("evse/external_current")).json() == {"current": 10000}
    assert site.state().offered_current_a == 10.0
    assert (await charger.read()).iec_state is IecState.B  # the car starts 15 s after the offer

    site.advance(16)
    reading = await charger.read()
    assert (reading.iec_state, reading.charging, reading.current_a) == (IecState.C, True, 10.0)
    assert reading.phases == 3
    assert reading.power_w == pytest.approx(10 * 3 * 230)

    await charger.apply(ChargerCommand(current_a=0.0, phases=3))
    assert site.state().offered_current_a == 0.0
    site.advance(6)
    reading = await charger.read()
    assert (reading.iec_state, reading.charging, reading.power_w) == (IecState.B, False, 0.0)


async def test_milliamp_resolution_reaches_the_site(charger: WarpCharger, site: SiteModel) -> None:
    await charger.apply(ChargerCommand(current_a=7.3456, phases=3))
    assert site.state().offered_current_a == pytest.approx(7.346)
    assert (await charger.read()).current_a == pytest.approx(7.346)


@pytest.mark.parametrize("current_a", [5.0, 5.9994, 32.001, 40.0])
async def test_out_of_range_current_fails_before_io(
    charger: WarpCharger, emulator: WarpEmulator, current_a: float
) -> None:
    with pytest.raises(ValueError, match=NAME):
        await charger.apply(ChargerCommand(current_a=current_a, phases=3))
    assert list(emulator.request_log) == []


# -- the emulator's HTTP surface ------------------------------------------------------------------


async def test_bare_value_and_update_path_writes(
    http: httpx.AsyncClient, emulator: WarpEmulator, site: SiteModel
) -> None:
    assert (await http.post("evse/external_current", content="8000")).status_code == 200
    assert (await http.get("evse/external_current")).json() == {"current": 8000}
    assert site.state().offered_current_a == 8.0

    assert (await http.put("evse/external_current_update", json={"current": 12000})).status_code == 200
    state = (await http.get("evse/state")).json()
    assert (state["allowed_charging_current"], state["charger_state"]) == (12000, 2)

    assert (await http.put("evse/external_enabled_update", content="false")).status_code == 200
    assert (await http.get("evse/external_current")).json() == {"current": 32000}


async def test_invalid_writes_answer_plain_text_errors(http: httpx.AsyncClient) -> None:
    too_big = await http.post("evse/external_current", json={"current": 70000})
    assert too_big.status_code == 400
    assert too_big.headers["content-type"].startswith("text/plain")
    assert "out of range" in too_big.text
    assert (await http.post("evse/external_current", content="{not json")).status_code == 400
    assert (await http.post("evse/external_current", json={"current": 8000, "phases": 1})).status_code == 400
    assert (await http.post("evse/external_enabled", content="1")).status_code == 400
    assert (await http.get("evse/nope")).status_code == 404
    assert (await http.post("evse/state", content="{}")).status_code == 405
    assert (await http.get("evse/external_current_update")).status_code == 405
    assert (await http.get("evse/external_current")).json() == {"current": 0}  # nothing was stored


async def test_slot_minimum_rule(http: httpx.AsyncClient, site: SiteModel) -> None:
    # like the firmware, an out-of-range value below 65536 is stored; the cable slots still cap it
    assert (await http.post("evse/external_current", content="40000")).status_code == 200
    slots = (await http.get("evse/slots")).json()
    assert slots[8] == {"max_current": 40000, "active": True, "clear_on_disconnect": False}
    assert [i for i, slot in enumerate(slots) if slot["active"]] == [0, 1, 5, 8]
    assert (await http.get("evse/state")).json()["allowed_charging_current"] == 32000
    assert site.state().offered_current_a == 32.0


async def test_info_and_meter_endpoints(http: httpx.AsyncClient, site: SiteModel) -> None:
    assert (await http.get("info/name")).json()["type"] == "warp3"
    assert "meter" in (await http.get("info/features")).json()
    await http.post("evse/external_current", content="16000")
    site.advance(16)
    assert (await http.get("meter/values")).json()["power"] == pytest.approx(16 * 3 * 230)
    assert (await http.get("meter/phases")).json()["phases_active"] == [True, True, True]


def test_emulator_refuses_non_loopback_host(site: SiteModel) -> None:
    with pytest.raises(ValueError, match="loopback"):
        WarpEmulator(site, host="0.0.0.0")


# -- failures -------------------------------------------------------------------------------------


async def test_stopped_emulator_is_unavailable_quickly(site: SiteModel) -> None:
    emu = WarpEmulator(site)
    await emu.start()
    await emu.stop()
    charger = make_charger(emu.url, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(DeviceUnavailable) as err:
        await charger.read()
    await charger.close()
    assert time.monotonic() - started < 2.0
    assert err.value.device == NAME
    assert f"GET {emu.url}/evse/state" in str(err.value)
    assert "ConnectError" in str(err.value)


async def test_http_500_is_retried(charger: WarpCharger, emulator: WarpEmulator) -> None:
    emulator.fail_next = 1
    with structlog.testing.capture_logs() as events:
        assert (await charger.read()).connected
    assert list(emulator.request_log)[:2] == [("GET", "evse/state"), ("GET", "evse/state")]
    retries = [e for e in events if e["event"] == "warp.retry"]
    assert len(retries) == 1
    assert retries[0]["device"] == NAME and retries[0]["log_level"] == "debug"
    assert retries[0]["error"] == "HTTP 500 injected fault"

    emulator.fail_next = 2  # more failures than the one retry
    with pytest.raises(DeviceUnavailable, match="HTTP 500 injected fault"):
        await charger.read()


async def test_slow_or_offline_box_is_unavailable(emulator: WarpEmulator) -> None:
    charger = make_charger(emulator.url, timeout_s=0.2, retries=0)
    emulator.reply_delay_s = 0.5
    with pytest.raises(DeviceUnavailable, match=r"no answer within 0\.2 s"):
        await charger.read()
    emulator.reply_delay_s = 0.0
    emulator.online = False
    with pytest.raises(DeviceUnavailable, match="RemoteProtocolError"):
        await charger.apply(ChargerCommand(current_a=6.0, phases=3))
    emulator.online = True
    assert (await charger.read()).connected
    await charger.close()


# -- HTTP Digest ----------------------------------------------------------------------------------

PASSWORD = "correct-horse-battery"


@pytest.fixture
async def locked(site: SiteModel) -> AsyncIterator[WarpEmulator]:
    async with WarpEmulator(site, username="admin", password=PASSWORD) as emu:
        yield emu


async def test_digest_login(locked: WarpEmulator, site: SiteModel) -> None:
    charger = make_charger(locked.url, username="admin", password=Secret(PASSWORD))
    await charger.apply(ChargerCommand(current_a=9.0, phases=3))
    assert (await charger.read()).current_a == 9.0
    assert site.state().offered_current_a == 9.0
    await charger.close()


@pytest.mark.parametrize("login", [{"username": "admin", "password": Secret("wrong-" + PASSWORD)}, {}])
async def test_failed_login_is_clear_and_never_leaks_the_password(
    locked: WarpEmulator,
    login: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    charger = make_charger(locked.url, **login)
    with structlog.testing.capture_logs() as events, pytest.raises(DeviceProtocolError) as err:
        await charger.read()
    await charger.close()
    assert str(err.value).startswith(f"{NAME}: authentication failed: check charger.username/password")
    captured = capsys.readouterr()
    everything = " ".join(
        [str(err.value), repr(err.value), caplog.text, repr(events), captured.out, captured.err]
    )
    assert PASSWORD not in everything
