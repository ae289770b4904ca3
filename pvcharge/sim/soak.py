"""The soak run: the real daemon, drivers and controller against the emulators for hours of a measured
day, with faults injected at random (seeded) into every device, checking after every cycle that
pvcharge never charges wrongly and always recovers.

    python -m pvcharge.sim.soak [--hours 10] [--seed 1] [--pair huawei+warp ...] [--json]

Three device pairs run side by side, each on its own stepped clock (simulated time advances by the
control interval after each cycle, so a whole day runs in seconds; a device that does not answer
still costs its real timeout):

- Huawei SUN2000 (Modbus TCP) + Tinkerforge WARP (HTTP),
- SENEC.Home (HTTPS lala.cgi) + Easee (cloud HTTP),
- AlphaESS Open API meter + AlphaESS wallbox (cloud HTTP, one emulator).

Every cycle is checked against these invariants (each violation is recorded, never raised):

- ``escaped``: no exception leaves ``Daemon.cycle``;
- ``limit``: no command above ``charger.max_current_a`` or on other phases than configured;
- ``stale``: no charging command while the last meter reading is older than ``max_age_s`` (and,
  for frozen values, no longer than ``frozen_s`` plus one cycle after they froze);
- ``recovery``: after a fault ends, the device answers again within two cycles (a 429's Retry-After
  counts as part of the fault);
- ``growth``: the process's traced memory, open file descriptors and asyncio tasks do not grow
  from the first quarter of the run to its end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import math
import os
import random
import sys
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from pvcharge.config import Config, DeviceConfig, parse_config
from pvcharge.daemon import Cycle, Daemon
from pvcharge.devices import create_devices
from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.easee import EaseeEmulator
from pvcharge.sim.faults import Fault, FaultSwitch
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.sections import alphaess_account, easee_account
from pvcharge.sim.senec import SenecEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import Trace, bundled_trace
from pvcharge.sim.warp import WarpEmulator

PAIRS = ("huawei+warp", "senec+easee", "alphaess+alphaess")
INTERVAL_S = 10.0
MAX_AGE_S = 30.0
FROZEN_S = 120.0
MAX_CURRENT_A = 16.0
RECOVERY_CYCLES = 2
DEVICE_TIMEOUT_S = 0.15
EMULATOR_SECRET = "soak-secret"  # the emulators' credentials: test values, not real ones


class StepClock:
    """Simulated Unix time that moves only when the daemon sleeps (``sleep`` advances it)."""

    def __init__(self, start_s: float) -> None:
        self.t = start_s

    def now(self) -> float:
        return self.t

    async def sleep(self, dt_s: float) -> None:
        self.t += max(0.0, dt_s)
        await asyncio.sleep(0)


@dataclass
class FaultEvent:
    """One injected fault and what pvcharge did about it."""

    device: str
    fault: str
    start_s: float
    end_s: float
    cycles: int = 0  #: cycles the fault lasted
    failed_reads: int = 0  #: reads of that device that failed during the fault
    safe_state: bool = False  #: the car was put in the safe state (meter faults that outlived max_age_s)
    recovered_cycles: int | None = None  #: cycles after the end until the device answered again


@dataclass
class PairReport:
    """What a soak run of one device pair saw."""

    pair: str
    hours: float
    cycles: int = 0
    wall_s: float = 0.0
    faults: list[FaultEvent] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    car_kwh: float = 0.0
    starts: int = 0
    charger_writes: int = 0


@dataclass
class _Device:
    name: str
    switch: FaultSwitch
    role: str  # "meter" or "charger"
    active: FaultEvent | None = None
    until_cycle: int = 0
    ended: list[tuple[FaultEvent, int]] = field(default_factory=list)  # awaiting recovery: (event, end cycle)
    history: list[FaultEvent] = field(default_factory=list)


@contextlib.asynccontextmanager
async def _devices(pair: str, site: SiteModel, clock: StepClock) -> AsyncIterator[tuple[str, list[Any]]]:
    """Start the emulators of ``pair``; yield the config text and the emulators (meter first)."""
    fast = "timeout_s: 1, retries: 1"
    control = (
        f"control: {{interval_s: {INTERVAL_S:g}, max_age_s: {MAX_AGE_S:g}, frozen_s: {FROZEN_S:g}, "
        "cloud_filter: weak, min_on_s: 300, min_off_s: 120}\n"
    )
    limits = f"phases: 1, min_current_a: 6, max_current_a: {MAX_CURRENT_A:g}"
    if pair == "huawei+warp":
        async with HuaweiEmulator(site) as meter, WarpEmulator(site, phases_connected=1) as charger:
            yield (
                f"meter: {{type: huawei, host: 127.0.0.1, port: {meter.port}, connect_delay_s: 0, "
                f"request_gap_s: 0, {fast}}}\n"
                f"charger: {{type: warp, url: '{charger.url}', {fast}, {limits}}}\n" + control,
                [meter, charger],
            )
    elif pair == "senec+easee":
        async with (
            SenecEmulator(site) as meter,
            EaseeEmulator(site, password=EMULATOR_SECRET, clock=clock.now) as charger,
        ):
            yield (
                f"meter: {{type: senec, host: 127.0.0.1, port: {meter.port}, ca_file: '{meter.ca_pem_path}', "
                f"{fast}}}\n"
                f"charger: {{type: easee, {easee_account(charger, password=EMULATOR_SECRET)}, {fast}, "
                f"{limits}}}\n" + control,
                [meter, charger],
            )
    elif pair == "alphaess+alphaess":
        # meter and wallbox poll the same account: 2 GETs per 10 s between them (getLastPowerData, which
        # they share, and the wallbox's status; 3 on the first poll), on the strictest account the
        # client's request budget is made for (5 requests in any 10 s); it charges 1-phase at 16 A (3680 W)
        async with AlphaEssEmulator(
            site,
            app_secret=EMULATOR_SECRET,
            clock=clock.now,
            window_s=10.0,
            requests_per_window=5,
            min_write_interval_s=5.0,
            wallbox_phases=1,
        ) as alpha:
            common = f"{alphaess_account(alpha, app_secret=EMULATOR_SECRET)}, {fast}, backoff_s: 0.05"
            yield (
                f"meter: {{type: alphaess, {common}}}\n"
                f"charger: {{type: alphaess, {common}, phases: 1, min_current_a: 6, "
                f"max_current_a: {MAX_CURRENT_A:g}}}\n" + control,
                [alpha, alpha],
            )
    else:
        raise ValueError(f"unknown pair {pair!r}; expected one of {', '.join(PAIRS)}")


def _quick(config: Config) -> Config:
    """Loopback devices answer in milliseconds: time out after ``DEVICE_TIMEOUT_S`` (below the
    loader's minimum for real devices), so a day of faults runs in a minute."""

    def quick(device: DeviceConfig) -> DeviceConfig:
        changes: dict[str, float] = {"timeout_s": DEVICE_TIMEOUT_S}
        if hasattr(device.settings, "backoff_s"):
            changes["backoff_s"] = DEVICE_TIMEOUT_S / 4
        return dataclasses.replace(device, settings=dataclasses.replace(device.settings, **changes))

    return dataclasses.replace(config, meter=quick(config.meter), charger=quick(config.charger))


#: (traced memory: a tracemalloc snapshot, or None when not tracing; open file descriptors; asyncio tasks)
Resources = tuple[tracemalloc.Snapshot | None, int, int]


def _resources() -> Resources:
    """The process's traced memory, open file descriptors and asyncio tasks now; garbage first
    collected, so that reference cycles (exceptions with their tracebacks, retry states) not yet
    collected do not pass for growth."""
    gc.collect()
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    snapshot = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
    return snapshot, fds, len(asyncio.all_tasks())


def _memory_growth_b(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> int:
    """Bytes more in live blocks ``after`` than ``before``, over the allocation sites that gained more
    than one block.  A site that gained one block resized a table or buffer once, e.g. the
    interpreter's interned-string table (``sys.intern`` in pathlib: 3.7 MB in one block when the test
    suite's strings pushed it over a size step); a leak gains blocks as it goes."""
    return sum(
        stat.size_diff
        for stat in after.compare_to(before, "lineno")
        if stat.count_diff > 1 and stat.size_diff > 0
    )


async def soak_pair(
    pair: str,
    *,
    hours: float,
    seed: int,
    trace: Trace | None = None,
    fault_rate: float = 0.03,
    only: frozenset[Fault] | None = None,
    check_growth: bool = True,
) -> PairReport:
    """Run one device pair for ``hours`` from 08:00 of ``trace`` (default: the bundled day).

    Args:
        fault_rate: chance per cycle that a healthy device starts a fault; each fault lasts 1–15
            cycles (10 s–150 s, so meter faults outlive ``max_age_s`` and frozen values ``frozen_s``).
        only: inject only these faults (default: every fault each emulator can play).
        check_growth: compare memory, file descriptors and tasks at a quarter and at the end (only
            meaningful when nothing else runs in the process).
    """
    trace = trace or bundled_trace()
    rng = random.Random(f"{pair}/{seed}")
    start_s = trace.start_s + 8 * 3600
    clock = StepClock(start_s)
    site = SiteModel(trace, t_s=start_s, clock=clock.now)
    report = PairReport(pair, hours)
    loop = asyncio.get_running_loop()
    wall0 = loop.time()
    async with _devices(pair, site, clock) as (config_text, emulators):
        config = _quick(parse_config(config_text, f"<soak {pair}>"))
        meter, charger = create_devices(config, clock=clock.now)
        daemon = Daemon(config, meter, charger, clock=clock.now, sleep=clock.sleep)
        devices = [_Device(f"meter {config.meter.type}", emulators[0].faults, "meter")]
        if emulators[1] is not emulators[0]:
            devices.append(_Device(f"charger {config.charger.type}", emulators[1].faults, "charger"))
        else:  # one cloud emulator serves both: its faults hit both drivers
            devices[0].name = "cloud alphaess (meter and wallbox)"
        n_cycles = int(hours * 3600 / INTERVAL_S)
        fresh_since = -math.inf  # when the current meter values first appeared
        last_values: tuple[float, ...] | None = None
        quarter: Resources | None = None
        for k in range(n_cycles):
            _inject(devices, k, clock.now(), rng, fault_rate, only)
            try:
                cycle = await daemon.cycle()
            except Exception as exc:  # the invariant: this never happens
                report.violations.append(f"escaped at cycle {k}: {exc!r}")
                await clock.sleep(INTERVAL_S)
                continue
            fresh_since, last_values = _check(report, cycle, k, fresh_since, last_values)
            _account(devices, cycle, k)
            await clock.sleep(INTERVAL_S)
            if k == n_cycles // 4:
                quarter = _resources()
        for device in devices:  # end the last faults and give them their two cycles
            if device.active is not None:
                _end(device, k, clock.now())
        for j in range(RECOVERY_CYCLES + 1):
            cycle = await daemon.cycle()
            _account(devices, cycle, n_cycles + j)
            await clock.sleep(INTERVAL_S)
        end = _resources()
        if quarter is not None and check_growth:
            _check_growth(report, quarter, end)
        for device in devices:
            for event, _ in device.ended:
                report.violations.append(f"no recovery: {event.device} after {event.fault}")
        await daemon._shutdown()
        report.cycles = daemon.stats.cycles
        report.starts = daemon.stats.starts
        report.charger_writes = daemon.stats.charger_writes
    report.car_kwh = site.energy.car_wh / 1000
    report.wall_s = loop.time() - wall0
    report.faults = [e for d in devices for e in d.history]
    return report


def _inject(
    devices: list[_Device], k: int, now: float, rng: random.Random, rate: float, only: frozenset[Fault] | None
) -> None:
    for device in devices:
        if device.active is not None and k >= device.until_cycle:
            _end(device, k, now)
        elif device.active is None and not device.ended and rng.random() < rate:
            fault = rng.choice(sorted(device.switch.supported & (only or device.switch.supported)))
            cycles = rng.randint(1, 15)
            # SLOW answers either just in time or past the driver's timeout
            delay_s = rng.choice([DEVICE_TIMEOUT_S / 3, DEVICE_TIMEOUT_S * 2])
            device.switch.set(fault, delay_s=delay_s, retry_after_s=5.0)
            device.active = FaultEvent(device.name, fault.value, now, now, cycles=cycles)
            device.history.append(device.active)
            device.until_cycle = k + cycles


def _end(device: _Device, k: int, now: float) -> None:
    assert device.active is not None
    device.switch.clear()
    device.active.end_s = now
    extra = 0
    if device.active.fault == Fault.HTTP_429.value:  # the driver rightly waits out Retry-After
        extra = math.ceil(device.switch.retry_after_s / INTERVAL_S)
    device.ended.append((device.active, k + extra))
    device.active = None


def _account(devices: list[_Device], cycle: Cycle, k: int) -> None:
    """Count failed reads during faults and recoveries after them."""
    answered = {"meter": cycle.site is not None and cycle.site.timestamp_s >= cycle.now - INTERVAL_S / 2}
    answered["charger"] = cycle.charger is not None
    for device in devices:
        roles = ("meter", "charger") if device.name.startswith("cloud") else (device.role,)
        ok = all(answered[r] for r in roles)
        if device.active is not None and not ok:
            device.active.failed_reads += 1
        if (
            device.active is not None
            and cycle.decision.command.current_a == 0
            and "safe state" in cycle.decision.reason
        ):
            device.active.safe_state = True
        still = []
        for event, end_k in device.ended:
            if ok and k >= end_k:
                event.recovered_cycles = k - end_k
            else:
                still.append((event, end_k))
        device.ended = still


def _check(
    report: PairReport, cycle: Cycle, k: int, fresh_since: float, last_values: tuple[float, ...] | None
) -> tuple[float, tuple[float, ...] | None]:
    cmd = cycle.decision.command
    if cmd.current_a > MAX_CURRENT_A or cmd.phases not in (1, 3):
        report.violations.append(f"limit at cycle {k}: {cmd}")
    site = cycle.site
    if site is None:
        return fresh_since, last_values
    values = (site.grid_power_w, site.pv_power_w, site.battery_power_w, site.battery_soc_pct or 0.0)
    if values != last_values:
        fresh_since, last_values = site.timestamp_s, values
    age_s = cycle.now - site.timestamp_s
    frozen_s = cycle.now - fresh_since
    if cmd.current_a > 0 and (age_s > MAX_AGE_S or frozen_s > FROZEN_S + INTERVAL_S):
        report.violations.append(
            f"stale at cycle {k}: {cmd.current_a:g} A with data {age_s:.0f} s old, "
            f"values frozen {frozen_s:.0f} s"
        )
    return fresh_since, last_values


def _check_growth(report: PairReport, quarter: Resources, end: Resources) -> None:
    (mem0, fds0, tasks0), (mem1, fds1, tasks1) = quarter, end
    if mem0 is not None and mem1 is not None:
        growth_b = _memory_growth_b(mem0, mem1)
        if growth_b > 2_000_000:
            report.violations.append(f"growth: traced memory +{growth_b / 1e6:.1f} MB")
    if fds1 > fds0 + 4:
        report.violations.append(f"growth: open file descriptors {fds0} -> {fds1}")
    if tasks1 > tasks0 + 4:
        report.violations.append(f"growth: asyncio tasks {tasks0} -> {tasks1}")


async def soak(pairs: Sequence[str], *, hours: float, seed: int) -> list[PairReport]:
    """Run ``pairs`` one after the other (so the growth check sees one pair's resources only), with
    ``tracemalloc`` on."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))  # no log output
    tracemalloc.start()
    try:
        return [await soak_pair(p, hours=hours, seed=seed) for p in pairs]
    finally:
        tracemalloc.stop()
        structlog.reset_defaults()


def table(reports: Sequence[PairReport]) -> str:
    """One markdown row per device and fault: how often, how long, what pvcharge did."""
    rows: dict[tuple[str, str], list[FaultEvent]] = {}
    for r in reports:
        for e in r.faults:
            rows.setdefault((e.device, e.fault), []).append(e)
    lines = [
        "| device | fault | injected | lasted (cycles) | reads failed | safe state "
        "| recovered within (cycles) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (device, fault), events in sorted(rows.items()):
        rec = [e.recovered_cycles for e in events if e.recovered_cycles is not None]
        lasted = f"{min(e.cycles for e in events)}–{max(e.cycles for e in events)}"
        safe = sum(e.safe_state for e in events)
        recovered = (
            f"{max(rec)} (all {len(rec)})" if len(rec) == len(events) else f"{len(events) - len(rec)} never"
        )
        failed = sum(e.failed_reads for e in events)
        lines.append(f"| {device} | {fault} | {len(events)} | {lasted} | {failed} | {safe} | {recovered} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pvcharge.sim.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=10.0, help="simulated hours per pair (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pair", action="append", choices=PAIRS, help="default: all three")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    reports = asyncio.run(soak(args.pair or PAIRS, hours=args.hours, seed=args.seed))
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2))
    else:
        print(table(reports))
        print()
        for r in reports:
            print(
                f"{r.pair}: {r.hours:g} h, {r.cycles} cycles in {r.wall_s:.0f} s, {len(r.faults)} faults, "
                f"car {r.car_kwh:.1f} kWh, {r.starts} starts, {r.charger_writes} writes, "
                f"violations: {len(r.violations)}"
            )
            for v in r.violations[:20]:
                print(f"  {v}")
    return 1 if any(r.violations for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
