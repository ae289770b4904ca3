"""A car's wake-up never holds up the control loop (pvcharge.resume.CarWaker as a background task): two
loadpoints on a fake clock, carport's charger a driver stub whose ``wake_up`` runs until the test
releases it; every wait is on an event, the cycles are counted."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from sitestub import eventually
from structlog.testing import capture_logs
from test_daemon import Charger, Clock, Meter, run
from test_daemon_loadpoints import TWO, offered

from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.readings import ChargerCommand, SiteReading


class LiveMeter(Meter):
    """The fake meter with a grid power that moves by 1 W each read, so it never looks frozen."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.reads = 0

    async def read(self) -> SiteReading:
        reading = await super().read()
        self.reads += 1
        return dataclasses.replace(reading, grid_power_w=reading.grid_power_w - self.reads % 2)


class BlockingWaker(Charger):
    """A charger whose car never starts; its ``wake_up`` runs until ``release`` is set (as a WARP's
    control-pilot disconnect holds it, or a dead box's timeout); ``order`` notes writes and wake-ups."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.waking = asyncio.Event()  #: set once the wake-up runs
        self.release = asyncio.Event()  #: set by the test to end it
        self.order: list[str] = []

    async def apply(self, command: ChargerCommand) -> None:
        self.order.append(f"apply {command.current_a:g}")
        await super().apply(command)

    async def wake_up(self) -> None:
        self.order.append("wake-up")
        self.waking.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.order.append("wake-up cancelled")
            raise
        finally:
            self.order.append("wake-up over")  # where a WARP connects the control pilot again


def fake_sleep(clock: Clock) -> Callable[[float], Awaitable[None]]:
    """The daemon's sleep on ``clock``: no wall time passes."""

    async def sleep(delay_s: float) -> None:
        clock.t += delay_s
        await asyncio.sleep(0)

    return sleep


async def cycles(daemon: Daemon, clock: Clock, n: int, what: str) -> None:
    """Run ``n`` cycles; fails (rather than hangs) if a cycle waits for the wake-up."""
    task = asyncio.ensure_future(run(daemon, clock, n))
    try:
        await eventually(task.done, what)
        task.result()
    finally:
        task.cancel()


async def waking_carport(
    clock: Clock, kind: type[BlockingWaker] = BlockingWaker
) -> tuple[Daemon, BlockingWaker, Charger]:
    """carport (16 A) and garage (9 A) under the 25 A fuse, neither car starts; after 13 cycles
    (60 s) carport's wake-up runs (garage's charger has none)."""
    meter, carport, garage = LiveMeter(clock), kind(clock), Charger(clock)
    carport.name, garage.name = "charger carport", "charger garage"  # type: ignore[misc]
    daemon = Daemon(parse_config(TWO, environ={}), meter, [carport, garage], clock=clock)  # type: ignore[list-item]
    await cycles(daemon, clock, 13, "13 cycles up to carport's wake-up")
    assert carport.waking.is_set() and carport.order[:2] == ["apply 16", "wake-up"]
    assert (offered(carport), offered(garage)) == (16.0, 9.0)
    return daemon, carport, garage


async def test_cycles_go_on_and_the_other_loadpoints_decrease_is_written_during_a_wake_up() -> None:
    clock = Clock()
    daemon, carport, garage = await waking_carport(clock)
    before = daemon.stats.cycles
    daemon.set_mode("off", source="test", loadpoint="garage")
    daemon.reload(parse_config(TWO, environ={}))  # a reload meanwhile is taken as ever
    with capture_logs() as logs:
        await cycles(daemon, clock, 3, "3 cycles while carport's wake-up runs")
    assert daemon.stats.cycles == before + 3
    assert [e["event"] for e in logs].count("config_reloaded") == 1
    assert offered(garage) == 0.0  # garage's decrease went out
    assert carport.order == ["apply 16", "wake-up"]  # carport's wake-up still runs
    assert daemon.loadpoint("carport").waker.running


async def test_the_waking_charger_is_not_written_until_its_wake_up_ends_and_the_others_increase_waits() -> (
    None
):
    """carport is switched off during its wake-up: the pause is not sent into the wake-up, so it is owed,
    and garage may not rise to 16 A (16 + 16 A over the fuse while carport may still draw); both go out
    in the cycle after the wake-up ends, the pause first."""
    clock = Clock()
    daemon, carport, garage = await waking_carport(clock)
    daemon.set_mode("off", source="test", loadpoint="carport")
    with capture_logs() as logs:
        await cycles(daemon, clock, 2, "2 cycles while carport's wake-up runs")
    assert carport.order == ["apply 16", "wake-up"]  # no write while it runs
    assert offered(garage) == 9.0 and len(garage.applied) == 1
    assert daemon.stats.held_increases == 2
    assert [e["because"] for e in logs if e["event"] == "increases_held"] == [["carport"]]
    carport.release.set()
    await eventually(lambda: not daemon.loadpoint("carport").waker.running, "the wake-up's end")
    await cycles(daemon, clock, 1, "the cycle after the wake-up")
    assert carport.order[2:] == ["wake-up over", "apply 0"]
    assert (offered(carport), offered(garage)) == (0.0, 16.0)


async def test_the_command_is_sent_again_after_a_wake_up() -> None:
    clock = Clock()
    daemon, carport, _ = await waking_carport(clock)
    with capture_logs() as logs:
        carport.release.set()
        await eventually(lambda: not daemon.loadpoint("carport").waker.running, "the wake-up's end")
        assert carport.forgotten == 1  # the driver forgot what it believes the charger holds
        await cycles(daemon, clock, 1, "the cycle after the wake-up")
    assert carport.order == ["apply 16", "wake-up", "wake-up over", "apply 16"]
    assert [(e["attempt"], e["of"]) for e in logs if e["event"] == "car_wake_up"] == [(1, 2)]
    assert daemon.status()["wake_up"]["attempts"] == 1


async def test_the_next_wake_up_waits_wake_up_after_s_from_the_end_of_the_last() -> None:
    """A wake-up that ran 25 s (started at 1060 s, released at 1085 s): the next is due 60 s after its
    end (1145 s), not after its start."""
    clock = Clock()
    daemon, carport, _ = await waking_carport(clock)
    await cycles(daemon, clock, 4, "4 cycles while carport's wake-up runs")
    carport.release.set()
    await eventually(lambda: not daemon.loadpoint("carport").waker.running, "the wake-up's end")
    assert daemon.status()["wake_up"]["last_at_s"] == clock() == 1085.0
    await cycles(daemon, clock, 12, "the cycles up to 1140 s")
    assert carport.order.count("wake-up") == 1
    await cycles(daemon, clock, 1, "the cycle at 1145 s")
    assert carport.order.count("wake-up") == 2


async def stopped_while_waking(
    clock: Clock, kind: type[BlockingWaker] = BlockingWaker
) -> tuple[BlockingWaker, Charger, list[dict[str, Any]]]:
    """carport (``kind``) and garage run by the daemon on ``clock`` (its sleep too: no wall time passes),
    stopped once carport's wake-up runs; the two chargers and the log of the way out."""
    meter, carport, garage = Meter(clock), kind(clock), Charger(clock)
    carport.name, garage.name = "charger carport", "charger garage"  # type: ignore[misc]
    config = parse_config(TWO, environ={})
    daemon = Daemon(config, meter, [carport, garage], clock=clock, sleep=fake_sleep(clock))  # type: ignore[list-item]
    stop = asyncio.Event()
    running = asyncio.ensure_future(daemon.run(stop))
    try:
        await eventually(carport.waking.is_set, "carport's wake-up")
        stop.set()
        with capture_logs() as logs:
            await eventually(running.done, "the daemon's exit")
        running.result()
    finally:
        running.cancel()
    return carport, garage, logs


async def test_shutdown_during_a_wake_up_ends_it_then_pauses_and_leaves_no_task() -> None:
    carport, garage, logs = await stopped_while_waking(Clock())
    # the wake-up was cancelled and ran its finally before the pause went out
    assert carport.order == ["apply 16", "wake-up", "wake-up cancelled", "wake-up over", "apply 0"]
    assert (offered(carport), offered(garage)) == (0.0, 0.0)
    assert [e["attempt"] for e in logs if e["event"] == "car_wake_up_cancelled"] == [1]
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


class SlowToStop(BlockingWaker):
    """A waker whose cancelled wake-up takes 59.95 s of the fake clock to end (the WARP's control pilot
    coming back slowly), and whose charger then never answers the pause."""

    async def wake_up(self) -> None:
        try:
            await super().wake_up()
        except asyncio.CancelledError:
            self.clock.t += 59.95
            raise

    async def apply(self, command: ChargerCommand) -> None:
        if command.current_a == 0:
            self.order.append("apply 0 (no answer)")
            await asyncio.Event().wait()
        await super().apply(command)


async def test_a_pause_timing_out_after_a_wake_up_names_the_time_it_had_left() -> None:
    carport, _, logs = await stopped_while_waking(Clock(), SlowToStop)
    assert carport.order[-2:] == ["wake-up over", "apply 0 (no answer)"]
    [failed] = [e for e in logs if e["event"] == "stopped" and e["device"] == "charger carport"]
    assert failed["charger_left"] == "unknown: pause failed"
    assert failed["error"] == "no answer within the 0.05 s left of the 60 s the pause may take"


class Boom(BaseException):
    """Not an Exception: gets past the driver guard in CarWaker, so only the task's done-callback sees it."""


class BoomWaker(BlockingWaker):
    async def wake_up(self) -> None:
        self.order.append("wake-up")
        self.waking.set()
        raise Boom("driver")


async def test_a_wake_up_that_raises_past_the_driver_guard_is_logged_and_the_loop_goes_on() -> None:
    clock = Clock()
    with capture_logs() as logs:
        daemon, carport, _ = await waking_carport(clock, BoomWaker)
        await eventually(lambda: not daemon.loadpoint("carport").waker.running, "the wake-up's end")
        await cycles(daemon, clock, 1, "the cycle after the wake-up")
    [error] = [e for e in logs if e["event"] == "driver_error"]
    assert error["what"] == "wake_up" and error["error"] == "Boom('driver')"
    assert carport.forgotten == 1 and carport.order == ["apply 16", "wake-up", "apply 16"]  # sent again
    status = daemon.status()["loadpoints"][0]["wake_up"]
    assert (status["attempts"], status["failures"], status["last_error"]) == (1, 1, "Boom('driver')")
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
