"""WARP3 phase switching: the driver against the WARP emulator over loopback, on the site's simulated
clock (the test steps the site with ``site.advance``; nothing waits in real time).

Device facts under test: reference chargers.md §3.2–3.4 (``info/features`` ``phase_switch``,
``evse/phase_auto_switch``, ``evse/low_level_state.phases_state`` 1→7→0, ``power_manager/state.
external_control`` 0–3, ``power_manager/external_control {"phases_wanted": 1|3}`` and its 400 answers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import pairwise
from typing import Any

import httpx
import pytest
import structlog

from pvcharge.chargers.warp import Config, WarpCharger, limit_current_ma
from pvcharge.chargers.warp_phases import PHASE_REQUEST_INTERVAL_S
from pvcharge.clients.warp import PhaseSwitchState, parse_external_control, parse_low_level_state
from pvcharge.config import parse_config
from pvcharge.daemon import Cycle, Daemon
from pvcharge.errors import DeviceProtocolError, DeviceUnavailable, WriteDeferred
from pvcharge.readings import ChargerCommand, SiteReading
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace, load_trace
from pvcharge.sim.warp import WarpEmulator
from pvcharge.sim.warp_charger import PHASE_STEP_S

NAME = "charger warp-phases"
NOON_S = 12 * 3600  # car plugged in 08:00–18:00 local
VARIABLE_DAY = "/work/shared/traces/dtu_lyngby_2016-06-19_variable.csv"  # read-only, never copied
SWITCH_WALK_S = 7 * PHASE_STEP_S  # phases_state 1..7


def make_charger(
    url: str, site: SiteModel, *, transport: httpx.AsyncBaseTransport | None = None, **config: Any
) -> WarpCharger:
    settings = {"timeout_s": 1.0, "retries": 0, "phase_switching": True, **config}
    return WarpCharger(Config(url=url, **settings), name=NAME, clock=lambda: site.now, transport=transport)


def posts(emulator: WarpEmulator, path: str) -> int:
    return sum(1 for method, p in emulator.request_log if method == "POST" and p == path)


@pytest.fixture
def site() -> SiteModel:
    trace = bundled_trace()
    return SiteModel(trace, t_s=trace.start_s + NOON_S)


@pytest.fixture
async def emulator(site: SiteModel) -> AsyncIterator[WarpEmulator]:
    async with WarpEmulator(site, phase_switch=True) as emu:
        yield emu


@pytest.fixture
async def charger(emulator: WarpEmulator, site: SiteModel) -> AsyncIterator[WarpCharger]:
    driver = make_charger(emulator.url, site)
    yield driver
    await driver.close()


@pytest.fixture
async def http(emulator: WarpEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emulator.url) as client:
        yield client


async def switch_to_one_phase(charger: WarpCharger, site: SiteModel) -> None:
    """Request 1p and step the site past the walk; the next request to the box completes it."""
    with pytest.raises(WriteDeferred, match="switch to 1p requested"):
        await charger.apply(ChargerCommand(current_a=10.0, phases=1))
    site.advance(SWITCH_WALK_S)
    await charger.apply(ChargerCommand(current_a=10.0, phases=1))
    assert charger.box_phases == 1


# -- pure mapping ---------------------------------------------------------------------------------


def test_low_level_state_and_external_control_parse() -> None:
    idle = {"phases_current": 3, "phases_requested": 0, "phases_state": 0, "phases_info": 0}
    assert parse_low_level_state(idle) == PhaseSwitchState(3, 0, 3)  # phases_requested ignored when idle
    busy = parse_low_level_state({"phases_current": 3, "phases_requested": 1, "phases_state": 4})
    assert busy.switching and busy.phases_requested == 1
    assert busy.describe() == "phases_state 4 (switching) to 1p"
    assert parse_external_control({"config_error_flags": 0, "external_control": 2}) == 2
    for bad, message in [
        ({"phases_current": 2, "phases_state": 0}, "'phases_current' must be 1 or 3"),
        ({"phases_current": 1, "phases_state": 8}, r"'phases_state' must be 0\.\.7"),
        ({"phases_current": 1, "phases_state": 3, "phases_requested": 0}, "'phases_requested' must be"),
        ({"phases_state": 0}, "evse/low_level_state: missing field 'phases_current'"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_low_level_state(bad)
    with pytest.raises(ValueError, match=r"'external_control' must be 0\.\.3"):
        parse_external_control({"external_control": 4})


@pytest.mark.parametrize(
    ("current_ma", "phases", "box_phases", "expected_ma"),
    [
        (10000, 1, 1, 10000),  # the box has the commanded phases
        (10000, 3, 1, 10000),  # fewer phases: same current, less power
        (10000, 1, 3, 0),  # more phases: 3333 mA would keep the power, below 6 A: paused
        (24000, 1, 3, 8000),  # more phases: the same power
        (0, 1, 3, 0),
    ],
)
def test_current_on_other_phases_never_exceeds_the_command(
    current_ma: int, phases: int, box_phases: int, expected_ma: int
) -> None:
    assert limit_current_ma(current_ma, phases, box_phases) == expected_ma


def test_capability_follows_the_setting(site: SiteModel) -> None:
    assert make_charger("http://192.0.2.30", site).capabilities.phase_switching
    assert not make_charger("http://192.0.2.30", site, phase_switching=False).capabilities.phase_switching


# -- the switch sequence --------------------------------------------------------------------------


async def test_switch_to_one_phase_walks_phases_state_and_the_car_follows(
    charger: WarpCharger, emulator: WarpEmulator, site: SiteModel, http: httpx.AsyncClient
) -> None:
    await charger.apply(ChargerCommand(current_a=10.0, phases=3))  # the box starts on 3p: no switch
    preparation = [
        ("GET", "info/name"),
        ("GET", "info/features"),
        ("POST", "evse/phase_auto_switch"),
        ("GET", "evse/low_level_state"),
        ("POST", "evse/external_enabled"),
        ("POST", "evse/external_current"),
    ]
    assert list(emulator.request_log) == preparation
    assert (await http.get("evse/phase_auto_switch")).json() == {"enabled": False}
    assert (await http.get("power_manager/state")).json()["external_control"] == 1  # nothing requested yet
    site.advance(16)
    reading = await charger.read()
    assert (reading.charging, reading.phases, charger.box_phases) == (True, 3, 3)

    t0 = site.now
    with pytest.raises(WriteDeferred, match="switch to 1p requested; 10000 mA once the car is back") as err:
        await charger.apply(ChargerCommand(current_a=10.0, phases=1))
    assert err.value.retry_after_s == 0
    assert emulator.switch_log == [(t0, 1)]
    assert (await http.get("power_manager/external_control")).json() == {"phases_wanted": 1}

    walk = []
    for _ in range(8):
        low = (await http.get("evse/low_level_state")).json()
        pm = (await http.get("power_manager/state")).json()
        is_3phase = (await http.get("power_manager/low_level_state")).json()["is_3phase"]
        walk.append((low["phases_state"], low["phases_current"], pm["external_control"], is_3phase))
        if low["phases_state"] == 4:  # mid-switch: the driver asks nothing new, it only sets the current
            with pytest.raises(WriteDeferred, match=r"in progress \(phases_state 4 \(switching\) to 1p\)"):
                await charger.apply(ChargerCommand(current_a=10.0, phases=1))
        site.advance(PHASE_STEP_S)
    assert walk == [(s, 3, 3, True) for s in range(1, 8)] + [(0, 1, 0, False)]
    assert posts(emulator, "power_manager/external_control") == 1

    # the site got the new phases at the end of the walk: the drawing car pauses 30 s, then draws 1p
    assert site.state().offered_phases == 1
    reading = await charger.read()
    assert (reading.charging, charger.box_phases) == (False, 1)
    site.advance(31)
    reading = await charger.read()
    assert (reading.charging, reading.phases) == (True, 1)
    assert reading.power_w == pytest.approx(10 * 230)
    await charger.apply(ChargerCommand(current_a=12.0, phases=1))  # on the commanded phases: no deferral
    assert (await http.get("evse/external_current")).json() == {"current": 12000}
    assert posts(emulator, "power_manager/external_control") == 1
    assert posts(emulator, "evse/phase_auto_switch") == 1  # once per connection


async def test_without_meter_phases_the_reading_has_the_phases_the_box_switched_to(
    charger: WarpCharger, emulator: WarpEmulator, site: SiteModel, http: httpx.AsyncClient
) -> None:
    emulator.meter_phases = False  # a meter that does not report phases: meter/phases answers 404
    assert (await http.get("meter/phases")).status_code == 404
    await charger.apply(ChargerCommand(current_a=10.0, phases=3))
    site.advance(16)
    reading = await charger.read()
    assert (reading.charging, reading.phases) == (True, 3)

    await switch_to_one_phase(charger, site)
    site.advance(31)  # the car's pause around the switch
    emulator.request_log.clear()
    reading = await charger.read()
    assert ("GET", "meter/phases") in emulator.request_log  # asked, and not offered
    assert site.state().car_phases == 1
    assert (reading.charging, reading.phases) == (True, 1)  # what evse/low_level_state confirmed
    assert reading.power_w == pytest.approx(10 * 230)


# -- preconditions and refusals -------------------------------------------------------------------


async def test_box_without_phase_switch_feature_is_a_clear_error(site: SiteModel) -> None:
    async with WarpEmulator(site) as emu:  # a WARP3 not set up for external phase switching
        charger = make_charger(emu.url, site)
        with pytest.raises(DeviceProtocolError, match="does not offer it") as err:
            await charger.read()
        with pytest.raises(DeviceProtocolError, match="phase_switch"):
            await charger.apply(ChargerCommand(current_a=10.0, phases=1))
        await charger.close()
        assert all(method == "GET" for method, _ in emu.request_log)  # nothing was written
    message = str(err.value)
    for how in ("PV-excess charging off", '"external"', "EVSE >= 3.0", "phases_connected", "at boot"):
        assert how in message


async def test_warp2_is_refused(site: SiteModel) -> None:
    def box(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/info/name":
            return httpx.Response(200, json={"name": "warp2-x", "type": "warp2"})
        return httpx.Response(404)

    charger = make_charger("http://192.0.2.30", site, transport=httpx.MockTransport(box))
    with pytest.raises(DeviceProtocolError, match=r"WARP3 or WARP4.*'warp2'.*WARP Energy Manager"):
        await charger.apply(ChargerCommand(current_a=10.0, phases=1))
    await charger.close()


async def test_unavailable_external_control_defers_without_a_request(
    charger: WarpCharger, emulator: WarpEmulator, site: SiteModel, http: httpx.AsyncClient
) -> None:
    emulator.external_control_unavailable = True
    with structlog.testing.capture_logs() as events:
        for _ in range(3):
            with pytest.raises(WriteDeferred, match="external_control is 2: unavailable") as err:
                await charger.apply(ChargerCommand(current_a=10.0, phases=1))
            site.advance(5)
    assert posts(emulator, "power_manager/external_control") == 0
    assert emulator.switch_log == []
    # 10 A meant for 1p would be 30 A worth of power on the box's 3p; 3.3 A is below 6 A: paused
    assert "0 mA on 3p meanwhile" in err.value.message
    assert (await http.get("evse/external_current")).json() == {"current": 0}
    assert len([e for e in events if e["event"] == "warp.phase_switch_unavailable"]) == 1  # logged once

    emulator.external_control_unavailable = False
    with pytest.raises(WriteDeferred, match="requested"):
        await charger.apply(ChargerCommand(current_a=10.0, phases=1))
    assert posts(emulator, "power_manager/external_control") == 1


async def test_refused_switch_backs_off_instead_of_looping(
    charger: WarpCharger, emulator: WarpEmulator, site: SiteModel, http: httpx.AsyncClient
) -> None:
    await switch_to_one_phase(charger, site)
    site.advance(PHASE_REQUEST_INTERVAL_S)  # past the back-off after that request
    emulator.phases_info_single_phase_car = True  # the box refuses 3p (chargers.md §3.4)
    requests_before = posts(emulator, "power_manager/external_control")
    writes_before = posts(emulator, "evse/external_current")
    deferred: list[WriteDeferred] = []
    with structlog.testing.capture_logs() as events:
        for _ in range(36):  # three minutes of 5-s cycles, each offering the 3p command again
            with pytest.raises(WriteDeferred) as err:
                await charger.apply(ChargerCommand(current_a=6.0, phases=3))
            deferred.append(err.value)
            site.advance(5)
    first = deferred[0]
    assert "the box refused it (HTTP 400): Can't switch to three phases" in first.message
    assert first.retry_after_s == PHASE_REQUEST_INTERVAL_S
    assert "less than 60 s ago" in deferred[1].message and deferred[1].retry_after_s == 55
    # one request per minute, while the current kept being written (6 A on 1p: less than commanded)
    assert posts(emulator, "power_manager/external_control") - requests_before == 3
    assert posts(emulator, "evse/external_current") - writes_before == 36
    assert (await http.get("evse/external_current")).json() == {"current": 6000}
    refused = [e for e in events if e["event"] == "warp.phase_switch_refused"]
    assert len(refused) == 3 and refused[0]["log_level"] == "warning"
    assert emulator.switch_log[-1][1] == 1 and charger.box_phases == 1

    emulator.phases_info_single_phase_car = False  # e.g. another car: the next try after the back-off works
    site.advance(PHASE_REQUEST_INTERVAL_S)
    with pytest.raises(WriteDeferred, match="switch to 3p requested"):
        await charger.apply(ChargerCommand(current_a=6.0, phases=3))
    assert emulator.switch_log[-1] == (site.now, 3)


async def test_no_request_while_another_switch_runs(
    charger: WarpCharger, emulator: WarpEmulator, site: SiteModel, http: httpx.AsyncClient
) -> None:
    assert (await http.post("power_manager/external_control", content="1")).status_code == 200  # not ours
    with pytest.raises(WriteDeferred, match=r"another switch is in progress \(phases_state 1 \(stopping"):
        await charger.apply(ChargerCommand(current_a=8.0, phases=3))
    assert posts(emulator, "power_manager/external_control") == 1
    assert (await http.get("evse/external_current")).json() == {"current": 8000}  # on 1p: less power
    site.advance(SWITCH_WALK_S)
    with pytest.raises(WriteDeferred, match="switch to 3p requested"):  # once the other switch is done
        await charger.apply(ChargerCommand(current_a=8.0, phases=3))
    assert [phases for _, phases in emulator.switch_log] == [1, 3]


async def test_last_phases_wanted_is_sent_again_after_a_reconnect(
    charger: WarpCharger, emulator: WarpEmulator, site: SiteModel
) -> None:
    await switch_to_one_phase(charger, site)
    assert posts(emulator, "power_manager/external_control") == 1
    await charger.read()
    assert posts(emulator, "power_manager/external_control") == 1  # no re-send without a broken connection

    emulator.online = False
    with pytest.raises(DeviceUnavailable):
        await charger.read()
    emulator.online = True
    site.advance(PHASE_REQUEST_INTERVAL_S)
    emulator.request_log.clear()
    with structlog.testing.capture_logs() as events:
        await charger.read()
    assert list(emulator.request_log)[:6] == [
        ("GET", "info/name"),
        ("GET", "info/features"),
        ("POST", "evse/phase_auto_switch"),
        ("GET", "power_manager/state"),
        ("POST", "power_manager/external_control"),
        ("GET", "evse/state"),
    ]
    assert any(e["event"] == "warp.phases_resend" and e["phases"] == 1 for e in events)
    assert charger.box_phases == 1 and emulator.switch_log[-1][1] == 1  # already there: no new switch
    await charger.read()
    assert posts(emulator, "power_manager/external_control") == 1  # sent once per reconnect


# -- the emulator's HTTP surface ------------------------------------------------------------------


async def test_emulator_phase_requests_and_their_refusals(
    http: httpx.AsyncClient, emulator: WarpEmulator, site: SiteModel
) -> None:
    invalid = "Invalid value for phases_wanted! Only 1 or 3 are allowed."
    for body in ("0", "2", '"1"', "true"):
        bad = await http.post("power_manager/external_control", content=body)
        assert (bad.status_code, bad.text) == (400, invalid)
    started = await http.put("power_manager/external_control_update", json={"phases_wanted": 1})
    assert started.status_code == 200
    same = await http.post("power_manager/external_control", content="1")
    assert same.status_code == 200  # the same request while busy is ignored
    different = await http.post("power_manager/external_control", json={"phases_wanted": 3})
    assert (different.status_code, different.text) == (400, "Phase switching in progress.")
    assert len(emulator.switch_log) == 1
    site.advance(SWITCH_WALK_S)
    assert (await http.get("evse/low_level_state")).json()["phases_current"] == 1

    emulator.external_control_unavailable = True
    assert (await http.get("power_manager/state")).json()["external_control"] == 2
    assert (await http.post("power_manager/external_control", content="3")).status_code == 400
    emulator.external_control_unavailable = False
    emulator.phases_info_single_phase_car = True
    assert (await http.get("evse/low_level_state")).json()["phases_info"] == 1
    assert (await http.post("power_manager/external_control", content="3")).status_code == 400
    assert (await http.post("power_manager/external_control", content="1")).status_code == 200  # already 1p
    assert len(emulator.switch_log) == 1
    assert (await http.post("evse/phase_auto_switch", content="1")).status_code == 400


async def test_emulator_without_phase_switch_has_no_power_manager(site: SiteModel) -> None:
    async with WarpEmulator(site) as emu, httpx.AsyncClient(base_url=emu.url) as http:
        assert "phase_switch" not in (await http.get("info/features")).json()
        assert (await http.get("power_manager/state")).status_code == 404
        assert (await http.post("power_manager/external_control", content="1")).status_code == 404
        assert (await http.get("evse/low_level_state")).json()["phases_current"] == 3
    with pytest.raises(ValueError, match="phases_connected"):
        WarpEmulator(site, phases_connected=1, phase_switch=True)


# -- a variable PV afternoon through the daemon ---------------------------------------------------


class SiteMeter:
    """The site's own meter values as a meter driver, stamped with the site's clock."""

    name = "meter site-model"

    def __init__(self, site: SiteModel) -> None:
        self.site = site

    async def read(self) -> SiteReading:
        s = self.site.state()
        return SiteReading(
            grid_power_w=s.grid_power_w,
            pv_power_w=s.pv_power_w,
            battery_power_w=s.battery_power_w,
            battery_soc_pct=s.battery_soc_pct,
            timestamp_s=s.t_s,
        )

    async def close(self) -> None:
        return None


@pytest.mark.timeout(60)
async def test_variable_afternoon_switches_phases_within_the_hysteresis() -> None:
    """Three hours (13:30–16:30) of a variable June day through the real daemon, controller, driver
    and emulator, 10-s cycles on the site's clock; switch settings tighter than the defaults (the same
    evidence both ways, no growth per switch) so the interval and the hourly cap both bind."""
    trace = load_trace(VARIABLE_DAY)
    site = SiteModel(trace, t_s=trace.start_s + 13.5 * 3600)
    interval_s, min_gap_s, per_hour = 10.0, 600.0, 3
    cycles: list[Cycle] = []
    box_phases: list[int | None] = []
    async with WarpEmulator(site, phase_switch=True) as emu:
        config = parse_config(
            "meter: {type: huawei, host: 127.0.0.1}\n"
            f"charger: {{type: warp, url: '{emu.url}', phases: auto, phase_switching: true}}\n"
            f"control: {{interval_s: {interval_s:g}, phase_window_s: 300, phase_switch_gain_wh: 30, "
            "phase_down_gain_wh: 30, phase_switch_gain_growth: 1, "
            f"phase_switch_interval_s: {min_gap_s:g}, phase_switches_per_hour: {per_hour}}}\n"
        )
        charger = config.charger.create(name=NAME, clock=lambda: site.now)
        daemon = Daemon(config, SiteMeter(site), charger, clock=lambda: site.now)
        while site.now < trace.start_s + 16.5 * 3600:
            cycles.append(await daemon.cycle())
            box_phases.append(charger.box_phases)  # as read at the start of the cycle
            site.advance(interval_s)
        await charger.close()

    stats = daemon.stats
    assert stats.charger_failures == 0 and stats.write_failures == 0
    commanded = [
        (c.now, c.decision.command.phases)
        for prev, c in pairwise(cycles)
        if c.decision.command.phases != prev.decision.command.phases
    ]
    # the box starts on 3p, the controller on 1p: the first cycle aligns the box (the car is paused),
    # then the box switches exactly when the controller commands, and each switch is one deferred write
    assert emu.switch_log[0] == (cycles[0].now, 1) and cycles[0].decision.command == ChargerCommand(0.0, 1)
    assert emu.switch_log[1:] == commanded
    assert {p for _, p in commanded} == {1, 3} and len(commanded) >= 5, commanded
    assert stats.deferred_writes == len(emu.switch_log)
    times = [t for t, _ in commanded]
    assert all(later - earlier >= min_gap_s for earlier, later in pairwise(times))
    assert all(sum(1 for t in times if start <= t < start + 3600) <= per_hour for start in times)
    # the switch takes 7 s, less than a cycle: every read finds the box on the previous command's phases
    for i in range(1, len(cycles)):
        assert box_phases[i] == cycles[i - 1].decision.command.phases, f"cycle {i} at {cycles[i].now}"
    # after the car's 30-s pause it draws on the box's phases
    settled = [
        (c.charger.phases, box_phases[i])
        for i, c in enumerate(cycles)
        if c.charger is not None
        and c.charger.charging
        and all(c.now - t >= 60 for t in [cycles[0].now, *times] if t <= c.now)
    ]
    assert settled and all(drawn == box for drawn, box in settled)
