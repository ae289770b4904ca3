"""A car's wake-up never holds up the control loop (pvcharge.resume.CarWaker as a background task): two
loadpoints on a fake clock, carport's charger a driver stub whose ``wake_up`` runs until the test
releases it; every wait is on an event, the cycles are counted."""

from __future__ import annotations

import asyncio

from sitestub import eventually
from structlog.testing import capture_logs
from test_daemon import Charger, Clock, Meter, run
from test_daemon_loadpoints import TWO, offered

from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.readings import ChargerCommand


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


async def cycles(daemon: Daemon, clock: Clock, n: int, what: str) -> None:
    """Run ``n`` cycles; fails (rather than hangs) if a cycle waits for the wake-up."""
    task = asyncio.ensure_future(run(daemon, clock, n))
    try:
        await eventually(task.done, what)
        task.result()
    finally:
        task.cancel()


async def waking_carport(clock: Clock) -> tuple[Daemon, BlockingWaker, Charger]:
    """carport (16 A) and garage (9 A) under the 25 A fuse, neither car starts; after 13 cycles
    (60 s) carport's wake-up runs (garage's charger has none)."""
    meter, carport, garage = Meter(clock), BlockingWaker(clock), Charger(clock)
    carport.name, garage.name = "charger carport", "charger garage"  # type: ignore[misc]
    daemon = Daemon(parse_config(TWO, environ={}), meter, [carport, garage], clock=clock)  # type: ignore[list-item]
    await cycles(daemon, clock, 13, "13 cycles up to carport's wake-up")
    assert carport.waking.is_set() and carport.order == ["apply 16", "wake-up"]
    assert (offered(carport), offered(garage)) == (16.0, 9.0)
    return daemon, carport, garage


async def test_cycles_go_on_and_the_other_loadpoints_decrease_is_written_during_a_wake_up() -> None:
    clock = Clock()
    daemon, carport, garage = await waking_carport(clock)
    before = daemon.stats.cycles
    daemon.set_mode("off", source="test", loadpoint="garage")
    await cycles(daemon, clock, 3, "3 cycles while carport's wake-up runs")
    assert daemon.stats.cycles == before + 3
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


async def test_shutdown_during_a_wake_up_ends_it_then_pauses_and_leaves_no_task() -> None:
    clock = Clock()
    meter, carport, garage = Meter(clock), BlockingWaker(clock), Charger(clock)
    carport.name, garage.name = "charger carport", "charger garage"  # type: ignore[misc]

    async def sleep(delay_s: float) -> None:  # the fake clock's: no wall time passes
        clock.t += delay_s
        await asyncio.sleep(0)

    config = parse_config(TWO, environ={})
    daemon = Daemon(config, meter, [carport, garage], clock=clock, sleep=sleep)  # type: ignore[list-item]
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
    # the wake-up was cancelled and ran its finally before the pause went out
    assert carport.order == ["apply 16", "wake-up", "wake-up cancelled", "wake-up over", "apply 0"]
    assert (offered(carport), offered(garage)) == (0.0, 0.0)
    assert [e["attempt"] for e in logs if e["event"] == "car_wake_up_cancelled"] == [1]
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
