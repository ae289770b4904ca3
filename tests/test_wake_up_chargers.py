"""Resume recovery end to end: the real daemon against the WARP and Easee emulators with a car that
falls asleep after a pause (``CarParams(sleepy=True)``) and wakes only on the charger's wake-up sequence
(WARP: a control-pilot disconnect; Easee: its pause, then a resume)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sitestub import run_daemon
from structlog.testing import capture_logs

from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.sim.demo import SimClock, huawei_meter
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
