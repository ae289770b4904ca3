"""The daemon loop with small in-process drivers: deferred writes, blocked writes, failing devices."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.errors import DeviceUnavailable, WriteDeferred, WritesBlocked
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading, SiteReading

CONFIG = parse_config(
    "meter: {type: huawei, host: 127.0.0.1}\n"
    "charger: {type: warp, url: 'http://127.0.0.1', phases: 1}\n"
    "control: {cloud_filter: 'off', interval_s: 5, max_age_s: 30}\n"
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Meter:
    name = "meter fake"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.fail: BaseException | None = None

    async def read(self) -> SiteReading:
        if self.fail is not None:
            raise self.fail
        return SiteReading(-3000.0, 3500.0, 0.0, 50.0, self.clock())

    async def close(self) -> None:
        pass


class Charger:
    name = "charger fake"
    capabilities = ChargerCapabilities()

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.errors: list[BaseException] = []
        self.applied: list[ChargerCommand] = []
        self.calls = 0

    async def read(self) -> ChargerReading:
        return ChargerReading(True, False, 0.0, 0.0, 0, self.clock())

    async def apply(self, command: ChargerCommand) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.applied.append(command)

    async def close(self) -> None:
        pass


async def run(daemon: Daemon, clock: Clock, cycles: int) -> list[Any]:
    out = []
    for _ in range(cycles):
        out.append(await daemon.cycle())
        clock.t += 5
    return out


def make() -> tuple[Daemon, Meter, Charger, Clock]:
    clock = Clock()
    meter, charger = Meter(clock), Charger(clock)
    return Daemon(CONFIG, meter, charger, clock=clock), meter, charger, clock


async def test_a_deferred_write_is_offered_again_next_cycle_without_a_warning() -> None:
    daemon, _, charger, clock = make()
    charger.errors = [WriteDeferred(charger.name, "rate limit", retry_after_s=5)] * 2
    with capture_logs() as logs:
        await run(daemon, clock, 4)
    assert daemon.stats.deferred_writes == 2
    assert [c.current_a for c in charger.applied] == [12.0]  # (3000 W export - 100 W deadzone) / 230 V
    assert daemon.stats.write_failures == 0
    assert not [e for e in logs if e["log_level"] in ("warning", "error")]


async def test_blocked_writes_stop_all_writes_and_say_so_once() -> None:
    daemon, _, charger, clock = make()
    charger.errors = [WritesBlocked(charger.name, "HTTP 403: IP blocked")]
    with capture_logs() as logs:
        cycles = await run(daemon, clock, 5)
    assert charger.calls == 1  # never tried again
    errors = [e for e in logs if e["event"] == "charger_writes_blocked"]
    assert len(errors) == 1 and "IP blocked" in errors[0]["error"]
    assert all(e.get("writes_blocked") for e in logs if e["event"] == "decision")
    assert all(c.written is False for c in cycles)
    await daemon._shutdown()
    assert charger.calls == 1  # not even the pause on the way out


async def test_a_dead_meter_pauses_the_car_after_max_age() -> None:
    daemon, meter, charger, clock = make()
    await run(daemon, clock, 2)
    assert charger.applied[-1].current_a > 0
    meter.fail = DeviceUnavailable(meter.name, "connection refused")
    with capture_logs() as logs:
        cycles = await run(daemon, clock, 8)
    assert charger.applied[-1].current_a == 0
    paused_at = next(c.now for c in cycles if c.decision.command.current_a == 0)
    assert paused_at - 1005 > 30  # the last good reading was taken at t = 1005
    assert "stale" in next(c.decision.reason for c in cycles if c.decision.command.current_a == 0)
    assert sum(1 for e in logs if e["event"] == "device_unavailable") == 1  # logged once per outage


@pytest.mark.parametrize("bug", [ZeroDivisionError("driver bug"), KeyError("x")])
async def test_a_driver_bug_never_ends_the_loop(bug: Exception) -> None:
    daemon, meter, _, clock = make()
    meter.fail = bug
    with capture_logs() as logs:
        await run(daemon, clock, 3)
    assert daemon.stats.cycles == 3
    assert any(e["event"] == "driver_error" for e in logs)


async def test_the_command_is_sent_again_when_the_charger_comes_back() -> None:
    daemon, _, charger, clock = make()
    await run(daemon, clock, 2)
    assert len(charger.applied) == 1  # written once, then unchanged

    async def unreachable() -> ChargerReading:
        raise DeviceUnavailable(charger.name, "no route to host")

    working = charger.read
    charger.read = unreachable  # type: ignore[method-assign]
    await run(daemon, clock, 2)
    charger.read = working  # type: ignore[method-assign]
    await run(daemon, clock, 2)
    assert len(charger.applied) == 2  # re-asserted once after the outage, not every cycle
    assert charger.applied[1] == charger.applied[0]
