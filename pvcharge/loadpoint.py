"""One loadpoint at run time: a charger the daemon drives (:class:`Loadpoint`): its driver, what it last
decided and wrote, its write state (the command it last took, writes deferred, failed or blocked), its
read and write health, its resume recovery and its pause on the way out; what one cycle saw and did
there (:class:`LoadpointCycle`); and the daemon's counters (:class:`Stats`), which every loadpoint adds
to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from pvcharge.chargers import Charger
from pvcharge.control import Controller, Decision
from pvcharge.control.explain import in_words, kind_of
from pvcharge.control.site import SiteController
from pvcharge.errors import DeviceError, WriteDeferred, WritesBlocked
from pvcharge.loadpoints_config import LoadpointConfig
from pvcharge.readings import ChargerCommand, ChargerReading, SiteReading, as_dict
from pvcharge.reads import WRITE_EVENTS, Health
from pvcharge.resume import CarWaker

log = structlog.get_logger("pvcharge.daemon")  # the daemon's events, under the daemon's logger

#: the longest the pause on the way out may take, in s, a driver's rate-limit wait included: what is
#: left of the stop timeout (``TimeoutStopSec=90s`` in deploy/pvcharge.service, systemd's default, and
#: ``stop_grace_period: 90s`` in deploy/docker-compose.yml) after the last cycle and closing
SHUTDOWN_WRITE_S = 60.0
PAUSE_RETRY_S = 1.0  #: the least wait before offering a deferred pause on the way out again, in s
#: the longest the way out waits for a cancelled wake-up to end before the pause, in s (loop time; part
#: of ``SHUTDOWN_WRITE_S``): a WARP connects the control pilot again then, one request with its
#: client's retries
WAKE_UP_STOP_S = 15.0


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
class LoadpointCycle:
    """What one cycle saw and did at one loadpoint."""

    name: str
    charger: ChargerReading | None
    decision: Decision
    written: bool


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
        self.health = Health(charger.name)
        self.write_health = Health(charger.name, WRITE_EVENTS)
        self.car_connected: bool | None = None  # from the last charger reading
        self.waker = CarWaker(charger, config.charge_point, config.vehicle, clock=clock, on_end=self.reassert)
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
            new <= old for new, old in zip(command.phase_currents_a, held.phase_currents_a, strict=True)
        )

    def may_exceed(self, command: ChargerCommand) -> bool:
        """The charger may hold more than ``command`` on some phase: it did not take it (a failed or
        deferred write: what it holds is not known to be lower), or it refuses all writes and the last
        command it took (if any) is above ``command``."""
        if not self.writes_blocked:
            return command != self.applied
        held = self.acknowledged
        return held is None or any(
            old > new for old, new in zip(held.phase_currents_a, command.phase_currents_a, strict=True)
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
        """Write ``command`` unless the charger holds it already; True if it was written.  Nothing is
        written while the charger's wake-up runs (it must not interleave with a command; the command is
        sent again when the wake-up ends): like a deferred write, :meth:`may_exceed` then holds."""
        if command == self.applied or self.writes_blocked:
            return False
        if self.waker.running:
            log.debug(
                "charger_write_waits", device=self.charger.name, current_a=command.current_a, why="wake-up"
            )
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

    async def pause_on_exit(
        self, sleep: Callable[[float], Awaitable[Any]], deadline_s: float | None = None
    ) -> None:
        """Send a pause, waiting out the driver's deferrals until ``deadline_s`` (clock s; default
        ``SHUTDOWN_WRITE_S`` from now); say how it went."""
        pause = ChargerCommand(0.0, self.controller.phases)
        if deadline_s is None:
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
            except TimeoutError:  # (a wake-up stopped and deferrals waited out took the rest)
                left = f"{left_s:.3g} s left of the {SHUTDOWN_WRITE_S:g} s"
                error = f"no answer within the {left} the pause may take"
            except Exception as exc:
                error = getattr(exc, "message", None) or repr(exc)
            else:
                log.info("stopped", charger_left="paused", device=self.charger.name)
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
        """Leave the charger in ``exit_state`` (see :meth:`Daemon._shutdown`), after cancelling a wake-up
        in flight and waiting for it to end (at most :data:`WAKE_UP_STOP_S`, within the pause's
        ``SHUTDOWN_WRITE_S``)."""
        deadline_s = self.clock() + SHUTDOWN_WRITE_S
        await self.waker.stop(WAKE_UP_STOP_S)
        if exit_state == "leave":
            log.info(
                "stopped",
                charger_left="as it was",
                device=self.charger.name,
                command=_describe(self.acknowledged),
            )
        elif self.writes_blocked:
            log.info("stopped", charger_left="as it was: writes blocked", device=self.charger.name)
        elif self.applied is not None and self.applied.current_a == 0:
            log.info("stopped", charger_left="paused", device=self.charger.name)
        else:
            await self.pause_on_exit(sleep, deadline_s)
