"""Site states for emulator tests: ``meter_state`` builds one (no car), ``FixedSite`` serves it and counts
calls; ``FakeClock`` is the time they share; ``free_port`` a loopback port nothing listens on;
``run_daemon`` runs ``pvcharge run`` as a user does until the test has seen what it waits for."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pvcharge.sim import free_port  # noqa: F401 (the tests' name for it)
from pvcharge.sim.site import SiteState


class FakeClock:
    """Unix seconds (``t_s``) that only move when the test says so."""

    def __init__(self, t_s: float) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s

    def advance(self, dt_s: float) -> None:
        self.t_s += dt_s


class FixedSite:
    """A state source whose state the test sets; ``calls`` counts ``state()`` calls (one a request)."""

    def __init__(self, state: SiteState) -> None:
        self.current = state
        self.calls = 0

    def state(self) -> SiteState:
        self.calls += 1
        return self.current


def meter_state(*, pv_w: float, grid_w: float, battery_w: float, soc_pct: float) -> SiteState:
    """What a meter sees, no car plugged in: house = pv + grid + battery (canonical signs, W, %)."""
    return SiteState(
        t_s=0.0,
        pv_power_w=pv_w,
        house_power_w=pv_w + grid_w + battery_w,
        grid_power_w=grid_w,
        battery_power_w=battery_w,
        battery_soc_pct=soc_pct,
        car_connected=False,
        car_power_w=0.0,
        car_current_a=0.0,
        car_phases=0,
        car_soc_pct=20.0,
        offered_current_a=0.0,
        offered_phases=3,
    )


async def run_daemon(
    config: Path, *, until: Callable[[], bool], polls: int = 100
) -> tuple[bool, int | None, str]:
    """Run ``python -m pvcharge run --config config`` until ``until()`` holds (asked every 0.1 s, at most
    ``polls`` times), then stop it with SIGTERM as systemd does. Returns whether ``until()`` held, the exit
    code and the output (stderr, then stdout)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pvcharge",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    held = False
    for _ in range(polls):
        await asyncio.sleep(0.1)
        held = until()
        if held:
            break
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    return held, proc.returncode, err.decode() + out.decode()


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Wait for ``condition`` (an event from the other side), asked every 0.01 s; ``timeout_s`` only bounds
    a failing test, whose message names ``what``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, (
            f"timed out after {timeout_s:g} s waiting for {what}"
        )
        await asyncio.sleep(0.01)
