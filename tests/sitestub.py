"""Site states for emulator tests: ``meter_state`` builds one (no car), ``FixedSite`` serves it and counts
calls; ``FakeClock`` is the time they share; ``free_port`` a loopback port nothing listens on."""

from __future__ import annotations

import socket

from pvcharge.sim.site import SiteState


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound, then closed again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
