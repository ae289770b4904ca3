"""Soak: the real daemon, drivers and emulators for hours of a measured day with random (seeded)
faults in every device, checked after every cycle (``pvcharge.sim.soak``): nothing escapes the loop,
no command above limits, no charging on stale or frozen meter data, recovery within two cycles, no
growth.  The fault table in docs/reliability.md comes from ``python -m pvcharge.sim.soak`` (10 h per pair)."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest
import structlog

from pvcharge.sim.faults import Fault
from pvcharge.sim.soak import PAIRS, RECOVERY_CYCLES, soak_pair, table


@pytest.fixture(autouse=True)
def quiet() -> object:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    yield None
    structlog.reset_defaults()


@pytest.mark.timeout(240)
async def test_soak_every_pair_with_every_fault() -> None:
    """All three pairs at once (their devices' timeouts overlap in real time), 1.5 h each."""
    reports = await asyncio.gather(
        *(soak_pair(p, hours=1.5, seed=7, fault_rate=0.04, check_growth=False) for p in PAIRS)
    )
    print("\n" + table(reports))
    for r in reports:
        assert r.violations == [], (r.pair, r.violations[:5])
        assert r.cycles >= 1.5 * 360
        assert len(r.faults) >= 10, r.pair  # faults really were injected all day
        assert all(e.recovered_cycles is not None and e.recovered_cycles <= RECOVERY_CYCLES for e in r.faults)
        assert r.car_kwh > 1.0 and r.starts >= 1  # and it still charged between them
    played = {(e.device.split()[1], e.fault) for r in reports for e in r.faults}
    # every emulator played a good part of its repertoire (a seeded draw: fixed for this seed)
    for device in ("huawei", "warp", "senec", "easee", "alphaess"):
        assert len({f for d, f in played if d == device}) >= 5, (device, played)
    # meter faults that outlived max_age_s put the car in the safe state
    long_meter_faults = [
        e
        for r in reports
        for e in r.faults
        if e.device.startswith("meter") and e.cycles >= 5 and e.fault not in ("stale", "kick", "slow")
    ]
    assert long_meter_faults and all(e.safe_state for e in long_meter_faults)


@pytest.mark.timeout(120)
async def test_soak_memory_descriptors_and_tasks_do_not_grow() -> None:
    """Three hours of the Modbus meter and the HTTP charger with the faults that cost no real time
    (errors, garbage, frozen values, a second client): traced memory, open descriptors and asyncio
    tasks at a quarter of the run and at its end."""
    cheap = frozenset(
        {
            Fault.BUSY,
            Fault.DEVICE_FAILURE,
            Fault.GARBAGE,
            Fault.STALE,
            Fault.KICK,
            Fault.NOT_JSON,
            Fault.HTTP_429,
        }
    )
    tracemalloc.start()
    try:
        report = await soak_pair("huawei+warp", hours=3, seed=3, fault_rate=0.05, only=cheap)
    finally:
        tracemalloc.stop()
    assert report.violations == []
    assert len(report.faults) >= 20


def test_memory_growth_counts_a_leak_not_one_resized_table() -> None:
    from pvcharge.sim.soak import _memory_growth_b

    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        table = bytes(3_000_000)  # one block, as when the interned-string table grows a size step
        leak = [bytes(1000) + bytes([i % 256]) for i in range(3000)]  # 3 MB in 3000 blocks
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth_b = _memory_growth_b(before, after)
    assert 2_900_000 < growth_b < 3_500_000, growth_b  # the leak, not the table
    assert len(table) + len(leak) > 0
