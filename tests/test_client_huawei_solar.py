"""huawei-solar 2.5.0, unchanged, against the Huawei emulator on 127.0.0.1: the emulator stays faithful
to what the community's client reads.

``create_tcp_bridge`` reads 30000, 30015×50, 30071, 37200, 47000, 47089, 47954 (with a battery), 37100,
37125, 42900 and 43006 (huawei-solar ``bridge.py``; reference meters.md §1.5) on the unit id it is
given, 0 by default (the inverter's access point, some SDongles) or 1 (an SDongle, as the demo
configures pvcharge).  ``batch_update`` then merges registers into reads of at most 64 registers
across gaps shorter than 16, as pvcharge's own driver does for 37760×7.  Values must equal the
simulated site's, in huawei-solar's units and vendor signs.

huawei-solar keeps the "connected" ``asyncio.Event`` of its Modbus client in a class attribute
(``modbus.py`` ``ModbusConnectionMixin.connected_event``), which binds to the first event loop that
waits on it; each test gets a fresh one for its own loop.  Every connection waits 1.5 s
(``WAIT_ON_CONNECT``) before its first request, as the library does for a real inverter.
"""

from __future__ import annotations

import asyncio

import pytest
from huawei_solar import create_tcp_bridge
from huawei_solar import register_names as rn
from huawei_solar.bridge import HuaweiSUN2000Bridge
from huawei_solar.exceptions import ReadException
from huawei_solar.modbus import ModbusConnectionMixin
from huawei_solar.register_values import MeterType, StorageProductModel, StorageStatus

from pvcharge.sim import huawei as sim
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace

#: the registers pvcharge's driver reads, and the battery unit 1 block other tools read instead
POWER_REGISTERS = [
    rn.INPUT_POWER,
    rn.ACTIVE_GRID_A_CURRENT,
    rn.ACTIVE_GRID_B_CURRENT,
    rn.ACTIVE_GRID_C_CURRENT,
    rn.POWER_METER_ACTIVE_POWER,
    rn.STORAGE_STATE_OF_CAPACITY,
    rn.STORAGE_RUNNING_STATUS,
    rn.STORAGE_CHARGE_DISCHARGE_POWER,
    rn.STORAGE_UNIT_1_RUNNING_STATUS,
    rn.STORAGE_UNIT_1_CHARGE_DISCHARGE_POWER,
    rn.STORAGE_UNIT_1_STATE_OF_CAPACITY,
]


@pytest.fixture(autouse=True)
def fresh_connected_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ModbusConnectionMixin, "connected_event", asyncio.Event())


@pytest.fixture
def model() -> SiteModel:
    """The reference site two hours into daylight: PV 3.6 kW charging the battery with 3.4 kW."""
    site = SiteModel(bundled_trace())
    site.advance_to(site.trace.daylight()[0] + 2 * 3600)
    return site


@pytest.mark.parametrize("unit_id", [0, 1])
async def test_create_tcp_bridge_and_batch_update_read_the_site(model: SiteModel, unit_id: int) -> None:
    async with HuaweiEmulator(model) as emulator:
        bridge = await create_tcp_bridge("127.0.0.1", emulator.port, unit_id)
        try:
            assert isinstance(bridge, HuaweiSUN2000Bridge)
            values = await bridge.batch_update(POWER_REGISTERS)
        finally:
            await bridge.stop()
    assert (bridge.model_name, bridge.serial_number, bridge.product_number) == (
        sim.MODEL,
        sim.SERIAL,
        sim.PART_NUMBER,
    )
    assert (bridge.firmware_version, bridge.software_version) == (sim.FIRMWARE, sim.SOFTWARE)
    assert bridge.pv_string_count == 2
    assert bridge.battery_type is StorageProductModel.HUAWEI_LUNA2000
    assert bridge.power_meter_online
    assert bridge.power_meter_type is MeterType.THREE_PHASE

    state = model.state()
    value = {name: result.value for name, result in values.items()}
    assert value[rn.INPUT_POWER] == round(state.pv_power_w)
    assert value[rn.POWER_METER_ACTIVE_POWER] == round(-state.grid_power_w)  # vendor: + = export
    phase_a = -state.grid_power_w / 3 / sim.PHASE_VOLTAGE_V
    for name in (rn.ACTIVE_GRID_A_CURRENT, rn.ACTIVE_GRID_B_CURRENT, rn.ACTIVE_GRID_C_CURRENT):
        assert value[name] == pytest.approx(phase_a, abs=0.005)
    assert state.battery_power_w < -100  # charging
    for power, soc, status in (
        (rn.STORAGE_CHARGE_DISCHARGE_POWER, rn.STORAGE_STATE_OF_CAPACITY, rn.STORAGE_RUNNING_STATUS),
        (
            rn.STORAGE_UNIT_1_CHARGE_DISCHARGE_POWER,
            rn.STORAGE_UNIT_1_STATE_OF_CAPACITY,
            rn.STORAGE_UNIT_1_RUNNING_STATUS,
        ),
    ):
        assert value[power] == round(-state.battery_power_w)  # vendor: + = charging
        assert value[soc] == pytest.approx(state.battery_soc_pct, abs=0.05)
        assert value[status] is StorageStatus.RUNNING
    assert emulator.reads == {  # bridge creation (47954 answers 0x02), then batch_update
        **dict.fromkeys([(30000, 15), (30015, 50), (30071, 1), (37200, 1), (47000, 1), (47089, 1)], 1),
        **dict.fromkeys([(47954, 1), (37100, 1), (37125, 1), (42900, 1), (43006, 1)], 1),
        **dict.fromkeys([(32064, 2), (37000, 5), (37107, 8), (37760, 7)], 1),  # 37760×7 spans 37761
    }


async def test_firmware_refusing_gap_spanning_reads_fails_huawei_solar_too(model: SiteModel) -> None:
    """The emulator's ``refuse_gaps`` is what trips the community's client as well: its merged read
    ``37760×7`` (SoC and battery power) answers 0x02; the registers alone answer."""
    async with HuaweiEmulator(model, refuse_gaps=True) as emulator:
        bridge = await create_tcp_bridge("127.0.0.1", emulator.port, 1)
        try:
            with pytest.raises(ReadException, match="register 37760 with length 7"):
                await bridge.batch_update([rn.STORAGE_STATE_OF_CAPACITY, rn.STORAGE_CHARGE_DISCHARGE_POWER])
            soc = await bridge.client.get(rn.STORAGE_STATE_OF_CAPACITY, 1)
            power = await bridge.client.get(rn.STORAGE_CHARGE_DISCHARGE_POWER, 1)
        finally:
            await bridge.stop()
    state = model.state()
    assert soc.value == pytest.approx(state.battery_soc_pct, abs=0.05)
    assert power.value == round(-state.battery_power_w)


async def test_a_site_without_battery_reports_none(model: SiteModel) -> None:
    async with HuaweiEmulator(model, battery=False) as emulator:
        bridge = await create_tcp_bridge("127.0.0.1", emulator.port)
        await bridge.stop()
    assert isinstance(bridge, HuaweiSUN2000Bridge)
    assert bridge.battery_type is StorageProductModel.NONE
