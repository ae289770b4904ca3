"""``pvcharge demo``: the real daemon against the built-in emulators on a compressed measured day.

The emulators (a meter: Huawei SUN2000 over Modbus TCP, SENEC.Home over HTTPS lala.cgi or the
AlphaESS Open API over HTTP; and a charger: a Tinkerforge WARP over HTTP, the Easee cloud API over
HTTP, an AlphaESS wallbox through the Open API, or an OCPP 1.6J charge point, which connects to the
driver's central system instead of listening) listen on free loopback ports and answer from one
:class:`~pvcharge.sim.site.SiteModel` that follows a simulated clock running ``speed`` times faster
than real time.  The daemon, its drivers, the config loader and the controller are the production
code; only the clock and the devices are simulated.

The cloud emulators run on the simulated clock too, so their rate limits, token lifetimes and
timestamp windows are in simulated seconds, as the drivers' own budgets are (as in the soak run).
An AlphaESS meter and an AlphaESS wallbox share one emulator and one account, as they would share one
cloud account (:func:`pvcharge.devices.create_devices`).  What the charger's cloud emulator answered
(requests, writes, refusals such as HTTP 429 or code 6053) is counted in
:class:`~pvcharge.sim.demo_devices.Traffic`; what the OCPP charge point sent and accepted in
:class:`~pvcharge.sim.ocpp.OcppTraffic`.  The emulators and the config mappings that point at them are
:mod:`pvcharge.sim.demo_devices`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pvcharge.config import ApiConfig, Config, secret_values
from pvcharge.daemon import Cycle, Daemon
from pvcharge.devices import create_devices
from pvcharge.errors import PvchargeError
from pvcharge.loadpoint import Stats
from pvcharge.logs import register_secrets
from pvcharge.sessions import open_recorder
from pvcharge.sessions.tally import Session
from pvcharge.sim.demo_devices import (
    DEMO_CHARGE_POINT,
    METERS,
    Traffic,
    demo_config_for,
    emulators,
)
from pvcharge.sim.ocpp import OcppTraffic
from pvcharge.sim.site import CarParams, EnergyTally, SiteModel
from pvcharge.sim.trace import Trace

if TYPE_CHECKING:
    from pvcharge.planning.service import PlanService
    from pvcharge.sessions import SessionRecorder


class SimClock:
    """Simulated Unix time running ``speed`` times faster than the monotonic clock.

    The daemon sleeps through :meth:`pace`, everything else through :meth:`sleep`. With ``paced`` (or
    once the daemon has paced) the clock never runs more than half a sleep past the time the daemon's
    next cycle is due: a cycle that takes longer than that (a busy machine, at a high speed) holds the
    simulated time until the daemon sleeps again, and the clock then goes on from there, behind the wall
    clock by the time it was held (:attr:`held_wall_s`). So on a slow machine the demo takes longer
    instead of skipping control cycles; on a fast one the clock is never held.
    """

    def __init__(self, start_s: float, speed: float, *, paced: bool = False) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._start_s = start_s
        self._mono0 = time.monotonic()
        # the simulated time may not pass this: with ``paced`` it stands at the start until the first pace()
        self._horizon_s: float | None = start_s if paced else None
        #: wall time (s) the clock was held for a daemon that fell behind
        self.held_wall_s = 0.0

    def _free_s(self) -> float:
        return self._start_s + (time.monotonic() - self._mono0) * self.speed

    def now(self) -> float:
        free = self._free_s()
        return free if self._horizon_s is None else min(free, self._horizon_s)

    async def sleep(self, sim_s: float) -> None:
        """Sleep ``sim_s`` simulated seconds (less, in simulated time, while the clock is held)."""
        await asyncio.sleep(max(0.0, sim_s) / self.speed)

    async def pace(self, sim_s: float) -> None:
        """The daemon's sleep between cycles: ``sim_s`` simulated seconds from now, where "now" has
        waited for the daemon if it fell behind."""
        now, free = self.now(), self._free_s()
        if free > now:  # held since the horizon passed: go on from the horizon, later in wall time
            held = (free - now) / self.speed
            self._mono0 += held
            self.held_wall_s += held
        sim_s = max(0.0, sim_s)
        self._horizon_s = now + 1.5 * sim_s
        await asyncio.sleep(sim_s / self.speed)

    async def sleep_until(self, sim_t: float) -> None:
        """Return once the simulated time has reached ``sim_t`` (however long the clock was held)."""
        while (left := sim_t - self.now()) > 0:
            await self.sleep(left)


#: what runs beside the demo's daemon: ``beside(daemon, clock, site, stop)`` is entered before the
#: daemon's first cycle and left after its last (see :func:`run_demo`); it gives the plan service the
#: API serves (``/api/plans``), or ``None``
Beside = Callable[
    [Daemon, SimClock, SiteModel, asyncio.Event],
    contextlib.AbstractAsyncContextManager["PlanService | None"],
]


@dataclass(frozen=True)
class DemoResult:
    """What a demo run measured.

    ``traffic``: what the charger's cloud emulator answered (Easee, AlphaESS wallbox; with an AlphaESS
    meter on the same account, the meter's requests too), or what the OCPP charge point sent and
    accepted; ``None`` for the WARP.
    """

    start_s: float
    end_s: float
    wall_s: float
    stats: Stats
    energy: EnergyTally
    traffic: Traffic | OcppTraffic | None = None
    #: control cycles due from start to end at the config's ``interval_s``
    cycles_due: int = 0
    #: wall time (s) the simulated clock was held because the daemon fell behind (:class:`SimClock`)
    held_wall_s: float = 0.0
    #: the sessions this run recorded (with ``record``), as stored
    sessions: tuple[Session, ...] = ()


def _local(t_s: float, trace: Trace) -> datetime:
    return datetime.fromtimestamp(t_s, trace_tz(trace))


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
    charger: str = "warp",
    api: ApiConfig | None = None,
    record: Path | None = None,
    car: CarParams | None = None,
    beside: Beside | None = None,
) -> DemoResult:
    """Run the daemon against the emulators from ``start_s`` to ``end_s`` (Unix s, simulated).

    ``meter`` is one of :data:`METERS`, ``charger`` one of :data:`CHARGERS`.  An AlphaESS wallbox
    charges at the charge point's ``max_current_a`` on its ``phases`` (the setting in the AlphaESS app,
    which its driver cannot change); with ``phases: auto`` an Easee is driven through its circuit's
    phase limits.

    With ``api`` the daemon also serves its HTTP API and status page, as ``pvcharge run`` does; a port
    in use only costs the page (a line on ``out`` says so).  With ``record`` (a SQLite file) the
    sessions are recorded there as ``pvcharge run`` records them (loadpoint ``demo-<charger>``, days in
    the trace's time zone); the session still open at the end is closed with it. ``car``: the car and
    its plug-in window (default 08:00–18:00). ``beside``: what runs beside the daemon while it runs (the
    plan demo's plan service, :mod:`pvcharge.sim.plandemo`), entered with the daemon, the clock, the
    site model and the stop event.

    Returns the daemon's counters, the site model's energy tally and, for a cloud charger, what its
    emulator answered.

    Raises:
        ValueError: an unknown ``meter`` or ``charger``.
        ConfigError: ``base_config`` asks for ``phases: auto`` with a charger that cannot switch phases.
    """
    if meter not in METERS:
        raise ValueError(f"unknown demo meter {meter!r}; expected one of {', '.join(METERS)}")
    out = out or sys.stdout
    clock = SimClock(start_s, speed, paced=True)
    site = SiteModel(trace, t_s=start_s, clock=clock.now, car=car or CarParams())
    wall0 = time.monotonic()
    charge_point = base_config.charge_point if base_config else DEMO_CHARGE_POINT
    async with emulators(meter, charger, site, clock, charge_point) as emulated:
        config = demo_config_for(emulated.meter, emulated.charger, base_config)
        register_secrets(secret_values(config))  # throwaway values, masked anyway, as `pvcharge run` does
        meter_driver, charger_driver = create_devices(
            config,
            clock=clock.now,
            meter_name=f"meter {meter} (emulated)",
            charger_name=emulated.charger_name,
        )
        printer = LivePrinter(trace, out)
        daemon = Daemon(
            config, meter_driver, charger_driver, clock=clock.now, sleep=clock.pace, on_cycle=printer
        )
        recorder = (  # a database that cannot be opened is logged (sessions_unavailable); the demo goes on
            open_recorder(config, tz=trace_tz(trace), path=record, loadpoint=f"demo-{charger}")
            if record is not None
            else None
        )
        if recorder is not None:
            daemon.listeners.append(recorder)
        recorded: tuple[Session, ...] = ()
        try:
            async with stopping_at(clock, end_s) as stop, contextlib.AsyncExitStack() as stack:
                plans = await stack.enter_async_context(beside(daemon, clock, site, stop)) if beside else None
                await stack.enter_async_context(status_page(daemon, api, out, recorder, plans))
                stats = await daemon.run(stop)
        finally:
            if recorder is not None:
                recorded = tuple(recorder.sessions(from_s=start_s, loadpoint=recorder.loadpoint))
                recorder.close(clock.now(), end_session=True)
        site.advance_to(clock.now())
    end = clock.now()
    due = int((end - start_s) // config.control.interval_s) + 1
    return DemoResult(
        start_s,
        end,
        time.monotonic() - wall0,
        stats,
        site.energy,
        emulated.traffic,
        due,
        clock.held_wall_s,
        recorded,
    )


@contextlib.asynccontextmanager
async def stopping_at(clock: SimClock, end_s: float) -> AsyncIterator[asyncio.Event]:
    """An event set when ``clock`` reaches ``end_s`` (simulated Unix s), for :meth:`Daemon.run`."""
    stop = asyncio.Event()

    async def stop_at_end() -> None:
        await clock.sleep_until(end_s)
        stop.set()

    stopper = asyncio.create_task(stop_at_end())
    try:
        yield stop
    finally:
        stopper.cancel()


@contextlib.asynccontextmanager
async def status_page(
    daemon: Daemon,
    api: ApiConfig | None,
    out: TextIO,
    recorder: SessionRecorder | None = None,
    plans: PlanService | None = None,
) -> AsyncIterator[None]:
    """With ``api`` (enabled), the daemon's HTTP API and status page while the block runs, as ``pvcharge
    run`` serves them; a port in use only costs the page (a line on ``out`` says so)."""
    server = None
    if api is not None and api.enabled:
        from pvcharge.api.server import start_api

        try:
            server = await start_api(daemon, api, recorder, {plans.loadpoint: plans} if plans else None)
            out.write(f"Status page: {server.url}/ (live while the demo runs)\n\n")
        except PvchargeError as exc:
            out.write(f"(no status page: {exc})\n\n")
    try:
        yield
    finally:
        if server is not None:
            await server.stop()


def trace_tz(trace: Trace) -> timezone:
    """The trace's local time zone (a fixed offset)."""
    return timezone(timedelta(seconds=trace.utc_offset_s))


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
            f"({hours:.1f} h simulated in {result.wall_s:.0f} s, {s.cycles} of {result.cycles_due} control "
            "cycles ran)",
            f"  PV produced      {e.pv_wh / 1000:6.2f} kWh, exported {e.grid_export_wh / 1000:.2f} kWh",
            f"  car charged      {car:6.2f} kWh",
            f"    from PV        {share(e.pv_to_car_wh)}",
            f"    from battery   {share(e.battery_to_car_wh)}",
            f"    from grid      {share(e.grid_to_car_wh)}",
            f"  starts {s.starts}, charger writes {s.charger_writes}, "
            f"meter failures {s.meter_failures}, charger failures {s.charger_failures}",
        ]
        + ([f"  {result.traffic.name:<16} {result.traffic.line()}"] if result.traffic is not None else [])
        + _pace_lines(result)
    )


def _pace_lines(result: DemoResult) -> list[str]:
    """What the summary says when the machine did not keep up with the demo's speed."""
    lines = []
    if result.held_wall_s >= 1.0:
        lines.append(
            f"  the machine could not keep up with this speed: the simulated clock waited "
            f"{result.held_wall_s:.0f} s for the daemon, so no control cycle was skipped"
        )
    if result.stats.cycles < 0.97 * result.cycles_due:
        lines.append(
            f"  only {result.stats.cycles} of {result.cycles_due} control cycles ran: the machine could not "
            "keep up; the result is not representative (try a lower --speed)"
        )
    return lines
