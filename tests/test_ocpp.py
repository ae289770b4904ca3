"""The OCPP 1.6J charger: pvcharge's central system (pvcharge.chargers.ocpp, pvcharge.clients.ocpp) against
the charge point emulator (pvcharge.sim.ocpp), both on the mobilityhouse ocpp library, over loopback
WebSockets; and the real daemon with both through a disconnect and its shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sitestub import FakeClock, eventually
from test_daemon_e2e import write_trace

from pvcharge.chargers.ocpp import REJECTED_RETRY_S, OcppCharger
from pvcharge.chargers.ocpp import Config as OcppConfig
from pvcharge.chargers.ocpp_mapping import (
    charging_profile,
    parse_configuration,
    quirks_for,
    reading_from_state,
)
from pvcharge.clients.ocpp import ConnectorState, sample_key, sample_value
from pvcharge.config import parse_config
from pvcharge.daemon import Cycle, Daemon
from pvcharge.errors import DeviceProtocolError, DeviceUnavailable
from pvcharge.readings import ChargerCommand, ChargerReading, IecState
from pvcharge.settings import Secret, SettingError
from pvcharge.sim.demo import SimClock
from pvcharge.sim.demo_devices import demo_config_for, huawei_meter
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.ocpp import OcppChargePointEmulator
from pvcharge.sim.site import CarParams, SiteModel
from pvcharge.sim.trace import Trace, load_trace

PASSWORD = "a-test-password-16"  # a throwaway value for the loopback tests


async def first_reading(driver: OcppCharger) -> ChargerReading:
    """Read until the box has connected and reported its status."""
    deadline = time.monotonic() + 20.0
    while True:
        try:
            return await driver.read()
        except DeviceUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


@pytest.fixture
def trace(tmp_path: Path) -> Trace:
    # PV near 4 kW, moving a little each minute (a meter repeating its values would read as frozen)
    return load_trace(write_trace(tmp_path / "day.csv", [4000.0 + 100 * (m % 3) for m in range(120)]))


def site_for(trace: Trace, clock: SimClock) -> SiteModel:
    """The car plugged in all day, no home battery (the grid meter sees the surplus directly)."""
    return SiteModel(
        trace, t_s=trace.start_s, clock=clock.now, battery=None, car=CarParams(plug_in_s=0, plug_out_s=86400)
    )


@contextlib.asynccontextmanager
async def connected(
    trace: Trace,
    *,
    driver_clock: Callable[[], float] | None = None,
    speed: float = 50.0,
    keys: dict[str, Any] | None = None,
    **emulator: Any,
) -> AsyncIterator[tuple[OcppCharger, OcppChargePointEmulator]]:
    """A driver listening on a free loopback port and the emulator connected to it."""
    clock = SimClock(trace.start_s, speed=speed)
    site = site_for(trace, clock)
    driver = OcppCharger(
        OcppConfig(charge_point_id="CP1", port=0, **(keys or {})),
        name="charger ocpp",
        clock=driver_clock or clock.now,
    )
    url = await driver.listen()
    try:
        async with OcppChargePointEmulator(site, url, sleep=clock.sleep, **emulator) as emu:
            await eventually(emu.connected.is_set, "the emulator to connect")
            yield driver, emu
    finally:
        await driver.close()


# -- pure mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "iec", "connected", "charging"),
    [
        ("Available", IecState.A, False, False),
        ("Preparing", IecState.B, True, False),
        ("SuspendedEVSE", IecState.B, True, False),
        ("SuspendedEV", IecState.B, True, False),
        ("Finishing", IecState.B, True, False),
        ("Charging", IecState.C, True, True),
        ("Faulted", IecState.F, False, False),
        ("Unavailable", IecState.A, False, False),
    ],
)
def test_status_notification_maps_to_iec_state(
    status: str, iec: IecState, connected: bool, charging: bool
) -> None:
    reading = reading_from_state(
        ConnectorState(status=status), limit_a=0.0, limit_phases=None, timestamp_s=1.0
    )
    assert (reading.iec_state, reading.connected, reading.charging) == (iec, connected, charging)


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="Dancing"):
        reading_from_state(ConnectorState(status="Dancing"), limit_a=0.0, limit_phases=None, timestamp_s=1.0)


def test_sampled_values_convert_units_and_phases() -> None:
    assert sample_value({"measurand": "Power.Active.Import", "unit": "kW", "value": "3.68"}) == pytest.approx(
        3680
    )
    assert sample_value({"value": "12.5", "unit": "kWh"}) == pytest.approx(12500)
    assert sample_value({"value": "900"}) == 900  # default Energy.Active.Import.Register in Wh
    assert sample_key({"value": "900"}) == "Energy.Active.Import.Register"
    assert sample_key({"measurand": "Current.Import", "phase": "L2-N"}) == "Current.Import.L2"
    with pytest.raises(ValueError):
        sample_value({"measurand": "SoC", "value": "n/a"})


def test_reading_uses_phase_currents_power_and_offered_current() -> None:
    state = ConnectorState(
        status="Charging",
        transaction_id=7,
        samples={
            "Power.Active.Import": 2300.0,
            "Current.Import.L1": 10.0,
            "Current.Import.L2": 0.2,
            "Current.Import.L3": 0.0,
            "Current.Offered": 10.0,
        },
    )
    reading = reading_from_state(state, limit_a=12.0, limit_phases=None, timestamp_s=5.0)
    assert (reading.power_w, reading.phases, reading.current_a) == (2300.0, 1, 10.0)
    assert reading.phase_currents_a == (10.0, 0.2, 0.0)
    # after the transaction the old samples are not the car's power any more
    idle = reading_from_state(
        dataclasses.replace(state, status="Available", transaction_id=None),
        limit_a=12.0,
        limit_phases=None,
        timestamp_s=5.0,
    )
    assert (idle.power_w, idle.phases) == (0.0, 0)


def test_an_offered_current_does_not_outlive_its_transaction() -> None:
    """Current.Offered comes with MeterValues, sent during a transaction only: after it the reading's
    current is the accepted limit, not the last session's offer."""
    state = ConnectorState(status="Available", samples={"Current.Offered": 16.0})
    reading = reading_from_state(state, limit_a=0.0, limit_phases=None, timestamp_s=1.0)
    assert reading.current_a == 0.0


def test_negative_power_is_noise_or_a_named_error() -> None:
    def charging(power_w: float) -> ChargerReading:
        state = ConnectorState(status="Charging", transaction_id=1, samples={"Power.Active.Import": power_w})
        return reading_from_state(state, limit_a=6.0, limit_phases=None, timestamp_s=1.0)

    assert charging(-30.0).power_w == 0.0  # meter noise
    assert charging(-50.0).power_w == 0.0  # the edge of readings.CHARGING_POWER_NOISE_W
    with pytest.raises(ValueError, match=r"Power\.Active\.Import is -50\.5 W.*reverse"):
        charging(-50.5)
    with pytest.raises(ValueError, match=r"Power\.Active\.Import is -120 W.*reverse"):
        charging(-120.0)


def test_profile_is_a_tx_default_profile_in_amps() -> None:
    from datetime import UTC, datetime

    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    profile = charging_profile(7.46, 1, unit="A", stack_level=3, start=start)
    assert profile["charging_profile_purpose"] == "TxDefaultProfile"
    assert profile["stack_level"] == 3
    schedule = profile["charging_schedule"]
    assert schedule["charging_rate_unit"] == "A"
    assert schedule["start_schedule"] == "2026-01-01T12:00:00Z"
    assert schedule["charging_schedule_period"] == [{"start_period": 0, "limit": 7.5, "number_phases": 1}]
    watts = charging_profile(10, None, unit="W", stack_level=0, start=start)["charging_schedule"]
    assert watts["charging_schedule_period"] == [{"start_period": 0, "limit": 6900.0}]  # 10 A × 3 × 230 V


def test_get_configuration_is_parsed() -> None:
    box = parse_configuration(
        [
            {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Power"},
            {"key": "connectorswitch3to1phasesupported", "readonly": True, "value": "true"},
            {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "5"},
            {"key": "SupportedFeatureProfiles", "readonly": True, "value": "Core,SmartCharging"},
        ]
    )
    assert (box.rate_unit, box.phase_switch, box.max_stack_level) == ("W", True, 5)
    assert box.smart_charging and not box.remote_trigger
    assert parse_configuration(None).rate_unit == "A"


def test_config_needs_a_password_off_loopback() -> None:
    with pytest.raises(SettingError, match="password"):
        OcppConfig(charge_point_id="CP1", listen="0.0.0.0")
    OcppConfig(charge_point_id="CP1", listen="0.0.0.0", password=Secret(PASSWORD))
    with pytest.raises(SettingError, match="charge_point_id"):
        OcppConfig(charge_point_id="a/b")
    assert OcppConfig(charge_point_id="CP1", id_tags=" 04A1, 04B2 ,").accepted_id_tags() == {"04A1", "04B2"}


# -- driver against the emulator ------------------------------------------------------------------


async def test_boot_status_and_meter_values(trace: Trace) -> None:
    async with connected(trace) as (driver, emu):
        # a late read and an apply may meet on a new connection: the setup runs once
        await asyncio.gather(driver.read(), driver.read(), return_exceptions=True)
        assert emu.traffic.accepted["GetConfiguration"] == 1
        reading = await first_reading(driver)
        assert reading.connected
        assert driver.central.boot is not None and driver.central.boot["vendor"] == "pvcharge"
        # the setup asked for the measurands and the interval
        assert emu.meter_interval_s == 5
        assert set(emu.measurands.split(",")) >= {"Power.Active.Import", "Current.Import", "SoC"}
        # without a profile the box offers its maximum: the car charges on 3 phases at 32 A
        await eventually(
            lambda: driver.central.state.samples.get("Power.Active.Import", 0) > 0, "meter values"
        )
        reading = await driver.read()
        assert reading.charging and reading.iec_state == IecState.C
        assert reading.power_w == pytest.approx(32 * 3 * 230)
        assert (reading.phases, reading.phase_currents_a) == (3, (32.0, 32.0, 32.0))
        assert driver.soc_pct is not None and 20 <= driver.soc_pct <= 21
        assert driver.central.traffic.received["BootNotification"] == 1
        assert driver.central.traffic.received["StartTransaction"] == 1


async def test_profile_in_amps_on_three_phases(trace: Trace) -> None:
    async with connected(trace) as (driver, emu):
        await first_reading(driver)
        await driver.apply(ChargerCommand(10.0, 3))
        profile = emu.profiles[-1]
        assert profile["charging_profile_purpose"] == "TxDefaultProfile"
        period = profile["charging_schedule"]["charging_schedule_period"][0]
        assert profile["charging_schedule"]["charging_rate_unit"] == "A"
        assert period["limit"] == 10.0 and "number_phases" not in period  # no phase switching configured
        assert (emu.site.state().offered_current_a, emu.site.state().offered_phases) == (10.0, 3)
        await eventually(lambda: driver.central.state.samples.get("Current.Import.L1") == 10.0, "10 A drawn")
        reading = await driver.read()
        assert (reading.current_a, reading.phases) == (10.0, 3)
        # a pause is a profile of 0 A
        await driver.apply(ChargerCommand(0.0, 3))
        assert emu.profiles[-1]["charging_schedule"]["charging_schedule_period"][0]["limit"] == 0.0
        await eventually(lambda: driver.central.state.status == "SuspendedEVSE", "the car paused")


async def test_without_phase_currents_the_phases_are_the_commands(trace: Trace) -> None:
    """A box that sends no per-phase Current.Import: a one-phase installation reads 1 phase, not 3."""
    async with connected(trace, phases_connected=1) as (driver, emu):
        await first_reading(driver)
        await driver.apply(ChargerCommand(10.0, 1))
        emu.measurands = "Power.Active.Import"
        sent = driver.central.traffic.received["MeterValues"]
        # two more: the one in flight when the measurands changed, and one without phase currents
        await eventually(lambda: driver.central.traffic.received["MeterValues"] >= sent + 2, "meter values")
        for phase in (1, 2, 3):
            driver.central.state.samples.pop(f"Current.Import.L{phase}", None)
        await eventually(lambda: driver.central.state.status == "Charging", "charging")
        reading = await driver.read()
        assert (reading.phase_currents_a, reading.phases) == (None, 1)


async def test_profiles_switch_between_one_and_three_phases(trace: Trace) -> None:
    async with connected(trace, keys={"phase_switching": True}, phase_switch=True) as (driver, emu):
        await first_reading(driver)
        assert driver.capabilities.phase_switching
        await driver.apply(ChargerCommand(8.0, 1))
        period = emu.profiles[-1]["charging_schedule"]["charging_schedule_period"][0]
        assert (period["limit"], period["number_phases"]) == (8.0, 1)
        assert emu.site.state().offered_phases == 1
        await eventually(lambda: emu.site.state().car_phases == 1, "the car on one phase")
        await driver.apply(ChargerCommand(8.0, 3))
        period = emu.profiles[-1]["charging_schedule"]["charging_schedule_period"][0]
        assert period["number_phases"] == 3 and emu.site.state().offered_phases == 3


async def test_phase_switching_needs_the_box_to_offer_it(trace: Trace) -> None:
    async with connected(trace, keys={"phase_switching": True}, phase_switch=False) as (driver, _):
        with pytest.raises(DeviceProtocolError, match="ConnectorSwitch3to1PhaseSupported"):
            await first_reading(driver)


async def test_a_box_that_takes_watts_gets_watts(trace: Trace) -> None:
    async with connected(trace, rate_unit="Power") as (driver, emu):
        await first_reading(driver)
        await driver.apply(ChargerCommand(10.0, 3))
        schedule = emu.profiles[-1]["charging_schedule"]
        assert schedule["charging_rate_unit"] == "W"
        assert schedule["charging_schedule_period"][0]["limit"] == 6900.0
        assert emu.site.state().offered_current_a == pytest.approx(10.0)


async def test_a_one_phase_box_that_takes_watts_gets_one_phase_of_watts(trace: Trace) -> None:
    """Without numberPhases the W limit is for the phases the car draws on (the command's), as evcc does
    (``charger/ocpp.go`` createTxDefaultChargingProfile): 10 A on one phase is 2300 W, not 6900 W."""
    async with connected(trace, rate_unit="Power", phases_connected=1) as (driver, emu):
        await first_reading(driver)
        await driver.apply(ChargerCommand(10.0, 1))
        assert emu.profiles[-1]["charging_schedule"]["charging_schedule_period"][0]["limit"] == 2300.0
        assert emu.site.state().offered_current_a == pytest.approx(10.0)


async def test_vendor_quirks_from_the_boot_notification(trace: Trace) -> None:
    """ABB's Terra AC takes profiles at stack level 0 only; Easee keeps a meter interval of 30 s."""
    async with connected(trace, vendor="ABB", stack_level_zero=True) as (driver, emu):
        await first_reading(driver)
        assert driver.quirks is not None and driver.quirks.vendor == "ABB"
        await driver.apply(ChargerCommand(10.0, 3))
        assert emu.profiles[-1]["stack_level"] == 0
    # the same box under another name gets the box's highest stack level, and refuses it
    async with connected(trace, vendor="Acme", stack_level_zero=True) as (driver, emu):
        await first_reading(driver)
        with pytest.raises(DeviceProtocolError, match="Rejected"):
            await driver.apply(ChargerCommand(10.0, 3))
    async with connected(trace, vendor="Easee AS") as (driver, emu):
        await first_reading(driver)
        assert emu.meter_interval_s == 30
        assert quirks_for("easee") is not None and quirks_for("Wallbox") is None


async def test_a_rejected_profile_is_reported_and_not_resent_in_a_loop(trace: Trace) -> None:
    clock = FakeClock(trace.start_s)
    async with connected(trace, driver_clock=clock) as (driver, emu):
        await first_reading(driver)
        emu.reject_profiles = True
        with pytest.raises(DeviceProtocolError, match=r"SetChargingProfile TxDefaultProfile 8 A.*Rejected"):
            await driver.apply(ChargerCommand(8.0, 3))
        assert emu.traffic.refused["SetChargingProfile Rejected"] == 1
        for _ in range(5):  # the daemon offers a failed write again every cycle
            clock.advance(5)
            with pytest.raises(DeviceProtocolError, match="not sent again"):
                await driver.apply(ChargerCommand(8.0, 3))
        assert emu.traffic.refused["SetChargingProfile Rejected"] == 1
        # another command goes out, and the same one again after REJECTED_RETRY_S
        with pytest.raises(DeviceProtocolError, match="Rejected"):
            await driver.apply(ChargerCommand(9.0, 3))
        clock.advance(REJECTED_RETRY_S)
        emu.reject_profiles = False
        await driver.apply(ChargerCommand(9.0, 3))
        assert emu.limit_a == 9.0


async def test_a_refused_decrease_stops_the_transaction_until_a_limit_is_accepted(trace: Trace) -> None:
    """A refused lower limit would leave the car above the command: the transaction is stopped instead,
    and started again once a limit above 0 A is accepted. A refused increase stops nothing."""
    async with connected(trace) as (driver, emu):
        await first_reading(driver)
        await eventually(lambda: emu.transaction_id is not None, "the transaction")
        await driver.apply(ChargerCommand(10.0, 3))
        emu.reject_profiles = True
        with pytest.raises(DeviceProtocolError, match="Rejected") as refused:
            await driver.apply(ChargerCommand(16.0, 3))
        assert "RemoteStop" not in str(refused.value) and emu.transaction_id is not None
        with pytest.raises(DeviceProtocolError, match="RemoteStopTransaction"):
            await driver.apply(ChargerCommand(8.0, 3))
        await eventually(lambda: emu.transaction_id is None, "the transaction stopped")
        await eventually(lambda: emu.site.state().car_current_a == 0, "the car stopped")
        assert emu.limit_a == 10.0  # the box kept the old limit: without the stop it would charge at 10 A
        emu.reject_profiles = False
        await driver.apply(ChargerCommand(9.0, 3))  # (8 A is not sent again for REJECTED_RETRY_S)
        assert emu.traffic.accepted["RemoteStartTransaction"] == 1
        await eventually(lambda: emu.site.state().car_current_a == 9.0, "charging again at 9 A")


async def test_no_meter_values_while_charging_reads_as_stale(trace: Trace) -> None:
    clock = FakeClock(trace.start_s)
    async with connected(trace, driver_clock=clock) as (driver, emu):
        await eventually(lambda: driver.central.state.status == "Charging", "charging")
        await first_reading(driver)
        emu.meter_values = False
        clock.advance(11)  # 2 intervals: the driver asks for them
        triggers = emu.traffic.accepted["TriggerMessage"]
        await driver.read()
        assert emu.traffic.accepted["TriggerMessage"] == triggers + 1
        clock.advance(15)  # 3 intervals + 10 s without any
        with pytest.raises(DeviceUnavailable, match="no MeterValues"):
            await driver.read()


async def test_wrong_password_is_refused(trace: Trace) -> None:
    keys = {"password": Secret(PASSWORD)}
    async with connected(trace, keys=keys, password=PASSWORD) as (driver, _):
        assert (await first_reading(driver)).connected  # the right password connects
    clock = SimClock(trace.start_s, speed=50.0)
    for password in ("wrong-password-1234", None):
        driver = OcppCharger(
            OcppConfig(charge_point_id="CP1", port=0, **keys), name="charger ocpp", clock=clock.now
        )
        url = await driver.listen()
        try:
            async with OcppChargePointEmulator(
                site_for(trace, clock), url, password=password, sleep=clock.sleep
            ) as emu:
                await eventually(lambda: emu.last_refusal is not None, "the refusal")
                assert emu.last_refusal == 401 and not emu.connected.is_set()
                with pytest.raises(DeviceUnavailable, match="not connected"):
                    await driver.read()
                assert driver.central.traffic.connections == 0
        finally:
            await driver.close()


async def test_another_charge_point_id_is_refused(trace: Trace) -> None:
    clock = SimClock(trace.start_s, speed=50.0)
    driver = OcppCharger(OcppConfig(charge_point_id="CP1", port=0), name="charger ocpp", clock=clock.now)
    url = await driver.listen()
    try:
        async with OcppChargePointEmulator(
            site_for(trace, clock), url[: -len("CP1")] + "CP2", sleep=clock.sleep
        ) as emu:
            await eventually(lambda: emu.last_refusal is not None, "the refusal")
            assert emu.last_refusal == 404
    finally:
        await driver.close()


# -- the daemon -----------------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_daemon_through_a_disconnect_and_shutdown(trace: Trace) -> None:
    """The real daemon charges through OCPP; the box goes away mid-session (reads fail: the charger is
    stale), comes back and gets the daemon's command again; on shutdown it is left with a 0 A profile."""
    clock = SimClock(trace.start_s, speed=100.0, paced=True)
    site = site_for(trace, clock)
    base = parse_config(
        "meter: {type: huawei, host: 127.0.0.1}\n"
        "charger: {type: ocpp, charge_point_id: CP1, phases: 1, max_current_a: 16}\n"
        "control: {interval_s: 5, cloud_filter: 60, grid_tolerance_s: 120}\n"
    )
    cycles: list[Cycle] = []
    async with HuaweiEmulator(site) as meter_emu:
        config = demo_config_for(
            huawei_meter(meter_emu.port), "type: ocpp, charge_point_id: CP1, port: 0", base
        )
        meter = config.meter.create(name="meter", clock=clock.now)
        charger = config.charger.create(name="charger ocpp", clock=clock.now)
        url = await charger.listen()
        async with OcppChargePointEmulator(site, url, sleep=clock.sleep, phases_connected=1) as emu:
            daemon = Daemon(config, meter, charger, clock=clock.now, sleep=clock.pace, on_cycle=cycles.append)
            stop = asyncio.Event()
            running = asyncio.create_task(daemon.run(stop))
            # PV 4 kW, house 300 W: the daemon starts the car on the 1-phase box (6–16 A)
            await eventually(lambda: (emu.limit_a or 0) >= 6 and site.state().car_current_a > 0, "charging")
            assert "number_phases" not in emu.profiles[-1]["charging_schedule"]["charging_schedule_period"][0]
            failures = daemon.stats.charger_failures
            await emu.disconnect()
            await eventually(
                lambda: daemon.stats.charger_failures >= failures + 3, "reads failing while away"
            )
            assert not charger.central.connected
            assert all(c.charger is None for c in cycles[-3:])  # stale: no charger reading
            sent = len(emu.profiles)
            emu.reconnect()
            await eventually(
                lambda: len(emu.profiles) > sent and cycles[-1].charger is not None, "the resend"
            )
            await eventually(
                lambda: emu.limit_a == cycles[-1].decision.command.current_a, "the command in force"
            )
            assert charger.central.traffic.connections == 2
            stop.set()
            await running
            # the exit pause went out before the socket closed: the box holds a 0 A profile
            assert emu.profiles[-1]["charging_schedule"]["charging_schedule_period"][0]["limit"] == 0.0
            assert emu.limit_a == 0.0
            await eventually(lambda: not emu.connected.is_set(), "the socket closed")
    assert daemon.stats.charger_writes >= 2


# -- a charge point not written by pvcharge -------------------------------------------------------


def independent_client() -> Any:
    """test-ocpp's client module (PyPI test-ocpp 1.0.0, the dev extra).  Its import name is this file's
    module name, so it is loaded from where it is installed."""
    import importlib.util
    from importlib.metadata import distribution

    name = "independent_ocpp_client"
    if name not in sys.modules:
        path = Path(str(distribution("test-ocpp").locate_file("test_ocpp/client.py")))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


async def test_an_independent_charge_point_client_boots_against_the_central_system() -> None:
    """test-ocpp (PyPI, M. Mathiasen; its own OCPP-J framing on websockets, not the ocpp library) connects,
    boots and sends a heartbeat; with a wrong password its upgrade is refused with 401, and offering only
    OCPP 2.0.1 with 400."""
    from websockets.exceptions import InvalidStatus

    check_connection = independent_client().check_connection

    driver = OcppCharger(
        OcppConfig(charge_point_id="CP7", port=0, password=Secret(PASSWORD)),
        name="charger ocpp",
        clock=time.time,
    )
    url = (await driver.listen()).removesuffix("/CP7")
    try:
        result = await check_connection(url, "CP7", password=PASSWORD, timeout=10)
        assert result.subprotocol == "ocpp1.6"
        assert result.boot_notification["status"] == "Accepted"
        assert result.boot_notification["interval"] > 0 and result.heartbeat["currentTime"]
        assert driver.central.boot is not None and driver.central.boot["vendor"] == "TestVendor"
        assert driver.central.traffic.received["Heartbeat"] == 1
        with pytest.raises(InvalidStatus) as refused:
            await check_connection(url, "CP7", password="not-the-password", timeout=10)
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as other_version:
            await check_connection(url, "CP7", password=PASSWORD, ocpp="2.0.1", timeout=10)
        assert other_version.value.response.status_code == 400  # no common subprotocol
    finally:
        await driver.close()


async def test_tls_security_profile_2(tmp_path: Path) -> None:
    """With tls_cert_file/tls_key_file the central system serves wss://; test-ocpp connects with the CA."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cs.crt", tmp_path / "cs.key", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(ca_file))
    client = independent_client()
    config = OcppConfig(
        charge_point_id="CP7",
        port=0,
        password=Secret(PASSWORD),
        tls_cert_file=str(cert_file),
        tls_key_file=str(key_file),
    )
    driver = OcppCharger(config, name="charger ocpp", clock=time.time)
    url = await driver.listen()
    assert url.startswith("wss://")
    try:
        result = await client.check_connection(
            url.removesuffix("/CP7"), "CP7", password=PASSWORD, ca=str(ca_file), timeout=10
        )
        assert result.tls_version is not None and result.boot_notification["status"] == "Accepted"
    finally:
        await driver.close()
    with pytest.raises(SettingError, match="tls_key_file"):
        OcppConfig(charge_point_id="CP7", tls_cert_file=str(cert_file))


def test_the_ocpp_librarys_message_lines_only_at_debug_level() -> None:
    """The ocpp library logs every message it sends and receives at info level (a MeterValues every few
    seconds): pvcharge shows those at debug level only, its own ocpp.* events at info."""
    import io
    import logging

    from pvcharge.logs import configure_logging, reset_logging

    out = io.StringIO()
    try:
        configure_logging("info", "console", stream=out)
        logging.getLogger("ocpp").info('CP1: receive message [2, "1", "MeterValues", {}]')
        logging.getLogger("websockets.server").info("connection open")
        logging.getLogger("ocpp").warning("Received a CALLError")
    finally:
        reset_logging()
    assert "MeterValues" not in out.getvalue() and "connection open" not in out.getvalue()
    assert "CALLError" in out.getvalue()
