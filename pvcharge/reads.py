"""The daemon's device reads and outages: each read runs as a task of its own that may roll over into
the next cycle (:class:`Reads`), a meter whose values stop moving is treated as stale
(:class:`FrozenValues`), and each device's outages are logged once when they start and once when they
end (:class:`Health`; a loadpoint's writes use it too).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from pvcharge.control.config import ControlConfig
from pvcharge.errors import DeviceError
from pvcharge.readings import SiteReading
from pvcharge.retry import AttemptNote, attempt_note

log = structlog.get_logger("pvcharge.daemon")  # the daemon's events, under the daemon's logger

#: how a read ended this cycle: a reading (``ok``; ``recovered``: the first after an outage), still
#: running (``late``: picked up next cycle) or none (``failed``)
Outcome = Literal["ok", "recovered", "late", "failed"]


@dataclass(frozen=True)
class OutageEvents:
    """The log events of one kind of outage: its start (warning), each further failure (debug), its end
    (info)."""

    failed: str
    still_failing: str
    recovered: str


READ_EVENTS = OutageEvents("device_unavailable", "device_still_unavailable", "device_recovered")
WRITE_EVENTS = OutageEvents("charger_write_failed", "charger_write_still_failing", "charger_write_recovered")


class Health:
    """Tracks one device's outages (its reads, or the charger's writes with ``events=WRITE_EVENTS``) so
    each is logged once when it starts and once when it ends, with the failures it took."""

    def __init__(self, device: str, events: OutageEvents = READ_EVENTS) -> None:
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


@dataclass
class _Read:
    """A device read still running: its task, when it started (clock s), and its failed attempts."""

    task: asyncio.Future[Any]
    started_s: float
    note: AttemptNote


class Reads:
    """The device reads still running, by name (``meter``, ``charger``, ``charger <loadpoint>``).

    Args:
        clock: now in s.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.inflight: dict[str, _Read] = {}  # reads still running from an earlier cycle

    async def read(
        self, what: str, read: Callable[[], Awaitable[Any]], health: Health, control: ControlConfig
    ) -> tuple[Any, Outcome]:
        """One device's reading for this cycle, or ``None``, and how the read ended.

        The read runs as a task of its own: if it has not finished within ``interval_s`` the cycle goes
        on without it (so a slow meter never delays the charger's command, nor the other way round) and
        the task is awaited again next cycle; after ``max_age_s`` it is cancelled and counts as failed.
        """
        c = control
        running = self.inflight.get(what)
        if running is None:
            note = AttemptNote()

            async def noted() -> Any:
                attempt_note.set(note)  # this task's own context: the driver's retries report here
                return await read()

            running = _Read(asyncio.ensure_future(noted()), self.clock(), note)
            self.inflight[what] = running
        task = running.task
        done, _ = await asyncio.wait({task}, timeout=min(c.interval_s, c.max_age_s))
        if not done:
            waited_s = self.clock() - running.started_s
            if waited_s < c.max_age_s:
                log.debug("device_late", device=health.device, waited_s=round(waited_s, 1))
                return None, "late"
            task.cancel()
            del self.inflight[what]
            note = running.note
            why = f" (attempt {note.attempts} failed: {note.text})" if note.text else ""
            health.failed(self.clock(), f"no answer within {c.max_age_s:g} s{why}")
            return None, "failed"
        del self.inflight[what]
        try:
            result = task.result()
        except asyncio.CancelledError:  # cancelled from elsewhere: no reading, not the loop's end
            health.failed(self.clock(), "read cancelled")
            return None, "failed"
        except DeviceError as exc:
            health.failed(self.clock(), exc.message)
            return None, "failed"
        except Exception as exc:  # a driver bug must not end the loop
            log.error("driver_error", device=health.device, what=what, error=repr(exc), exc_info=exc)
            health.failed(self.clock(), repr(exc))
            return None, "failed"
        return result, "recovered" if health.ok(self.clock()) else "ok"

    def cancel(self) -> None:
        """Cancel every read still running (on the way out)."""
        for running in self.inflight.values():
            running.task.cancel()
        self.inflight.clear()


class FrozenValues:
    """The meter's frozen-value check.

    Args:
        device: the meter's name, for the log.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.values: tuple[float | None, ...] = ()  # the meter's last values and since when
        self.since: float | None = None
        self.frozen = False

    def check(self, site: SiteReading, frozen_s: float) -> SiteReading:
        """A reading whose values have not changed for ``frozen_s`` (``control.frozen_s``; 0: never)
        keeps the timestamp of when they first appeared, so the controller sees it stale: a meter
        answering with frozen values is as dead as a silent one (real meters never repeat grid power to
        the watt for minutes)."""
        values = (site.grid_power_w, site.pv_power_w, site.battery_power_w, site.battery_soc_pct)
        if values != self.values or self.since is None:
            self.values, self.since = values, site.timestamp_s
            if self.frozen:
                log.info("meter_values_moving_again", device=self.device)
                self.frozen = False
            return site
        if frozen_s <= 0 or site.timestamp_s - self.since <= frozen_s:
            return site
        if not self.frozen:
            log.warning(
                "meter_values_frozen",
                device=self.device,
                unchanged_s=round(site.timestamp_s - self.since),
                action="treated as stale until they change",
            )
            self.frozen = True
        return dataclasses.replace(site, timestamp_s=self.since)
