"""The Huawei driver against the Huawei emulator over a real Modbus TCP socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sitestub import FixedSite, free_port, meter_state
from structlog.testing import capture_logs

from pvcharge.errors import DeviceProtocolError, DeviceUnavailable
from pvcharge.meters.huawei import Config, HuaweiMeter, create
from pvcharge.sim.faults import Fault
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace

# The reference's worked example (meters.md §1.3): importing 2500 W, battery charging 1200 W.
EXAMPLE = meter_state(pv_w=5230.0, grid_w=2500.0, battery_w=-1200.0, soc_pct=55.5)


def meter(port: int, **overrides: Any) -> HuaweiMeter:
    """A driver with short delays so that the tests run fast."""
    config = Config(
        host="127.0.0.1", port=port, connect_delay_s=0.01, timeout_s=0.3, request_gap_s=0.001, backoff_s=0.01
    )
    return create(dataclasses.replace(config, **overrides), name="meter huawei", clock=lambda: 42.0)


@pytest.fixture
def site() -> FixedSite:
    return FixedSite(EXAMPLE)


@pytest.fixture
async def emulator(site: FixedSite) -> AsyncIterator[HuaweiEmulator]:
    async with HuaweiEmulator(site) as emu:
        yield emu


async def test_reading_has_canonical_signs(emulator: HuaweiEmulator, site: FixedSite) -> None:
    m = meter(emulator.port)
    site.calls = 0
    reading = await m.read()
    await m.close()
    assert reading.grid_power_w == 2500.0
    assert reading.battery_power_w == -1200.0
    assert reading.pv_power_w == 5230.0
    assert reading.battery_soc_pct == 55.5
    assert reading.grid_currents_a == (3.62, 3.62, 3.62)  # 2500 W / 3 / 230 V, import
    assert reading.timestamp_s == 42.0
    assert site.calls == 3  # one request per block


async def test_reading_follows_the_simulated_site() -> None:
    model = SiteModel(bundled_trace())
    model.advance_to(model.trace.daylight()[0] + 4 * 3600)  # around noon: PV, battery and grid all busy
    async with HuaweiEmulator(model) as emu:
        m = meter(emu.port)
        for _ in range(3):
            state = model.state()
            reading = await m.read()
            assert reading.grid_power_w == pytest.approx(state.grid_power_w, abs=0.5)
            assert reading.battery_power_w == pytest.approx(state.battery_power_w, abs=0.5)
            assert reading.pv_power_w == pytest.approx(state.pv_power_w, abs=0.5)
            assert reading.battery_soc_pct == pytest.approx(state.battery_soc_pct, abs=0.05)
            assert reading.grid_currents_a is not None
            assert sum(reading.grid_currents_a) * 230.0 == pytest.approx(state.grid_power_w, abs=5.0)
            model.advance(60.0)
        await m.close()


async def test_busy_is_retried(emulator: HuaweiEmulator) -> None:
    m = meter(emulator.port, retries=2)
    emulator.busy_next = 2
    assert (await m.read()).grid_power_w == 2500.0
    emulator.busy_next = 3
    with pytest.raises(DeviceUnavailable, match=r"after 3 attempt\(s\).*0x06 \(device busy\)"):
        await m.read()
    await m.close()


async def test_dead_port_is_unavailable_within_bounded_time() -> None:
    port = free_port()
    m = meter(port, retries=1)
    start = time.monotonic()
    with pytest.raises(DeviceUnavailable) as err:
        await m.read()
    assert time.monotonic() - start < 2.0
    assert err.value.device == "meter huawei"
    assert f"127.0.0.1:{port} unit 1" in str(err.value)
    assert "cannot connect" in str(err.value)
    await m.close()
    await m.close()


async def test_reconnects_after_emulator_restart(emulator: HuaweiEmulator) -> None:
    m = meter(emulator.port)
    await m.read()
    await emulator.stop()
    start = time.monotonic()
    with pytest.raises(DeviceUnavailable, match="meter huawei"):
        await m.read()
    assert time.monotonic() - start < 2.0
    await emulator.start()  # same port
    assert (await m.read()).pv_power_w == 5230.0
    await m.close()


async def test_slow_reply_times_out_then_recovers(emulator: HuaweiEmulator) -> None:
    m = meter(emulator.port, retries=1)
    emulator.reply_delay_s = 0.5  # > timeout_s 0.3
    with pytest.raises(DeviceUnavailable, match=r"no answer within 0\.3 s"):
        await m.read()
    emulator.reply_delay_s = 0.0
    assert (await m.read()).grid_power_w == 2500.0  # late replies do not confuse the new connection
    await m.close()


async def test_cancelled_read_does_not_confuse_the_next(emulator: HuaweiEmulator, site: FixedSite) -> None:
    m = meter(emulator.port, request_gap_s=0.05)  # the late reply comes during the next read
    emulator.reply_delay_s = 0.1
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(m.read(), timeout=0.05)  # as the daemon's per-read timeout would
    emulator.reply_delay_s = 0.0
    site.current = dataclasses.replace(EXAMPLE, pv_power_w=1000.0)  # the late reply still says 5230
    assert (await m.read()).pv_power_w == 1000.0
    await m.close()


async def test_site_without_battery(site: FixedSite) -> None:
    async with HuaweiEmulator(site, battery=False) as emu:
        m = meter(emu.port, battery=False)
        site.calls = 0
        reading = await m.read()
        assert (reading.battery_power_w, reading.battery_soc_pct) == (0.0, None)
        assert reading.grid_power_w == 2500.0
        assert site.calls == 2
        await m.close()

        m = meter(emu.port, battery=True)
        site.calls = 0
        with pytest.raises(DeviceProtocolError) as err:
            await m.read()
        # the battery block answered 0x02, then 37760 alone too; neither is retried
        assert site.calls == 4
        assert emu.reads[37760, 7] == emu.reads[37760, 1] == 1
        assert "register 37760 absent: exception 0x02 (illegal address) reading 37760×1" in str(err.value)
        assert "for a site without a battery set battery: false, but not if a battery is connected" in str(
            err.value
        )
        await m.close()


async def test_out_of_range_soc_is_a_protocol_error(emulator: HuaweiEmulator, site: FixedSite) -> None:
    site.current = dataclasses.replace(EXAMPLE, battery_soc_pct=150.0)
    m = meter(emulator.port)
    with pytest.raises(
        DeviceProtocolError,
        match=r"meter huawei: 127\.0\.0\.1:\d+ unit 1: battery SoC out of range: register 37760",
    ):
        await m.read()
    await m.close()


async def test_stale_freeze(emulator: HuaweiEmulator, site: FixedSite) -> None:
    m = meter(emulator.port)
    await m.read()
    emulator.faults.set(Fault.STALE)
    site.current = dataclasses.replace(EXAMPLE, grid_power_w=-800.0)
    assert (await m.read()).grid_power_w == 2500.0
    emulator.faults.clear()
    assert (await m.read()).grid_power_w == -800.0
    await m.close()


async def test_wrong_unit_id_is_named(emulator: HuaweiEmulator) -> None:
    m = meter(emulator.port, unit_id=3)
    with pytest.raises(
        DeviceProtocolError, match=r"unit 3: .*0x0B \(gateway target did not respond; check unit_id\)"
    ):
        await m.read()
    await m.close()


def test_emulator_refuses_non_loopback_host(site: FixedSite) -> None:
    with pytest.raises(ValueError, match="loopback"):
        HuaweiEmulator(site, host="0.0.0.0")


async def test_emulator_serves_the_reference_worked_encodings(emulator: HuaweiEmulator) -> None:
    """Raw registers over the socket, read with a plain pymodbus client, equal the reference's worked
    examples (meters.md §1.3) for the same physical state."""
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=emulator.port, timeout=1)
    assert await client.connect()
    try:
        raw = {}
        for address, count in ((37113, 2), (37765, 2), (32064, 2), (37760, 1)):
            result = await client.read_holding_registers(address, count=count, device_id=1)
            assert not result.isError(), result
            raw[address] = list(result.registers)
    finally:
        client.close()
    assert raw == {37113: [0xFFFF, 0xF63C], 37765: [0x0000, 0x04B0], 32064: [0x0000, 0x146E], 37760: [0x022B]}


async def test_firmware_refusing_gap_spanning_reads_reads_field_by_field_once(site: FixedSite) -> None:
    """Some firmware answers 0x02 to ``37760×7`` because it spans the undocumented 37761 (issue 12):
    the driver reads the registers it needs one by one instead, decides that once, keeps it for
    later reads, says so once, and never suggests ``battery: false`` (battery 0 W: house load wrong)."""
    async with HuaweiEmulator(site, refuse_gaps=True) as emu:
        m = meter(emu.port)
        with capture_logs() as events:
            for _ in range(3):
                reading = await m.read()
                assert (reading.battery_power_w, reading.battery_soc_pct) == (-1200.0, 55.5)
                assert (reading.grid_power_w, reading.pv_power_w) == (2500.0, 5230.0)
        await m.close()
    assert emu.reads[37760, 7] == 1  # refused once, not tried again on later reads
    assert (emu.reads[37760, 1], emu.reads[37765, 2]) == (3, 3)
    assert (emu.reads[32064, 2], emu.reads[37107, 8]) == (3, 3)  # blocks without gaps stay blocks
    assert sum(emu.reads.values()) == 1 + 3 * 4
    notes = [e for e in events if e["log_level"] in ("info", "warning", "error")]
    assert [e["event"] for e in notes] == ["huawei.block_refused"]
    assert notes[0]["log_level"] == "warning"
    assert notes[0]["block"] == "37760×7" and notes[0]["now_reading"] == "37760×1, 37765×2"
    assert "battery: false" not in repr(events)
