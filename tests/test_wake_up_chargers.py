"""Resume recovery end to end: the real daemon against the WARP and Easee emulators with a car that
falls asleep after a pause (``CarParams(sleepy=True)``) and wakes only on the charger's wake-up sequence
(WARP: a control-pilot disconnect; Easee: its pause, then a resume)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sitestub import FakeClock, run_daemon
from structlog.testing import capture_logs

from pvcharge.chargers.easee import Config as EaseeConfig
from pvcharge.chargers.easee import EaseeCharger
from pvcharge.chargers.warp import CP_DISCONNECT_S, WarpCharger
from pvcharge.chargers.warp import Config as WarpConfig
from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.errors import DeviceProtocolError, RateLimited, WriteDeferred
from pvcharge.readings import ChargerCommand
from pvcharge.settings import Secret
from pvcharge.sim.demo import SimClock
from pvcharge.sim.demo_devices import huawei_meter
from pvcharge.sim.easee import EaseeEmulator
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.sections import easee_account
from pvcharge.sim.site import CarParams, SiteModel
from pvcharge.sim.trace import bundled_trace
from pvcharge.sim.warp import WarpEmulator

NOON_S = 12 * 3600
#: fast mode: the car is offered its maximum at once, whatever the sun does
CONTROL = "control: {mode: fast, interval_s: 5, max_age_s: 30}\n"


def site_at_noon(car: CarParams, speed: float = 1.0) -> tuple[SiteModel, SimClock]:
    """The bundled day at noon, the home battery settled, then on a clock ``speed`` times real time
    (paced by the daemon unless real time)."""
    trace = bundled_trace()
    site = SiteModel(trace, t_s=trace.start_s + NOON_S, car=car)
    site.advance(60)
    clock = SimClock(site.now, speed, paced=speed != 1.0)
    site.clock = clock.now
    return site, clock


async def test_pvcharge_run_wakes_a_sleepy_car_on_a_warp_and_it_charges(tmp_path: Path) -> None:
    """``pvcharge run`` as a user runs it (real time, so a short ``wake_up_after_s``): the car that slept
    through the start charges after one control-pilot disconnect."""
    site, _ = site_at_noon(CarParams(sleepy=True, start_delay_s=1.0, follow_delay_s=1.0))
    async with HuaweiEmulator(site) as meter, WarpEmulator(site) as warp:
        path = tmp_path / "config.yaml"
        path.write_text(
            f"meter: {huawei_meter(meter.port)}\n"
            f"charger: {{type: warp, url: '{warp.url}', timeout_s: 2, phases: 1, wake_up_after_s: 5}}\n"
            "control: {mode: fast, interval_s: 1, max_age_s: 10}\n"
        )
        charged, code, log = await run_daemon(path, until=lambda: site.state().car_power_w > 1000, polls=400)
    assert charged, log
    assert code == 0, log
    assert [disconnect for _, disconnect in warp.cp_log] == [True, False]  # one wake-up
    assert "car_wake_up" in log and "attempt=1" in log and "of=2" in log, log
    assert "car_wake_up_failed" not in log, log


@contextlib.asynccontextmanager
async def warp_daemon(car: CarParams, charger_keys: str = "") -> AsyncIterator[tuple[Daemon, WarpEmulator]]:
    """The real daemon in-process on a simulated clock 50 times faster than real time."""
    site, clock = site_at_noon(car, speed=50.0)
    async with HuaweiEmulator(site) as meter_emu, WarpEmulator(site) as warp_emu:
        warp = f"type: warp, url: '{warp_emu.url}', timeout_s: 2, phases: 1{charger_keys}"
        config = parse_config(f"meter: {huawei_meter(meter_emu.port)}\ncharger: {{{warp}}}\n{CONTROL}")
        meter = config.meter.create(name="meter", clock=clock.now)
        charger = config.charger.create(name="charger warp", clock=clock.now)
        charger._sleep = clock.sleep  # the control-pilot disconnect's 3 s, simulated
        yield Daemon(config, meter, charger, clock=clock.now, sleep=clock.pace), warp_emu


async def run_for(daemon: Daemon, sim_s: float) -> None:
    """Run ``daemon`` for ``sim_s`` simulated seconds."""
    clock_now = daemon.clock
    stop = asyncio.Event()

    end = clock_now() + sim_s

    def stop_at_end(_: object) -> None:
        if clock_now() >= end:
            stop.set()

    daemon.listeners.append(stop_at_end)
    await daemon.run(stop)


@pytest.mark.timeout(60)
async def test_wake_ups_are_capped_per_plug_in_and_spaced_by_wake_up_after_s() -> None:
    """A car that no wake-up reaches: two control-pilot disconnects (wake_up_attempts 2), at least 60 s
    apart, then one warning and nothing more."""
    async with warp_daemon(CarParams(sleepy=True, wakeable=False)) as (daemon, warp):
        with capture_logs() as logs:
            await run_for(daemon, 400)
    disconnects = [t for t, disconnect in warp.cp_log if disconnect]
    assert len(disconnects) == 2, warp.cp_log
    assert disconnects[1] - disconnects[0] >= 60
    assert [e["attempt"] for e in logs if e["event"] == "car_wake_up"] == [1, 2]
    [gave_up] = [e for e in logs if e["event"] == "car_not_starting"]
    assert "after 2 wake-ups" in gave_up["why"]
    assert daemon.status()["wake_up"] | {"last_at_s": None} == {
        "attempts": 2,
        "max_attempts": 2,
        "last_at_s": None,
        "available": True,
        "failures": 0,
        "last_error": None,
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("car", "keys"),
    [
        (CarParams(sleepy=True), ", wake_up_attempts: 0"),  # off: nothing is sent
        (CarParams(), ""),  # a car that charges normally is never woken
    ],
    ids=["wake_up_attempts_0", "normal_car"],
)
async def test_no_wake_up_is_sent(car: CarParams, keys: str) -> None:
    async with warp_daemon(car, keys) as (daemon, warp):
        with capture_logs() as logs:
            await run_for(daemon, 300)
    assert warp.cp_log == []
    assert not [e for e in logs if e["event"].startswith("car_")], logs
    assert daemon.status()["wake_up"]["attempts"] == 0
    assert daemon.stats.starts == 1  # the car was offered current all along
    charged = bool(daemon.last_cycle and daemon.last_cycle.charger and daemon.last_cycle.charger.charging)
    assert charged == (not car.sleepy)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("control", ["charger_current", "circuit_current"])
async def test_the_daemon_wakes_a_sleepy_car_on_an_easee_never_above_the_command(control: str) -> None:
    """Easee: the wake-up is the charger's pause, then a resume; the charger never offers more than the
    daemon commanded (16 A), also in between, and the car then charges."""
    site, clock = site_at_noon(CarParams(sleepy=True), speed=50.0)
    async with (
        HuaweiEmulator(site) as meter_emu,
        EaseeEmulator(site, password="pw-wake", clock=clock.now) as easee,
    ):
        keys = f"type: easee, {easee_account(easee, password='pw-wake')}, timeout_s: 2, control: {control}"
        if control == "circuit_current":
            keys += f", site_id: {easee.site_id}, circuit_id: {easee.circuit_id}"
        keys += ", phases: 1, max_current_a: 16"
        config = parse_config(f"meter: {huawei_meter(meter_emu.port)}\ncharger: {{{keys}}}\n{CONTROL}")
        meter = config.meter.create(name="meter", clock=clock.now)
        charger = config.charger.create(name="charger easee", clock=clock.now)
        daemon = Daemon(config, meter, charger, clock=clock.now, sleep=clock.pace)
        start = clock.now()
        with capture_logs() as logs:
            await run_for(daemon, 300)
    commands = [path.rsplit("/", 1)[-1] for _, method, path, status in easee.request_log if status < 300]
    assert commands.count("pause_charging") == 1, commands
    assert [e["attempt"] for e in logs if e["event"] == "car_wake_up"] == [1]
    woken_at = site.wake_ups[0]
    assert woken_at - start >= 60  # not before wake_up_after_s
    assert daemon.last_cycle is not None and daemon.last_cycle.charger is not None
    assert daemon.last_cycle.charger.charging and daemon.last_cycle.charger.power_w > 1000
    after_start = [current for t, current, _ in easee.offers if t > start]
    assert max(after_start) <= 16, easee.offers  # never above the command, the wake-up included
    assert not [e for e in logs if e["event"] == "car_wake_up_failed"], logs


# -- the drivers' wake_up against the emulators ------------------------------------------------------


async def test_warp_wake_up_is_a_control_pilot_disconnect_that_leaves_the_current() -> None:
    site, _ = site_at_noon(CarParams(sleepy=True))
    async with WarpEmulator(site) as emu:
        charger = WarpCharger(WarpConfig(url=emu.url), name="charger warp", clock=lambda: site.now)
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        charger._sleep = sleep
        await charger.apply(ChargerCommand(10.0, 3))
        emu.request_log.clear()
        await charger.wake_up()
        await charger.close()
    writes = [(method, path) for method, path in emu.request_log if method != "GET"]
    assert writes == [("POST", "evse/control_pilot_disconnect_update")] * 2
    assert [disconnect for _, disconnect in emu.cp_log] == [True, False]
    assert slept == [CP_DISCONNECT_S]
    assert len(site.wake_ups) == 1
    assert site.state().offered_current_a == 10.0  # slot 8 as it was


@pytest.mark.parametrize("knob", ["cp_disconnect_supported", "management_enabled", "cancelled"])
async def test_warp_wake_up_refused_or_cancelled_never_leaves_the_cp_disconnected(knob: str) -> None:
    site, _ = site_at_noon(CarParams(sleepy=True))
    async with WarpEmulator(site) as emu:
        charger = WarpCharger(WarpConfig(url=emu.url), name="charger warp", clock=lambda: site.now)

        async def cancelled(_: float) -> None:
            raise asyncio.CancelledError

        if knob == "cp_disconnect_supported":
            emu.cp_disconnect_supported = False
        elif knob == "management_enabled":
            emu.management_enabled = True
        else:
            charger._sleep = cancelled
        error: type[BaseException] = asyncio.CancelledError if knob == "cancelled" else DeviceProtocolError
        with pytest.raises(error) as raised:
            await charger.wake_up()
        await charger.close()
    cp_writes = [path for method, path in emu.request_log if method == "POST"]
    if knob == "cp_disconnect_supported":
        assert "'cp_disconnect' is not in info/features" in str(raised.value) and cp_writes == []
    else:
        assert len(cp_writes) == 2  # disconnected (or asked to), then connected again
    if knob == "management_enabled":
        assert "evse/management_enabled" in str(raised.value)
    assert not emu.cp_log or emu.cp_log[-1][1] is False  # connected again
    assert len(site.wake_ups) == (1 if knob == "cancelled" else 0)


def easee_driver(emu: EaseeEmulator, clock: FakeClock, **settings: object) -> EaseeCharger:
    config = EaseeConfig(
        username="demo@example.com",
        password=Secret("demo-password"),
        charger_id=emu.charger_id,
        url=emu.url,
        timeout_s=2.0,
        retries=0,
        **settings,  # type: ignore[arg-type]
    )
    return EaseeCharger(config, name="charger easee", clock=clock)


def easee_at_noon() -> tuple[SiteModel, FakeClock]:
    clock = FakeClock(bundled_trace().start_s + NOON_S)
    return SiteModel(bundled_trace(), t_s=clock(), clock=clock, car=CarParams(sleepy=True)), clock


async def test_easee_wake_up_pauses_then_resumes_to_the_command_and_waits_for_its_budget() -> None:
    site, clock = easee_at_noon()
    async with EaseeEmulator(site, clock=clock) as emu:
        charger = easee_driver(emu, clock)
        with pytest.raises(WriteDeferred, match="unknown or 0 A"):
            await charger.wake_up()  # nothing applied yet: the charger's current is unknown
        await charger.apply(ChargerCommand(10.0, 3))
        clock.advance(5)
        sent = len(emu.request_log)
        with pytest.raises(WriteDeferred, match="min_write_interval_s, command budget") as deferred:
            await charger.wake_up()  # the start took one of the 2 commands a minute
        assert len(emu.request_log) == sent and 50 < deferred.value.retry_after_s <= 61
        clock.advance(deferred.value.retry_after_s)
        start = clock()
        await charger.wake_up()
        await charger.close()
    commands = [(path.rsplit("/", 1)[-1], status) for t, _, path, status in emu.request_log if t >= start]
    assert commands == [("pause_charging", 202), ("set_dynamic_charger_current", 202)]
    assert [current for t, current, _ in emu.offers if t >= start] == [0.0, 10.0]  # never above 10 A
    assert site.wake_ups == [start]


async def test_easee_wake_up_whose_resume_is_refused_leaves_the_charger_paused() -> None:
    site, clock = easee_at_noon()
    async with EaseeEmulator(site, clock=clock, commands_per_min=1) as emu:
        charger = easee_driver(
            emu, clock, control="circuit_current", site_id=emu.site_id, circuit_id=emu.circuit_id
        )
        await charger.apply(ChargerCommand(10.0, 3))  # circuit 10 A, then resume_charging: 1 command
        clock.advance(62)
        with pytest.raises(RateLimited, match="paused, but the resume was not taken"):
            await charger.wake_up()
        await charger.close()
    assert site.state().offered_current_a == 0.0  # paused: below the command, not above
    assert max(current for _, current, _ in emu.offers[1:]) <= 10.0
