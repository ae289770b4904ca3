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
(requests, writes, refusals such as HTTP 429 or code 6053) is counted in :class:`Traffic`; what the
OCPP charge point sent and accepted in :class:`~pvcharge.sim.ocpp.OcppTraffic`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from aiohttp import web

from pvcharge.config import ApiConfig, Config, parse_config, secret_values
from pvcharge.control import ChargePoint
from pvcharge.daemon import Cycle, Daemon
from pvcharge.devices import create_devices
from pvcharge.errors import PvchargeError
from pvcharge.loadpoint import Stats
from pvcharge.logs import register_secrets
from pvcharge.sessions import open_recorder
from pvcharge.sessions.tally import Session
from pvcharge.sim import free_port
from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.easee import EaseeEmulator
from pvcharge.sim.easee_charger import MAX_CHARGER_A
from pvcharge.sim.http import Handler, LoopbackHttpServer
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.ocpp import OcppChargePointEmulator, OcppTraffic
from pvcharge.sim.sections import EASEE_USERNAME, alphaess_account, easee_account
from pvcharge.sim.senec import SenecEmulator
from pvcharge.sim.site import CarParams, EnergyTally, SiteModel
from pvcharge.sim.trace import Trace
from pvcharge.sim.warp import WarpEmulator

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


@dataclass
class Traffic:
    """What a cloud emulator answered during the demo: the requests its rate limits saw, the writes it
    accepted and the requests it refused.

    Attributes:
        name: e.g. ``"Easee cloud"``.
        requests: requests answered.
        writes: accepted writes by endpoint (the path's last segment), e.g.
            ``{"set_dynamic_charger_current": 17, "pause_charging": 1}`` or ``{"remoteControlEvCharger": 4}``.
        refused: refusals by kind: ``"HTTP 429"``, ``"HTTP 403"``, … or an AlphaESS return code
            (``"6053"`` too fast, ``"6008"`` set failed, …).
    """

    name: str
    requests: int = 0
    writes: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        """For the summary, e.g. ``812 requests, writes: pause_charging 1; refused: none``."""
        writes = ", ".join(f"{k} {n}" for k, n in sorted(self.writes.items())) or "none"
        refused = ", ".join(f"{k} {n}" for k, n in sorted(self.refused.items())) or "none"
        return f"{self.requests} requests, writes: {writes}; refused: {refused}"


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


#: meters the demo can emulate
METERS = ("huawei", "senec", "alphaess")
#: chargers the demo can emulate
CHARGERS = ("warp", "easee", "alphaess", "ocpp")
DEMO_ALPHAESS_SECRET = "demo-secret"  # the emulator's app secret: a demo value, not a real credential
DEMO_EASEE_PASSWORD = "demo-password"  # the Easee emulator's password: a demo value, not a real credential
DEMO_OCPP_ID = "pvcharge-demo"  # the OCPP charge point's identity
#: the demo's charge point without ``--config``: 1-phase 6–16 A (an AlphaESS wallbox: 16 A on 1 phase, the
#: current set in its app)
DEMO_CHARGE_POINT = ChargePoint(min_current_a=6, max_current_a=16, phases=1)
DEMO_LIMITS = (
    f"phases: {DEMO_CHARGE_POINT.phases}, min_current_a: {DEMO_CHARGE_POINT.min_current_a:g}, "
    f"max_current_a: {DEMO_CHARGE_POINT.max_current_a:g}"
)


def demo_config(meter: str, charger_url: str, base: Config | None = None) -> Config:
    """A config whose ``meter`` section is the YAML flow mapping ``meter`` and whose charger is the WARP
    emulator at ``charger_url``; ``base`` (a user's file) supplies site, charger limits, control and
    log settings.  Without ``base`` the charge point is 1-phase 6–16 A: the bundled day's 4.6 kWp array
    never covers the 3-phase minimum of 4140 W for long."""
    return demo_config_for(meter, warp_charger(charger_url), base)


def demo_config_for(meter: str, charger: str, base: Config | None = None) -> Config:
    """As :func:`demo_config`, for any charger: ``charger`` is the charger mapping's keys without the
    charge point's limits (e.g. ``type: easee, url: '…', …``; see :func:`warp_charger`)."""
    text = f"""
meter: {meter}
charger: {{{charger}, {DEMO_LIMITS}}}
"""
    cfg = parse_config(text, "<demo>")
    if base is None:
        return cfg
    return dataclasses.replace(base, meter=cfg.meter, charger=cfg.charger)


def warp_charger(url: str) -> str:
    """The ``charger`` keys for the WARP emulator at ``url``."""
    return f'type: warp, url: "{url}", timeout_s: 2'


def huawei_meter(port: int) -> str:
    """The ``meter`` mapping for the Huawei emulator (no connect delay or request gap: it needs none)."""
    return (
        f"{{type: huawei, host: 127.0.0.1, port: {port}, unit_id: 1, connect_delay_s: 0, request_gap_s: 0,"
        " timeout_s: 2}"
    )


def alphaess_meter(alpha: AlphaEssEmulator) -> str:
    """The ``meter`` mapping for the AlphaESS emulator ``alpha`` (started)."""
    return f"{{type: alphaess, {alphaess_account(alpha, app_secret=DEMO_ALPHAESS_SECRET)}, timeout_s: 2}}"


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
        # the strictest account the client's request budget is made for: 5 requests in any 10 s (the
        # client counts each until after its answer, so the compressed clock's jitter does not matter)
        async with DemoAlphaEss(
            site, app_secret=DEMO_ALPHAESS_SECRET, clock=clock.now, window_s=10.0, requests_per_window=5
        ) as alpha:
            yield alphaess_meter(alpha)
    else:
        raise ValueError(f"unknown demo meter {kind!r}; expected one of {', '.join(METERS)}")


# -- the chargers' cloud emulators, counted -------------------------------------------------------


class _Counted(LoopbackHttpServer):
    """Counts what the emulator it is mixed into answers, in :attr:`traffic` (set by the subclass)."""

    traffic: Traffic

    def _application(self) -> web.Application:
        app = super()._application()
        # inside the fault middleware (start() puts it first), outside the emulator's own: sees every answer
        app.middlewares.insert(0, self._count)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        self.traffic.requests += 1
        refusal = self._refusal(response)
        if refusal is not None:
            self.traffic.refused[refusal] += 1
        elif self._is_write(request):
            self.traffic.writes[request.path.rstrip("/").rpartition("/")[2]] += 1
        return response

    def _refusal(self, response: web.StreamResponse) -> str | None:
        """What refused the request (``"HTTP 429"``, …), ``None`` if it was answered."""
        return f"HTTP {response.status}" if response.status >= 400 else None

    def _is_write(self, request: web.Request) -> bool:
        return False


class DemoEasee(_Counted, EaseeEmulator):
    """The Easee emulator on the demo's clock, counting its traffic; the circuit is wired for
    ``phases`` (1: P2 = P3 = 0, so a dynamic charger current is offered on one phase)."""

    def __init__(self, site: SiteModel, *, phases: int, **kwargs: Any) -> None:
        super().__init__(site, **kwargs)
        self.traffic = Traffic("Easee cloud")
        if phases == 1:
            self.circuit_a = (MAX_CHARGER_A, 0, 0)
            self._offer()

    def _is_write(self, request: web.Request) -> bool:
        return request.method == "POST" and not request.path.startswith("/api/accounts/")


class DemoAlphaEss(_Counted, AlphaEssEmulator):
    """The AlphaESS emulator on the demo's clock, counting its traffic; a reply with a return code
    other than 200 counts as refused by that code (``"6053"``, …)."""

    def __init__(self, site: SiteModel, **kwargs: Any) -> None:
        super().__init__(site, **kwargs)
        self.traffic = Traffic("AlphaESS cloud")

    def _refusal(self, response: web.StreamResponse) -> str | None:
        refused = super()._refusal(response)
        if refused is not None or not isinstance(response, web.Response) or response.text is None:
            return refused
        with contextlib.suppress(ValueError, AttributeError):
            code = json.loads(response.text).get("code")
            return None if code == 200 else str(code)
        return None

    def _is_write(self, request: web.Request) -> bool:
        return request.method == "POST"


@dataclass(frozen=True)
class _Emulated:
    meter: str  #: the meter mapping
    charger: str  #: the charger mapping's keys, without the charge point's limits
    charger_name: str
    traffic: Traffic | OcppTraffic | None


@contextlib.asynccontextmanager
async def _emulators(
    meter: str, charger: str, site: SiteModel, clock: SimClock, charge_point: ChargePoint
) -> AsyncIterator[_Emulated]:
    """Run the emulators of ``meter`` and ``charger`` (one for an AlphaESS meter and wallbox: one
    account) and yield where they are."""
    if charger not in CHARGERS:
        raise ValueError(f"unknown demo charger {charger!r}; expected one of {', '.join(CHARGERS)}")
    phases = 3 if charge_point.phases == "auto" else int(charge_point.phases)
    share = meter == charger == "alphaess"  # one emulator, one account
    async with contextlib.AsyncExitStack() as stack:
        if not share:
            meter_section = await stack.enter_async_context(meter_emulator(meter, site, clock))
        if charger == "warp":
            warp = await stack.enter_async_context(WarpEmulator(site, phases_connected=phases))
            yield _Emulated(meter_section, warp_charger(warp.url), f"charger warp {warp.url}", None)
        elif charger == "easee":
            # the cloud's rate limits and token lifetime in simulated seconds, as the driver's budgets are
            easee = await stack.enter_async_context(
                DemoEasee(
                    site,
                    phases=phases,
                    username=EASEE_USERNAME,
                    password=DEMO_EASEE_PASSWORD,
                    clock=clock.now,
                )
            )
            keys = f"type: easee, {easee_account(easee, password=DEMO_EASEE_PASSWORD)}, timeout_s: 2"
            if charge_point.phases == "auto":  # 1p/3p through the circuit's phase limits
                keys += (
                    f", control: circuit_current, site_id: {easee.site_id}, circuit_id: {easee.circuit_id},"
                    " phase_switching: true"
                )
            yield _Emulated(meter_section, keys, f"charger easee {easee.url}", easee.traffic)
        elif charger == "ocpp":
            # the charge point connects to pvcharge: a port that was free a moment ago, which the driver
            # listens on from the daemon's first cycle; the emulator tries again every 5 simulated s
            port = free_port()
            auto = charge_point.phases == "auto"
            ocpp = await stack.enter_async_context(
                OcppChargePointEmulator(
                    site,
                    f"ws://127.0.0.1:{port}/{DEMO_OCPP_ID}",
                    phases_connected=phases,
                    phase_switch=auto,
                    sleep=clock.sleep,
                )
            )
            keys = f"type: ocpp, charge_point_id: {DEMO_OCPP_ID}, port: {port}, meter_interval_s: 5"
            if auto:
                keys += ", phase_switching: true"
            yield _Emulated(meter_section, keys, f"charger ocpp ws://127.0.0.1:{port}", ocpp.traffic)
        else:
            # the wallbox charges at the current and on the phases set in the AlphaESS app: the charge
            # point's maximum.  Its polls ask two endpoints (three on the first), one more on an account
            # shared with the meter; the account allows 5 requests in any 10 s, as for the meter
            alpha = await stack.enter_async_context(
                DemoAlphaEss(
                    site,
                    app_secret=DEMO_ALPHAESS_SECRET,
                    clock=clock.now,
                    window_s=10.0,
                    requests_per_window=5,
                    min_write_interval_s=5.0,
                    wallbox_current_a=charge_point.max_current_a,
                    wallbox_phases=phases,
                )
            )
            if share:
                meter_section = alphaess_meter(alpha)
            keys = f"type: alphaess, {alphaess_account(alpha, app_secret=DEMO_ALPHAESS_SECRET)}, timeout_s: 2"
            yield _Emulated(meter_section, keys, f"charger alphaess {alpha.url}", alpha.traffic)


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
    async with _emulators(meter, charger, site, clock, charge_point) as emulated:
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
            server = await start_api(daemon, api, recorder, plans)
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
