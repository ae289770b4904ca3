"""The daemon: an asyncio loop that reads the meter and the chargers, runs the controller and writes
each charger only when its command changes.

It drives every loadpoint of the config (:meth:`Config.all_loadpoints`: the ``loadpoints:`` section, or
the ``charger:`` section as one loadpoint named ``main``) through one
:class:`~pvcharge.control.site.SiteController`; each has a :class:`Loadpoint` (its driver, its last
decision, its write state, its :class:`~pvcharge.resume.CarWaker`).  With one loadpoint the site
controller decides exactly as the bare controller, so a ``charger:`` config runs as before.

One cycle (every ``control.interval_s``):

1. read the meter and every charger concurrently; a read still running after ``interval_s`` is left
   running and picked up next cycle (one slow device never holds up the other's cycle), and is
   cancelled after ``max_age_s``; a failed read is logged (once per outage, with the cause) and leaves
   that reading missing; it never ends the loop;
2. ``site.step(now, last good site reading, {loadpoint: charger reading})``: the controllers see the
   last good meter reading with its own timestamp, so a dead meter turns into "stale" and every car
   is paused after ``max_age_s``;
3. ``charger.apply(command)`` per loadpoint, decreases first (a pause, or less current on every
   phase than the charger holds), then increases; if a decrease is not delivered (failed, deferred,
   or writes blocked) the increases wait for the next cycle, so the sum of what the chargers hold
   never exceeds the fuse or a circuit because a write failed; a charger is written only when its
   command differs from the last one it acknowledged, and once more when it comes back from an
   outage (it may have rebooted and lost it); a failed write is retried next cycle (logged once per
   outage and on recovery), a write the driver defers for its rate limit is offered again next
   cycle, and after ``WritesBlocked`` nothing more is sent to that charger;
4. resume recovery (:class:`~pvcharge.resume.CarWaker`): a car offered current that does not start
   gets the charger's wake-up, if it has one (``charger.wake_up_attempts``);
5. one structured log event ``decision`` with the numbers behind it: at info level when the command
   changes, at debug level otherwise.

Clock and sleep are injected (``time.time``/``asyncio.sleep`` by default) so the demo can run the
real daemon on a compressed simulated clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from pvcharge import __version__
from pvcharge.chargers import Charger
from pvcharge.config import Config
from pvcharge.control import Controller, Decision
from pvcharge.control.config import MODES, Mode
from pvcharge.control.explain import in_words, kind_of
from pvcharge.control.site import SiteController
from pvcharge.devices import check_chargers
from pvcharge.errors import ConfigError, DeviceError, WriteDeferred, WritesBlocked
from pvcharge.loadpoints_config import LoadpointConfig
from pvcharge.meters import Meter
from pvcharge.readings import ChargerCommand, ChargerReading, SiteReading, as_dict
from pvcharge.resume import CarWaker
from pvcharge.retry import AttemptNote, attempt_note
from pvcharge.state import load_mode, save_mode

log = structlog.get_logger("pvcharge.daemon")

#: the longest the pause on the way out may take, in s, a driver's rate-limit wait included: what is
#: left of the stop timeout (``TimeoutStopSec=90s`` in deploy/pvcharge.service, systemd's default, and
#: ``stop_grace_period: 90s`` in deploy/docker-compose.yml) after the last cycle and closing
SHUTDOWN_WRITE_S = 60.0
PAUSE_RETRY_S = 1.0  #: the least wait before offering a deferred pause on the way out again, in s


def _describe(command: ChargerCommand | None) -> str:
    if command is None:
        return "none sent"
    return "paused" if command.paused else f"{command.current_a:g} A on {command.phases}p"


@dataclass
class Stats:
    """Counters since start."""

    cycles: int = 0
    charger_writes: int = 0
    starts: int = 0  #: commands going from pause to a current > 0
    meter_failures: int = 0
    charger_failures: int = 0
    write_failures: int = 0
    deferred_writes: int = 0  #: writes a driver held back for its rate limit (sent in a later cycle)
    held_increases: int = 0  #: increases not sent because a decrease of another charger was not delivered
    late_reads: int = 0  #: reads still running at the end of a cycle (their result is used next cycle)
    last_cycle_s: float = 0.0  #: wall time the last cycle took (reads, decision, write), s
    max_cycle_s: float = 0.0  #: the longest cycle so far, s


@dataclass(frozen=True)
class Cycle:
    """What one cycle saw and did (passed to the ``on_cycle`` hook, e.g. the demo's live line)."""

    now: float
    site: SiteReading | None
    charger: ChargerReading | None
    decision: Decision
    written: bool
    #: every loadpoint's part (the first one's is also ``charger``, ``decision``, ``written``)
    loadpoints: tuple[LoadpointCycle, ...] = ()


@dataclass(frozen=True)
class LoadpointCycle:
    """What one cycle saw and did at one loadpoint."""

    name: str
    charger: ChargerReading | None
    decision: Decision
    written: bool


@dataclass
class _Read:
    """A device read still running: its task, when it started (clock s), and its failed attempts."""

    task: asyncio.Future[Any]
    started_s: float
    note: AttemptNote


@dataclass(frozen=True)
class _OutageEvents:
    """The log events of one kind of outage: its start (warning), each further failure (debug), its end
    (info)."""

    failed: str
    still_failing: str
    recovered: str


_READ_EVENTS = _OutageEvents("device_unavailable", "device_still_unavailable", "device_recovered")
_WRITE_EVENTS = _OutageEvents(
    "charger_write_failed", "charger_write_still_failing", "charger_write_recovered"
)


class _Health:
    """Tracks one device's outages (its reads, or the charger's writes with ``events=_WRITE_EVENTS``) so
    each is logged once when it starts and once when it ends, with the failures it took."""

    def __init__(self, device: str, events: _OutageEvents = _READ_EVENTS) -> None:
        self.device = device
        self.events = events
        self.failing_since: float | None = None
        self.failures = 0
        self.consecutive_failures = 0
        self.last_success_s: float | None = None
        self.last_error: str | None = None
        self.last_error_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Health for the status API: name, last success/error (clock s), consecutive failures."""
        return {
            "name": self.device,
            "ok": self.failing_since is None and self.last_success_s is not None,
            "last_success_s": self.last_success_s,
            "last_error": self.last_error,
            "last_error_s": self.last_error_s,
            "consecutive_failures": self.consecutive_failures,
            "failures": self.failures,
        }

    def failed(self, now: float, error: str, **context: Any) -> None:
        """Record a failure; ``context`` (e.g. ``current_a``) goes into its log line."""
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error, self.last_error_s = error, now
        if self.failing_since is None:
            self.failing_since = now
            log.warning(self.events.failed, device=self.device, error=error, **context)
        else:
            log.debug(
                self.events.still_failing, device=self.device, error=error, failures=self.failures, **context
            )

    def ok(self, now: float) -> bool:
        """Record a success; True if it ends an outage."""
        recovered = self.failing_since is not None
        if self.failing_since is not None:
            log.info(
                self.events.recovered,
                device=self.device,
                outage_s=round(now - self.failing_since, 1),
                failures=self.consecutive_failures,
            )
        self.consecutive_failures = 0
        self.last_success_s = now
        self.failing_since = None
        return recovered


def _phase_currents_a(command: ChargerCommand) -> tuple[float, float, float]:
    """What a command offers per grid phase, A: all three on 3 phases, L1 on 1 phase (as
    :mod:`pvcharge.control.site` counts it)."""
    a = max(0.0, command.current_a)
    return (a, a, a) if command.phases == 3 else (a, 0.0, 0.0)


class Loadpoint:
    """One charger the daemon drives: its driver, its controller (held by the daemon's
    :class:`~pvcharge.control.site.SiteController`), what it last decided and wrote, its health and its
    resume recovery.

    Args:
        config: the loadpoint's part of the config (name, charge point, mode, priority, vehicle).
        charger: its driver.
        site: the daemon's site controller (which holds this loadpoint's controller by name).
        stats: the daemon's counters; writes, starts and failures of every loadpoint add up there.
        clock: now in s.
    """

    def __init__(
        self,
        config: LoadpointConfig,
        charger: Charger,
        site: SiteController,
        stats: Stats,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.name = config.name
        self.charger = charger
        self.site = site
        self.stats = stats
        self.clock = clock
        self.applied: ChargerCommand | None = None  # last command applied; None after a failed write
        self.acknowledged: ChargerCommand | None = None  # last command the charger took, ever
        self.writes_blocked = False  # the charger refuses all writes (WritesBlocked)
        self.health = _Health(charger.name)
        self.write_health = _Health(charger.name, _WRITE_EVENTS)
        self.car_connected: bool | None = None  # from the last charger reading
        self.waker = CarWaker(charger, config.charge_point, config.vehicle)
        self.last: LoadpointCycle | None = None
        self.last_reason_kind = ""
        self.writes = 0  #: commands this charger took
        self.starts = 0  #: commands going from pause to a current > 0 at this charger

    @property
    def controller(self) -> Controller:
        """This loadpoint's controller (mode, session, filters)."""
        return self.site.controllers[self.name]

    def lowers(self, command: ChargerCommand) -> bool:
        """``command`` offers no phase more than the charger last took: a pause, or less or equal current
        on phases it already had.  Unknown (nothing taken yet): only a pause lowers."""
        if command.current_a <= 0:
            return True
        held = self.acknowledged
        if held is None:
            return False
        return all(
            new <= old for new, old in zip(_phase_currents_a(command), _phase_currents_a(held), strict=True)
        )

    def may_exceed(self, command: ChargerCommand) -> bool:
        """The charger may hold more than ``command`` on some phase: it did not take it (a failed or
        deferred write: what it holds is not known to be lower), or it refuses all writes and the last
        command it took (if any) is above ``command``."""
        if not self.writes_blocked:
            return command != self.applied
        held = self.acknowledged
        return held is None or any(
            old > new for old, new in zip(_phase_currents_a(held), _phase_currents_a(command), strict=True)
        )

    def reassert(self, why: str) -> None:
        """Send the current command again next cycle, whatever the driver believes the charger holds."""
        self.applied = None
        try:
            self.charger.forget()
        except Exception as exc:  # a driver bug must not end the loop
            log.error("driver_error", device=self.charger.name, what="forget", error=repr(exc))
        log.info("command_reasserted", device=self.charger.name, why=why)

    def saw(self, charger: ChargerReading | None) -> None:
        """Take this cycle's charger reading (``None``: no answer)."""
        if charger is None:
            self.stats.charger_failures += 1
            return
        if charger.connected and self.car_connected is False:
            # Easee, for one, clears its pause and dynamic current when a car is plugged in
            self.reassert("vehicle connected")
        self.car_connected = charger.connected

    async def apply(self, command: ChargerCommand, timeout_s: float) -> bool:
        """Write ``command`` unless the charger holds it already; True if it was written."""
        if command == self.applied or self.writes_blocked:
            return False
        try:
            await asyncio.wait_for(self.charger.apply(command), timeout=timeout_s)
        except WriteDeferred as exc:  # rate limit: offered again next cycle, not a failure
            self.stats.deferred_writes += 1
            log.debug(
                "charger_write_deferred",
                device=self.charger.name,
                current_a=command.current_a,
                reason=exc.message,
                retry_after_s=exc.retry_after_s,
            )
            return False
        except WritesBlocked as exc:
            self.writes_blocked = True
            log.error(
                "charger_writes_blocked",
                device=self.charger.name,
                error=exc.message,
                action="pvcharge sends this charger nothing more until it is restarted",
            )
            return False
        except (DeviceError, TimeoutError) as exc:
            self.stats.write_failures += 1
            self.applied = None
            error = getattr(exc, "message", None) or "timeout"
            self.write_health.failed(self.clock(), error, current_a=command.current_a)
            return False
        except Exception as exc:
            self.stats.write_failures += 1
            self.applied = None
            log.error("driver_error", device=self.charger.name, what="apply", error=repr(exc), exc_info=True)
            return False
        self.write_health.ok(self.clock())
        if command.current_a > 0 and (self.acknowledged is None or self.acknowledged.current_a == 0):
            self.stats.starts += 1
            self.starts += 1
        self.applied = self.acknowledged = command
        self.stats.charger_writes += 1
        self.writes += 1
        return True

    def status(self) -> dict[str, Any]:
        """This loadpoint for the status API: ``name``, ``priority``, ``mode``, ``command``
        (``current_a``, ``phases``; or ``None`` before the first cycle), ``reason``, ``summary``,
        ``available_w`` (W or ``None``), ``charger`` (:func:`pvcharge.readings.as_dict` of its last
        reading, or ``None``), ``device`` (its health, as ``devices.charger``), ``writes_blocked``,
        ``wake_up`` (:meth:`pvcharge.resume.CarWaker.as_dict`), ``writes``, ``starts``."""
        c = self.last
        return {
            "name": self.name,
            "priority": self.config.priority,
            "mode": self.controller.mode,
            "command": (
                {"current_a": c.decision.command.current_a, "phases": c.decision.command.phases}
                if c is not None
                else None
            ),
            "reason": c.decision.reason if c is not None else "starting",
            "summary": in_words(c.decision) if c is not None else "Starting.",
            "available_w": c.decision.available_w if c is not None else None,
            "charger": as_dict(c.charger) if c is not None and c.charger is not None else None,
            "device": self.health.as_dict(),
            "writes_blocked": self.writes_blocked,
            "wake_up": self.waker.as_dict(),
            "writes": self.writes,
            "starts": self.starts,
        }

    def log_decision(
        self,
        now: float,
        site: SiteReading | None,
        charger: ChargerReading | None,
        decision: Decision,
        written: bool,
        *,
        named: bool,
    ) -> None:
        """The ``decision`` event (info when written or the reason's kind changes); ``named`` adds
        ``loadpoint``."""
        fields: dict[str, Any] = {"loadpoint": self.name} if named else {}
        fields.update(
            mode=decision.mode,
            current_a=decision.command.current_a,
            phases=decision.command.phases,
            reason=decision.reason,
            written=written,
        )
        if decision.available_w is not None:
            fields["available_w"] = round(decision.available_w)
        if site is not None:
            fields.update(
                grid_power_w=round(site.grid_power_w),
                pv_power_w=round(site.pv_power_w),
                battery_power_w=round(site.battery_power_w),
                battery_soc_pct=site.battery_soc_pct,
                meter_age_s=round(now - site.timestamp_s, 1),
            )
        if charger is not None:
            fields.update(car_connected=charger.connected, car_power_w=round(charger.power_w))
        if self.writes_blocked:
            fields["writes_blocked"] = True
        kind = kind_of(decision.reason)
        if written or kind != self.last_reason_kind:
            log.info("decision", **fields)
        else:
            log.debug("decision", **fields)
        self.last_reason_kind = kind

    async def pause_on_exit(self, sleep: Callable[[float], Awaitable[Any]]) -> None:
        """Send a pause, waiting out the driver's deferrals within ``SHUTDOWN_WRITE_S``; say how it went."""
        pause = ChargerCommand(0.0, self.controller.phases)
        deadline_s = self.clock() + SHUTDOWN_WRITE_S
        while True:
            try:
                left_s = max(0.0, deadline_s - self.clock())
                await asyncio.wait_for(self.charger.apply(pause), timeout=left_s)
            except WriteDeferred as exc:
                wait_s = max(PAUSE_RETRY_S, exc.retry_after_s)  # (0: the driver does not know when)
                if self.clock() + wait_s < deadline_s:
                    log.info(
                        "pause_waiting", device=self.charger.name, wait_s=round(wait_s, 1), why=exc.message
                    )
                    await sleep(wait_s)
                    continue
                error = f"{exc.message} (no sooner than in {wait_s:.0f} s)"
            except TimeoutError:
                error = f"no answer within the {SHUTDOWN_WRITE_S:g} s the pause may take"
            except Exception as exc:
                error = getattr(exc, "message", None) or repr(exc)
            else:
                log.info("stopped", charger_left="paused")
                return
            log.error(
                "stopped",
                charger_left="unknown: pause failed",
                device=self.charger.name,
                error=error,
                action=f"{self.charger.name} may still be charging: pause it in its app or at the wallbox",
            )
            return

    async def stop(self, exit_state: str, sleep: Callable[[float], Awaitable[Any]]) -> None:
        """Leave the charger in ``exit_state`` (see :meth:`Daemon._shutdown`)."""
        if exit_state == "leave":
            log.info("stopped", charger_left="as it was", command=_describe(self.acknowledged))
        elif self.writes_blocked:
            log.info("stopped", charger_left="as it was: writes blocked")
        elif self.applied is not None and self.applied.current_a == 0:
            log.info("stopped", charger_left="paused")
        else:
            await self.pause_on_exit(sleep)


class Daemon:
    """Runs the control loop for one meter and every loadpoint's charger.

    Args:
        config: the validated config.
        meter: the meter driver.
        charger: the charger driver, or one driver per loadpoint in the order of
            :meth:`Config.all_loadpoints` (the daemon closes them all when :meth:`run` ends).
        clock: returns now in s (default ``time.time``); also the drivers' clock.
        sleep: sleeps a number of clock seconds (default ``asyncio.sleep``).
        on_cycle: called after every cycle with a :class:`Cycle`.
        state_file: where the mode is kept across restarts (the first loadpoint's).

    Raises:
        ConfigError: ``phases: auto`` with a charger that cannot switch phases.
        ValueError: not one charger driver per loadpoint.
    """

    def __init__(
        self,
        config: Config,
        meter: Meter,
        charger: Charger | Sequence[Charger],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        on_cycle: Callable[[Cycle], None] | None = None,
        state_file: Path | None = None,
    ) -> None:
        self.config = config
        self.meter = meter
        self.clock = clock
        self.sleep = sleep
        self.on_cycle = on_cycle
        chargers = list(charger) if isinstance(charger, Sequence) else [charger]
        configs = config.all_loadpoints()
        if len(chargers) != len(configs):
            raise ValueError(f"{len(configs)} loadpoints but {len(chargers)} charger drivers")
        check_chargers(config, chargers)
        self.site_controller = SiteController(
            config.control,
            config.site,
            [lp.loadpoint() for lp in configs],
            {lp.name: driver.capabilities for lp, driver in zip(configs, chargers, strict=True)},
        )
        self.stats = Stats()
        #: every loadpoint, in config order; the first one's is the top-level status and the mode
        self.loadpoints = [
            Loadpoint(lp, driver, self.site_controller, self.stats, clock)
            for lp, driver in zip(configs, chargers, strict=True)
        ]
        self.started_s = clock()
        self.last_cycle: Cycle | None = None
        #: called with each :class:`Cycle` after ``on_cycle`` (the API, MQTT); exceptions are logged
        self.listeners: list[Callable[[Cycle], None]] = []
        self.state_file = state_file
        if state_file is not None:
            saved = load_mode(state_file)
            if saved is not None and saved != self.controller.mode:
                log.info("mode_restored", mode=saved, config_mode=self.controller.mode, path=str(state_file))
                self.controller.set_mode(saved)
        self._last_site: SiteReading | None = None
        self._meter_health = _Health(meter.name)
        self._inflight: dict[str, _Read] = {}  # reads still running from an earlier cycle
        self._values: tuple[float | None, ...] = ()  # the meter's last values and since when
        self._values_since: float | None = None
        self._frozen = False
        self._pending_config: Config | None = None  # a reloaded config, applied at the next cycle
        self._holding = False  # increases held back last cycle (logged once per episode)

    @property
    def charger(self) -> Charger:
        """The first loadpoint's charger driver (the only one of a ``charger:`` config)."""
        return self.loadpoints[0].charger

    @property
    def controller(self) -> Controller:
        """The first loadpoint's controller (the only one of a ``charger:`` config)."""
        return self.loadpoints[0].controller

    def loadpoint(self, name: str | None = None) -> Loadpoint:
        """The loadpoint called ``name`` (``None``: the first). Raises KeyError: no such loadpoint."""
        if name is None:
            return self.loadpoints[0]
        for lp in self.loadpoints:
            if lp.name == name:
                return lp
        raise KeyError(name)

    def reload(self, config: Config) -> None:
        """Take a new, already validated config from the next cycle on (SIGHUP).

        The control settings, the charge points' limits, the loadpoints' modes, priorities and vehicles
        and the site may change; each loadpoint's mode becomes its new configured one.  The controllers
        keep their sessions and filters (:meth:`SiteController.reconfigure`), so a reload alone never
        stops or starts a car.

        Raises:
            ConfigError: the new config changes the meter or a charger (type, address, credentials:
                new connections), the loadpoints' names, or the state file: that needs a restart; the
                old config stays in force.
        """
        for section in ("meter", "charger", "state", "sessions"):
            if getattr(config, section) != getattr(self.config, section):
                raise ConfigError(
                    config.path,
                    section,
                    f"changed; a new {section} section needs a restart (systemctl restart pvcharge); "
                    "the old config stays in force",
                )
        chargers = [(lp.name, lp.charger) for lp in config.all_loadpoints()]
        if chargers != [(lp.name, lp.charger) for lp in self.config.all_loadpoints()]:
            raise ConfigError(
                config.path,
                "loadpoints",
                "changed names or chargers; that needs a restart (systemctl restart pvcharge); the old "
                "config stays in force",
            )
        check_chargers(config, [lp.charger for lp in self.loadpoints])
        self._pending_config = config

    def set_mode(
        self, mode: Mode, *, source: str, persist: bool = True, loadpoint: str | None = None
    ) -> None:
        """Switch a loadpoint's mode from the next cycle on; the first loadpoint's is kept across
        restarts (the state file).

        Args:
            mode: off, pv, minpv or fast.
            source: who asked ("api", "mqtt", "plan"), for the log.
            persist: write it to the state file; False for a passing switch (a plan's grid slot), so a
                restart comes back in the user's mode.
            loadpoint: its name; ``None``: the first (the only one of a ``charger:`` config).

        Raises:
            ValueError: an unknown mode.
            KeyError: no such loadpoint.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of: {', '.join(MODES)}")
        lp = self.loadpoint(loadpoint)
        previous = lp.controller.mode
        self.site_controller.set_mode(lp.name, mode)
        if self.state_file is not None and persist and lp is self.loadpoints[0]:
            save_mode(self.state_file, mode, self.clock())
        named = {"loadpoint": lp.name} if len(self.loadpoints) > 1 else {}
        log.info("mode_changed", mode=mode, previous_mode=previous, source=source, **named)

    @property
    def mode(self) -> Mode:
        """The mode in force (the first loadpoint's)."""
        return self.controller.mode

    def status(self) -> dict[str, Any]:
        """What the daemon sees and does now, for the status API and MQTT (canonical units and signs).

        Keys: ``version``, ``uptime_s``, ``now_s``, ``mode``, ``command`` (``current_a``, ``phases``),
        ``reason``, ``available_w`` (W or ``None``), ``site`` (the last meter reading: ``grid_power_w``,
        ``pv_power_w``, ``battery_power_w``, ``battery_soc_pct``, ``house_power_w``, ``timestamp_s``,
        ``grid_currents_a``, ``age_s``; or ``None``), ``charger`` (``connected``, ``charging``,
        ``power_w``, ``current_a``, ``phases``, ``iec_state``, ``phase_currents_a``, ``timestamp_s``; or
        ``None``) — both :func:`pvcharge.readings.as_dict`, ``devices`` (``meter``/``charger``:
        ``name``, ``ok``, ``last_success_s``, ``last_error``, ``last_error_s``, ``consecutive_failures``,
        ``failures``), ``writes_blocked``, ``wake_up`` (resume recovery: ``attempts`` this plug-in,
        ``max_attempts``, ``last_at_s``, ``available``, ``failures``, ``last_error``; see
        :meth:`pvcharge.resume.CarWaker.as_dict`), ``stats`` (the counters of :class:`Stats`),
        ``loadpoints`` (every loadpoint: :meth:`Loadpoint.status`).  The top-level ``mode``,
        ``command``, ``reason``, ``summary``, ``available_w``, ``charger``, ``devices.charger``,
        ``writes_blocked`` and ``wake_up`` are the first loadpoint's.
        """
        now = self.clock()
        c = self.last_cycle
        site = None
        if c is not None and c.site is not None:
            site = as_dict(c.site) | {"age_s": round(now - c.site.timestamp_s, 3)}
        loadpoints = [lp.status() for lp in self.loadpoints]
        first = loadpoints[0]
        return {
            "version": __version__,
            "uptime_s": round(now - self.started_s, 3),
            "now_s": now,
            "mode": first["mode"],
            "command": first["command"],
            "reason": first["reason"],
            "summary": first["summary"],
            "available_w": first["available_w"],
            "site": site,
            "charger": first["charger"],
            "devices": {"meter": self._meter_health.as_dict(), "charger": first["device"]},
            "writes_blocked": first["writes_blocked"],
            "wake_up": first["wake_up"],
            "stats": dataclasses.asdict(self.stats),
            "loadpoints": loadpoints,
        }

    def _apply_config(self, config: Config) -> None:
        previous = {lp.name: lp.controller.mode for lp in self.loadpoints}
        configured = {lp.name: lp.mode or self.config.control.mode for lp in self.config.all_loadpoints()}
        self.config = config
        configs = config.all_loadpoints()
        self.site_controller.reconfigure(
            config.control,
            config.site,
            [lp.loadpoint() for lp in configs],
            {lp.name: lp.charger.capabilities for lp in self.loadpoints},
        )
        for lp, lp_config in zip(self.loadpoints, configs, strict=True):
            lp.config = lp_config
            lp.waker.reconfigure(lp_config.charge_point, lp_config.vehicle)
            if (lp_config.mode or config.control.mode) != configured[lp.name]:
                # the user edited the configured mode: it wins over a mode set over the API
                if self.state_file is not None and lp is self.loadpoints[0]:
                    save_mode(self.state_file, lp.controller.mode, self.clock())
            else:
                self.site_controller.set_mode(lp.name, previous[lp.name])
        log.info(
            "config_reloaded",
            path=config.path,
            mode=self.controller.mode,
            previous_mode=previous[self.loadpoints[0].name],
            interval_s=config.control.interval_s,
        )

    async def _read(
        self,
        what: str,
        read: Callable[[], Awaitable[Any]],
        health: _Health,
        loadpoint: Loadpoint | None = None,
    ) -> Any:
        """One device's reading for this cycle, or ``None`` (``loadpoint``: the charger's).

        The read runs as a task of its own: if it has not finished within ``interval_s`` the cycle goes
        on without it (so a slow meter never delays the charger's command, nor the other way round) and
        the task is awaited again next cycle; after ``max_age_s`` it is cancelled and counts as failed.
        """
        c = self.config.control
        running = self._inflight.get(what)
        if running is None:
            note = AttemptNote()

            async def noted() -> Any:
                attempt_note.set(note)  # this task's own context: the driver's retries report here
                return await read()

            running = _Read(asyncio.ensure_future(noted()), self.clock(), note)
            self._inflight[what] = running
        task = running.task
        done, _ = await asyncio.wait({task}, timeout=min(c.interval_s, c.max_age_s))
        if not done:
            waited_s = self.clock() - running.started_s
            if waited_s < c.max_age_s:
                self.stats.late_reads += 1
                log.debug("device_late", device=health.device, waited_s=round(waited_s, 1))
                return None
            task.cancel()
            del self._inflight[what]
            note = running.note
            why = f" (attempt {note.attempts} failed: {note.text})" if note.text else ""
            health.failed(self.clock(), f"no answer within {c.max_age_s:g} s{why}")
            return None
        del self._inflight[what]
        try:
            result = task.result()
        except asyncio.CancelledError:  # cancelled from elsewhere: no reading, not the loop's end
            health.failed(self.clock(), "read cancelled")
            return None
        except DeviceError as exc:
            health.failed(self.clock(), exc.message)
            return None
        except Exception as exc:  # a driver bug must not end the loop
            log.error("driver_error", device=health.device, what=what, error=repr(exc), exc_info=exc)
            health.failed(self.clock(), repr(exc))
            return None
        if health.ok(self.clock()) and loadpoint is not None:
            # a charger that was unreachable may have rebooted and lost its command: send it again
            loadpoint.reassert("charger back after an outage")
        return result

    def _unfreeze(self, site: SiteReading) -> SiteReading:
        """A reading whose values have not changed for ``control.frozen_s`` keeps the timestamp of when
        they first appeared, so the controller sees it stale: a meter answering with frozen values is
        as dead as a silent one (real meters never repeat grid power to the watt for minutes)."""
        values = (site.grid_power_w, site.pv_power_w, site.battery_power_w, site.battery_soc_pct)
        frozen_s = self.config.control.frozen_s
        if values != self._values or self._values_since is None:
            self._values, self._values_since = values, site.timestamp_s
            if self._frozen:
                log.info("meter_values_moving_again", device=self.meter.name)
                self._frozen = False
            return site
        if frozen_s <= 0 or site.timestamp_s - self._values_since <= frozen_s:
            return site
        if not self._frozen:
            log.warning(
                "meter_values_frozen",
                device=self.meter.name,
                unchanged_s=round(site.timestamp_s - self._values_since),
                action="treated as stale until they change",
            )
            self._frozen = True
        return dataclasses.replace(site, timestamp_s=self._values_since)

    def _reassert(self, why: str) -> None:
        """Send every loadpoint's command again next cycle, whatever the drivers believe the chargers
        hold."""
        for lp in self.loadpoints:
            lp.reassert(why)

    async def cycle(self) -> Cycle:
        """Run one control cycle and return what happened."""
        wall0 = time.perf_counter()
        site, *readings = await asyncio.gather(
            self._read("meter", self.meter.read, self._meter_health),
            *(
                self._read("charger" if i == 0 else f"charger {lp.name}", lp.charger.read, lp.health, lp)
                for i, lp in enumerate(self.loadpoints)
            ),
        )
        if site is None:
            self.stats.meter_failures += 1
        else:
            self._last_site = self._unfreeze(site)
        for lp, reading in zip(self.loadpoints, readings, strict=True):
            lp.saw(reading)
        if self._pending_config is not None:
            self._apply_config(self._pending_config)
            self._pending_config = None
        now = self.clock()
        chargers = {lp.name: reading for lp, reading in zip(self.loadpoints, readings, strict=True)}
        decisions = self.site_controller.step(now, self._last_site, chargers)
        written = await self._write({lp.name: decisions[lp.name].command for lp in self.loadpoints})
        for lp, reading in zip(self.loadpoints, readings, strict=True):
            held = None if lp.writes_blocked else lp.applied
            if await lp.waker.cycle(now, held, reading, timeout_s=self.config.control.max_age_s):
                lp.reassert("wake-up failed")
        self.stats.cycles += 1
        parts = []
        for lp, reading in zip(self.loadpoints, readings, strict=True):
            part = LoadpointCycle(lp.name, reading, decisions[lp.name], written[lp.name])
            lp.last = part
            lp.log_decision(
                now, self._last_site, reading, part.decision, part.written, named=len(self.loadpoints) > 1
            )
            parts.append(part)
        first = parts[0]
        result = Cycle(now, self._last_site, first.charger, first.decision, first.written, tuple(parts))
        self.last_cycle = result
        self.stats.last_cycle_s = time.perf_counter() - wall0
        self.stats.max_cycle_s = max(self.stats.max_cycle_s, self.stats.last_cycle_s)
        for listener in ([self.on_cycle] if self.on_cycle is not None else []) + self.listeners:
            try:
                listener(result)
            except Exception as exc:  # a status consumer must not end the loop
                log.error("listener_error", listener=repr(listener), error=repr(exc), exc_info=exc)
        return result

    async def _write(self, commands: dict[str, ChargerCommand]) -> dict[str, bool]:
        """Send every loadpoint's command: the decreases first (concurrently), then, only if every
        decrease was delivered, the increases; returns per loadpoint whether it was written."""
        timeout_s = self.config.control.max_age_s
        down = [lp for lp in self.loadpoints if lp.lowers(commands[lp.name])]
        up = [lp for lp in self.loadpoints if lp not in down]
        done = await asyncio.gather(*(lp.apply(commands[lp.name], timeout_s) for lp in down))
        written = {lp.name: ok for lp, ok in zip(down, done, strict=True)}
        refused = [lp.name for lp in down if lp.may_exceed(commands[lp.name])]
        waiting = [lp for lp in up if commands[lp.name] != lp.applied and not lp.writes_blocked]
        if refused and waiting:
            self.stats.held_increases += len(waiting)
            if not self._holding:
                log.warning(
                    "increases_held",
                    loadpoints=[lp.name for lp in waiting],
                    because=refused,
                    action="sent once every decrease is delivered (the fuse and circuits hold the sum)",
                )
            self._holding = True
            return written | {lp.name: False for lp in up}
        self._holding = False
        done = await asyncio.gather(*(lp.apply(commands[lp.name], timeout_s) for lp in up))
        return written | {lp.name: ok for lp, ok in zip(up, done, strict=True)}

    async def run(self, stop: asyncio.Event | None = None, *, max_cycles: int | None = None) -> Stats:
        """Cycle every ``control.interval_s`` until ``stop`` is set (or ``max_cycles`` ran).

        On the way out every charger is paused (the loop is no longer watching the surplus) and every
        driver is closed.
        """
        stop = stop or asyncio.Event()
        named = {"loadpoints": [lp.name for lp in self.loadpoints]} if len(self.loadpoints) > 1 else {}
        log.info(
            "started",
            meter=self.meter.name,
            charger=self.charger.name,
            mode=self.controller.mode,
            interval_s=self.config.control.interval_s,
            **named,
        )
        next_tick = self.clock()
        try:
            while not stop.is_set() and (max_cycles is None or self.stats.cycles < max_cycles):
                await self.cycle()
                next_tick += self.config.control.interval_s  # a reload may change it
                delay = next_tick - self.clock()
                if delay < 0:  # overran: do not try to catch up with a burst of cycles
                    next_tick = self.clock()
                    delay = 0.0
                sleeper = asyncio.ensure_future(self.sleep(delay))
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for task in (sleeper, stopper):
                    task.cancel()
        finally:
            await self._shutdown()
        return self.stats

    async def _shutdown(self) -> None:
        """Leave every charger in ``control.exit_state`` and close the drivers.

        ``pause``: one pause command per charger (all at once), unless it already holds one (or refuses
        all writes), awaited to the end (at most ``SHUTDOWN_WRITE_S``) so nothing is left half-written;
        ``leave``: nothing is sent, each charger keeps its last command.  A pause the driver defers for
        its rate limit (``WriteDeferred``, e.g. a cloud's backoff) is sent again when the driver says, if
        that is within ``SHUTDOWN_WRITE_S``; a pause that cannot be delivered is an error naming the
        charger.
        """
        exit_state = self.config.control.exit_state
        await asyncio.gather(*(lp.stop(exit_state, self.sleep) for lp in self.loadpoints))
        for running in self._inflight.values():
            running.task.cancel()
        self._inflight.clear()
        devices: list[Meter | Charger] = [self.meter, *(lp.charger for lp in self.loadpoints)]
        for device in devices:
            try:
                await device.close()
            except Exception as exc:
                log.debug("close_failed", device=device.name, error=repr(exc))
