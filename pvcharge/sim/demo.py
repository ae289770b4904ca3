"""``pvcharge demo``: the real daemon against the built-in emulators on a compressed measured day.

The emulators (a meter: Huawei SUN2000 over Modbus TCP, SENEC.Home over HTTPS lala.cgi or the
AlphaESS Open API over HTTP; and a Tinkerforge WARP charger over HTTP) listen on free loopback
ports and answer from one :class:`~pvcharge.sim.site.SiteModel` that follows a simulated clock
running ``speed`` times faster than real time.  The daemon, its drivers, the config loader and the
controller are the production code; only the clock and the devices are simulated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TextIO

from pvcharge.config import ApiConfig, Config, parse_config
from pvcharge.daemon import Cycle, Daemon, Stats
from pvcharge.devices import create_devices
from pvcharge.errors import PvchargeError
from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.senec import SenecEmulator
from pvcharge.sim.site import EnergyTally, SiteModel
from pvcharge.sim.trace import Trace
from pvcharge.sim.warp import WarpEmulator


class SimClock:
    """Simulated Unix time running ``speed`` times faster than the monotonic clock."""

    def __init__(self, start_s: float, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._start_s = start_s
        self._mono0 = time.monotonic()

    def now(self) -> float:
        return self._start_s + (time.monotonic() - self._mono0) * self.speed

    async def sleep(self, sim_s: float) -> None:
        await asyncio.sleep(max(0.0, sim_s) / self.speed)


@dataclass(frozen=True)
class DemoResult:
    """What a demo run measured."""

    start_s: float
    end_s: float
    wall_s: float
    stats: Stats
    energy: EnergyTally


#: meters the demo can emulate
METERS = ("huawei", "senec", "alphaess")
DEMO_ALPHAESS_SECRET = "demo-secret"  # the emulator's app secret: a demo value, not a real credential


def demo_config(meter: str, charger_url: str, base: Config | None = None) -> Config:
    """A config whose ``meter`` section is the YAML flow mapping ``meter`` and whose charger is the WARP
    emulator at ``charger_url``; ``base`` (a user's file) supplies site, charger limits, control and
    log settings.  Without ``base`` the charge point is 1-phase 6–16 A: the bundled day's 4.6 kWp array
    never covers the 3-phase minimum of 4140 W for long."""
    text = f"""
meter: {meter}
charger: {{type: warp, url: "{charger_url}", timeout_s: 2, phases: 1, min_current_a: 6, max_current_a: 16}}
"""
    cfg = parse_config(text, "<demo>")
    if base is None:
        return cfg
    return dataclasses.replace(base, meter=cfg.meter, charger=cfg.charger)


def huawei_meter(port: int) -> str:
    """The ``meter`` mapping for the Huawei emulator (no connect delay or request gap: it needs none)."""
    return (
        f"{{type: huawei, host: 127.0.0.1, port: {port}, unit_id: 1, connect_delay_s: 0, request_gap_s: 0,"
        " timeout_s: 2}"
    )


@contextlib.asynccontextmanager
async def meter_emulator(kind: str, site: SiteModel, clock: SimClock) -> AsyncIterator[str]:
    """Run the emulator of meter ``kind`` and yield the ``meter`` config mapping that points at it."""
    if kind == "huawei":
        async with HuaweiEmulator(site) as huawei:
            yield huawei_meter(huawei.port)
    elif kind == "senec":
        async with SenecEmulator(site) as senec:
            yield (
                f"{{type: senec, host: 127.0.0.1, port: {senec.port}, ca_file: '{senec.ca_pem_path}',"
                " timeout_s: 2}"
            )
    elif kind == "alphaess":
        # the rate limit at half the driver's 10-s poll interval: on a clock compressed 700-fold, a
        # millisecond of scheduling jitter is seconds of simulated time
        async with AlphaEssEmulator(
            site, app_secret=DEMO_ALPHAESS_SECRET, clock=clock.now, min_interval_s=5.0
        ) as alpha:
            yield (
                f"{{type: alphaess, url: '{alpha.url}', sys_sn: {alpha.sys_sn}, app_id: {alpha.app_id},"
                f" app_secret: {DEMO_ALPHAESS_SECRET}, timeout_s: 2}}"
            )
    else:
        raise ValueError(f"unknown demo meter {kind!r}; expected one of {', '.join(METERS)}")


def _local(t_s: float, trace: Trace) -> datetime:
    return datetime.fromtimestamp(t_s, timezone(timedelta(seconds=trace.utc_offset_s)))


class LivePrinter:
    """Prints the demo's live lines: on a terminal one status line rewritten every cycle, plus a
    kept line whenever the command changes and every ``every_s`` simulated seconds.

    ``load`` is everything behind the grid meter, car included (``pv + grid + battery``)."""

    def __init__(self, trace: Trace, out: TextIO, every_s: float = 1800.0) -> None:
        self.trace = trace
        self.out = out
        self.every_s = every_s
        self.tty = out.isatty()
        self._next_kept = -1.0

    def line(self, c: Cycle) -> str:
        parts = [_local(c.now, self.trace).strftime("%H:%M")]
        if c.site is not None:
            s = c.site
            soc = f" {s.battery_soc_pct:3.0f}%" if s.battery_soc_pct is not None else ""
            parts.append(
                f"PV {s.pv_power_w:5.0f} W  load {s.house_power_w:5.0f} W  "
                f"grid {s.grid_power_w:+6.0f} W  battery {s.battery_power_w:+6.0f} W{soc}"
            )
        if c.charger is not None:
            ch = c.charger
            parts.append(
                f"car {c.decision.command.current_a:2.0f} A {c.decision.command.phases}p {ch.power_w:5.0f} W"
            )
        parts.append(c.decision.reason)
        return "  ".join(parts)

    def __call__(self, c: Cycle) -> None:
        text = self.line(c)
        if c.written or c.now >= self._next_kept:
            if self._next_kept < 0:
                self._next_kept = c.now
            while self._next_kept <= c.now:
                self._next_kept += self.every_s
            if self.tty:
                self.out.write("\r\x1b[2K")
            self.out.write(text + "\n")
        elif self.tty:
            self.out.write("\r\x1b[2K" + text[:150])
        self.out.flush()


async def run_demo(
    trace: Trace,
    *,
    speed: float,
    start_s: float,
    end_s: float,
    base_config: Config | None = None,
    out: TextIO | None = None,
    meter: str = "huawei",
    api: ApiConfig | None = None,
) -> DemoResult:
    """Run the daemon against the emulators from ``start_s`` to ``end_s`` (Unix s, simulated).

    With ``api`` the daemon also serves its HTTP API and status page, as ``pvcharge run`` does; a port
    in use only costs the page (a line on ``out`` says so).

    Returns the daemon's counters and the site model's energy tally.
    """
    out = out or sys.stdout
    clock = SimClock(start_s, speed)
    site = SiteModel(trace, t_s=start_s, clock=clock.now)
    wall0 = time.monotonic()
    wired = base_config.charge_point.phases if base_config else 1
    phases = 3 if wired == "auto" else wired
    async with (
        meter_emulator(meter, site, clock) as meter_section,
        WarpEmulator(site, phases_connected=phases) as warp_emu,
    ):
        config = demo_config(meter_section, warp_emu.url, base_config)
        meter_driver, charger = create_devices(
            config,
            clock=clock.now,
            meter_name=f"meter {meter} (emulated)",
            charger_name=f"charger warp {warp_emu.url}",
        )
        printer = LivePrinter(trace, out)
        daemon = Daemon(config, meter_driver, charger, clock=clock.now, sleep=clock.sleep, on_cycle=printer)
        stop = asyncio.Event()

        async def stop_at_end() -> None:
            await clock.sleep(end_s - clock.now())
            stop.set()

        stopper = asyncio.create_task(stop_at_end())
        server = None
        if api is not None and api.enabled:
            from pvcharge.api.server import start_api

            try:
                server = await start_api(daemon, api)
                out.write(f"Status page: {server.url}/ (live while the demo runs)\n\n")
            except PvchargeError as exc:
                out.write(f"(no status page: {exc})\n\n")
        try:
            stats = await daemon.run(stop)
        finally:
            stopper.cancel()
            if server is not None:
                await server.stop()
        site.advance_to(clock.now())
    return DemoResult(start_s, clock.now(), time.monotonic() - wall0, stats, site.energy)


def summary(result: DemoResult, trace: Trace) -> str:
    """The demo's closing report: energy charged and where it came from."""
    e = result.energy
    car = e.car_wh / 1000

    def share(wh: float) -> str:
        return (
            f"{wh / 1000:6.2f} kWh ({100 * wh / e.car_wh:5.1f} %)"
            if e.car_wh > 0
            else f"{wh / 1000:6.2f} kWh"
        )

    start, end = _local(result.start_s, trace), _local(result.end_s, trace)
    hours = (result.end_s - result.start_s) / 3600
    s = result.stats
    return "\n".join(
        [
            f"Summary: {trace.name}, {start:%Y-%m-%d %H:%M}–{end:%H:%M} local "
            f"({hours:.1f} h simulated in {result.wall_s:.0f} s, {s.cycles} control cycles)",
            f"  PV produced      {e.pv_wh / 1000:6.2f} kWh, exported {e.grid_export_wh / 1000:.2f} kWh",
            f"  car charged      {car:6.2f} kWh",
            f"    from PV        {share(e.pv_to_car_wh)}",
            f"    from battery   {share(e.battery_to_car_wh)}",
            f"    from grid      {share(e.grid_to_car_wh)}",
            f"  starts {s.starts}, charger writes {s.charger_writes}, "
            f"meter failures {s.meter_failures}, charger failures {s.charger_failures}",
        ]
    )
