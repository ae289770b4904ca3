"""The daemon: an asyncio loop that reads the meter and the chargers, runs the controller and writes
each charger only when its command changes.

It drives every loadpoint of the config (:meth:`Config.all_loadpoints`: the ``loadpoints:`` section, or
the ``charger:`` section as one loadpoint named ``main``) through one
:class:`~pvcharge.control.site.SiteController`; each has a :class:`Loadpoint` (its driver, its last
decision, its write state, its :class:`~pvcharge.resume.CarWaker`; in :mod:`pvcharge.loadpoint`).
With one loadpoint the site controller decides exactly as the bare controller, so a ``charger:`` config
runs as before.  The reads that roll over, the frozen-value check and the outage log are in
:mod:`pvcharge.reads`.

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
   gets the charger's wake-up, if it has one (``charger.wake_up_attempts``), as a background task the
   cycle never waits for; until it ends nothing is written to that charger (a decrease for it counts
   as not delivered, so the others' increases wait), then its command is sent again;
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
from pvcharge.control.site import SiteController
from pvcharge.devices import check_chargers
from pvcharge.errors import ConfigError
from pvcharge.loadpoint import Loadpoint, LoadpointCycle, Stats
from pvcharge.meters import Meter
from pvcharge.readings import ChargerCommand, ChargerReading, SiteReading, as_dict
from pvcharge.reads import FrozenValues, Health, Reads
from pvcharge.state import load_modes, save_mode

log = structlog.get_logger("pvcharge.daemon")


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
            self._restore_modes(state_file)
        self._last_site: SiteReading | None = None
        self._meter_health = Health(meter.name)
        self._reads = Reads(clock)
        self._frozen = FrozenValues(meter.name)
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
        if persist:
            self._save_mode(lp)
        named = {"loadpoint": lp.name} if len(self.loadpoints) > 1 else {}
        log.info("mode_changed", mode=mode, previous_mode=previous, source=source, **named)

    def _restore_modes(self, state_file: Path) -> None:
        """Each loadpoint's mode saved in ``state_file`` (set over the API or MQTT before a restart)
        wins over its configured one."""
        saved_modes = load_modes(state_file, [lp.name for lp in self.loadpoints])
        for lp in self.loadpoints:
            saved = saved_modes.get(lp.name)
            if saved is not None and saved != lp.controller.mode:
                named = {} if len(self.loadpoints) == 1 else {"loadpoint": lp.name}
                log.info(
                    "mode_restored", mode=saved, config_mode=lp.controller.mode, path=str(state_file), **named
                )
                self.site_controller.set_mode(lp.name, saved)

    def _save_mode(self, lp: Loadpoint) -> None:
        """Keep ``lp``'s mode in the state file (if there is one) for the next start."""
        if self.state_file is not None:
            first = lp is self.loadpoints[0]
            save_mode(self.state_file, lp.controller.mode, self.clock(), lp.name, first=first)

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
                self._save_mode(lp)
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
        health: Health,
        loadpoint: Loadpoint | None = None,
    ) -> Any:
        """One device's reading for this cycle, or ``None`` (``loadpoint``: the charger's); see
        :meth:`Reads.read`."""
        result, outcome = await self._reads.read(what, read, health, self.config.control)
        if outcome == "late":
            self.stats.late_reads += 1
        elif outcome == "recovered" and loadpoint is not None:
            # a charger that was unreachable may have rebooted and lost its command: send it again
            loadpoint.reassert("charger back after an outage")
        return result

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
            self._last_site = self._frozen.check(site, self.config.control.frozen_s)
        for lp, reading in zip(self.loadpoints, readings, strict=True):
            lp.saw(reading)
        if self._pending_config is not None:
            self._apply_config(self._pending_config)
            self._pending_config = None
        now = self.clock()
        chargers = {lp.name: reading for lp, reading in zip(self.loadpoints, readings, strict=True)}
        decisions = self.site_controller.step(now, self._last_site, chargers)
        written = await self._write({lp.name: decisions[lp.name].command for lp in self.loadpoints})
        started = False
        for lp, reading in zip(self.loadpoints, readings, strict=True):
            held = None if lp.writes_blocked else lp.applied
            started |= lp.waker.cycle(now, held, reading, timeout_s=self.config.control.max_age_s)
        if started:  # one step for a wake-up just started: its first request goes out in this cycle
            await asyncio.sleep(0)
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

        On the way out a wake-up in flight is cancelled and awaited, then every charger is paused (the
        loop is no longer watching the surplus) and every driver is closed.
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

        A wake-up in flight is cancelled and awaited first (:meth:`Loadpoint.stop`).  ``pause``: one
        pause command per charger (all at once), unless it already holds one (or refuses all writes),
        awaited to the end (at most :data:`~pvcharge.loadpoint.SHUTDOWN_WRITE_S`, the wake-up's end
        included) so nothing is left half-written; ``leave``: nothing is sent, each charger keeps its
        last command.  A pause the driver defers for its rate limit (``WriteDeferred``, e.g. a cloud's
        backoff) is sent again when the driver says, if that is within ``SHUTDOWN_WRITE_S``; a pause
        that cannot be delivered is an error naming the charger.
        """
        exit_state = self.config.control.exit_state
        await asyncio.gather(*(lp.stop(exit_state, self.sleep) for lp in self.loadpoints))
        self._reads.cancel()
        devices: list[Meter | Charger] = [self.meter, *(lp.charger for lp in self.loadpoints)]
        for device in devices:
            try:
                await device.close()
            except Exception as exc:
                log.debug("close_failed", device=device.name, error=repr(exc))
