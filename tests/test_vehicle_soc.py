"""The car's SoC in the charger reading (``ChargerReading.vehicle_soc_pct``): from an OCPP box's ``SoC``
measurand, only for the car plugged in now."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from sitestub import eventually
from test_ocpp import first_reading, trace  # noqa: F401 (the trace fixture)

from pvcharge.chargers.ocpp import Config as OcppConfig
from pvcharge.chargers.ocpp import OcppCharger
from pvcharge.chargers.ocpp_mapping import reading_from_state
from pvcharge.clients.ocpp import ConnectorState
from pvcharge.readings import ChargerReading, as_dict
from pvcharge.sim.demo import SimClock
from pvcharge.sim.ocpp import OcppChargePointEmulator
from pvcharge.sim.site import CarParams, SiteModel
from pvcharge.sim.trace import Trace


def test_the_reading_refuses_a_soc_outside_0_to_100() -> None:
    ChargerReading(True, False, 0.0, 0.0, 0, 1.0, vehicle_soc_pct=100.0)
    for soc in (-1.0, 100.5, float("nan")):
        with pytest.raises(ValueError, match="vehicle_soc_pct"):
            ChargerReading(True, False, 0.0, 0.0, 0, 1.0, vehicle_soc_pct=soc)
    assert ChargerReading(True, False, 0.0, 0.0, 0, 1.0).vehicle_soc_pct is None


def test_ocpp_soc_only_while_a_car_is_in_a_transaction() -> None:
    def soc(status: str, value: float, transaction_id: int | None = 3) -> float | None:
        state = ConnectorState(status=status, transaction_id=transaction_id, samples={"SoC": value})
        return reading_from_state(state, limit_a=0.0, limit_phases=None, timestamp_s=1.0).vehicle_soc_pct

    assert soc("Charging", 55.0) == 55.0
    assert soc("SuspendedEV", 80.0) == 80.0
    assert soc("Available", 55.0, transaction_id=None) is None  # the last car's
    assert soc("Preparing", 55.0, transaction_id=None) is None  # before the transaction: not sent yet
    assert soc("Charging", 140.0) is None  # a box's nonsense is no SoC (and no failed reading)


@contextlib.asynccontextmanager
async def box_with_a_car(day: Trace, car: CarParams) -> AsyncIterator[tuple[OcppCharger, SimClock]]:
    """The OCPP driver and the emulated box with ``car`` (no home battery), connected, with the first
    SoC sample in; the simulated clock runs 50 times real time."""
    clock = SimClock(day.start_s, speed=50.0)
    site = SiteModel(day, t_s=day.start_s, clock=clock.now, battery=None, car=car)
    driver = OcppCharger(OcppConfig(charge_point_id="CP1", port=0), name="charger ocpp", clock=clock.now)
    url = await driver.listen()
    try:
        async with OcppChargePointEmulator(site, url, sleep=clock.sleep) as emu:
            await eventually(emu.connected.is_set, "the emulator to connect")
            await first_reading(driver)
            await eventually(lambda: driver.central.state.samples.get("SoC") is not None, "a SoC sample")
            yield driver, clock
    finally:
        await driver.close()


async def test_the_emulated_box_sends_the_cars_soc_until_it_leaves(trace: Trace) -> None:  # noqa: F811
    leaves_s = trace.local_seconds_of_day(trace.start_s) + 300
    async with box_with_a_car(trace, CarParams(plug_in_s=0, plug_out_s=leaves_s, soc_start_pct=42.0)) as (
        driver,
        _,
    ):
        reading = await driver.read()
        assert reading.vehicle_soc_pct is not None and 42 <= reading.vehicle_soc_pct <= 43
        assert as_dict(reading)["vehicle_soc_pct"] == reading.vehicle_soc_pct
        await eventually(lambda: driver.central.state.status == "Available", "the car to leave")
        assert "SoC" not in driver.central.state.samples
        assert (await driver.read()).vehicle_soc_pct is None
