"""Resume recovery in the daemon: feed :class:`~pvcharge.control.wakeup.WakeUpDetector` each cycle and
send the charger's wake-up when it says so (issue #15 item 4).

:class:`CarWaker` is the daemon's helper: it owns the detector, calls the driver's optional
:meth:`~pvcharge.chargers.WakesCar.wake_up`, logs what it did and why, and keeps the status flag
(``/api/status`` ``wake_up``).  The wake-up runs as a background task, at most one per charger, so the
control cycle never waits for it (a WARP holds the control pilot disconnected for 3 s, a dead box
answers only after the timeout): the daemon goes on reading, deciding and writing every other
charger.  While it runs :attr:`CarWaker.running` is true and the daemon writes nothing to that
charger (see :meth:`pvcharge.loadpoint.Loadpoint.apply`); when it ends (sent, failed, timed out,
cancelled) ``on_end`` is called, and the loadpoint sends its command again.  A failing wake-up never
ends the loop: it is logged and counts as an attempt; a wake-up the driver defers for its rate limit
sent nothing, does not count and is asked for again next cycle.

Log events: ``car_wake_up`` (info, once the wake-up was sent: attempt n of m, why);
``car_wake_up_failed`` (warning: attempt n of m, why, the error; the daemon then sends its command
again); ``car_wake_up_deferred`` (debug); ``car_wake_up_cancelled`` (info: the daemon stopped during
the wake-up; it counts as an attempt); ``car_not_starting`` once per plug-in: info when the charger has
no wake-up (a full car waiting in state B looks the same), warning when all attempts are spent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal

import structlog

from pvcharge.chargers import Charger, WakesCar, can_wake
from pvcharge.control.config import ChargePoint
from pvcharge.control.vehicle import Vehicle
from pvcharge.control.wakeup import WakeUp, WakeUpDetector
from pvcharge.errors import DeviceError, WriteDeferred
from pvcharge.readings import ChargerCommand, ChargerReading

log = structlog.get_logger("pvcharge.daemon")

#: how a wake-up ended: sent, failed (error or timeout), deferred (nothing sent), cancelled
Outcome = Literal["sent", "failed", "deferred", "cancelled"]


class CarWaker:
    """Wakes a car that does not start, through ``charger`` if it can (see the module docstring).

    Args:
        charger: the charger driver; with a ``wake_up`` method (:class:`~pvcharge.chargers.WakesCar`)
            it can wake a car, without one the car is only reported.
        charge_point: ``wake_up_attempts`` (0: off) and ``wake_up_after_s`` are read from it.
        vehicle: the loadpoint's vehicle profile; ``wake_up: false`` turns the wake-up off (as
            ``wake_up_attempts: 0``).
        clock: now in s (the daemon's clock): when a wake-up ended.
        on_end: called with a reason when a wake-up that may have touched the charger ended (sent,
            failed, timed out or cancelled; not when the driver deferred it), before :attr:`running`
            turns false: the loadpoint sends its command again.
    """

    def __init__(
        self,
        charger: Charger,
        charge_point: ChargePoint,
        vehicle: Vehicle = Vehicle(),  # noqa: B008 (frozen)
        *,
        clock: Callable[[], float] = time.time,
        on_end: Callable[[str], None] | None = None,
    ) -> None:
        self.charger = charger
        self.clock = clock
        self.detector = WakeUpDetector(
            _attempts(charge_point, vehicle), charge_point.wake_up_after_s, available=can_wake(charger)
        )
        self.failures = 0  #: wake-ups that raised, since start
        self.last_error: str | None = None
        self.on_end = on_end
        self._running = False
        self._task: asyncio.Task[None] | None = None  # the wake-up in flight (a reference keeps it alive)

    @property
    def running(self) -> bool:
        """A wake-up is in flight: the charger is not to be written until it ends."""
        return self._running

    def reconfigure(self, charge_point: ChargePoint, vehicle: Vehicle = Vehicle()) -> None:  # noqa: B008
        """Take a reloaded config's settings; the session's attempts stay counted."""
        self.detector.reconfigure(_attempts(charge_point, vehicle), charge_point.wake_up_after_s)

    def cycle(
        self,
        now_s: float,
        command: ChargerCommand | None,
        reading: ChargerReading | None,
        *,
        timeout_s: float,
    ) -> bool:
        """One cycle: ``command`` is what the charger holds (``None`` if unknown), ``reading`` this
        cycle's charger reading.  Starts a wake-up in the background if one is due (it is given at most
        ``timeout_s``); nothing while one runs (the detector waits for its outcome).  Call it from the
        running event loop.

        Returns:
            True when a wake-up was started (it sends its first request once the caller yields).
        """
        if self._running:
            return False
        due = self.detector.step(now_s, command, reading)
        if due is None:
            return False
        fields: dict[str, Any] = {"device": self.charger.name, "waited_s": round(due.waited_s)}
        if not due.available:  # info: a full car waiting in state B looks the same
            log.info(
                "car_not_starting",
                **fields,
                why=due.why,
                action=f"{self.charger.name} cannot wake a car: unplug and plug in the cable, or start "
                "the charge from the car or its app",
            )
            return False
        if due.exhausted:
            log.warning(
                "car_not_starting",
                **fields,
                why=f"{due.why}, after {due.attempt} wake-ups",
                action="no more wake-ups until it is unplugged: start the charge from the car or its app",
            )
            return False
        self._running = True
        task = asyncio.get_running_loop().create_task(
            self._wake(due, fields, timeout_s), name=f"wake-up {self.charger.name}"
        )
        task.add_done_callback(self._done)
        self._task = task
        return True

    async def stop(self, timeout_s: float) -> None:
        """Cancel a wake-up in flight and wait for it to end (at most ``timeout_s``, loop time): a
        WARP connects the control pilot again on the way out.  Logs ``car_wake_up_not_stopped`` (error)
        if it has not ended by then."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.error(
                "car_wake_up_not_stopped",
                device=self.charger.name,
                waited_s=timeout_s,
                action=f"{self.charger.name} may be left mid-wake-up: check it in its app or at the wallbox",
            )

    async def _wake(self, due: WakeUp, fields: dict[str, Any], timeout_s: float) -> None:
        """The wake-up task: send it, log the outcome, then :meth:`_ended`.  It counts as an attempt at
        the clock time it ended, so the next one waits ``wake_up_after_s`` from there (the car's time to
        start after it; and however long a wake-up took, two are that far apart)."""
        outcome: Outcome = "failed"
        try:
            outcome = await self._send(due, fields, timeout_s)
        except asyncio.CancelledError:
            outcome = "cancelled"
            self.detector.attempted(self.clock())  # something may have been sent
            log.info("car_wake_up_cancelled", **fields, attempt=due.attempt, of=due.of)
            raise
        except BaseException as exc:  # past the driver guard: a failed attempt, logged by _done
            self.detector.attempted(self.clock())
            self.failures += 1
            self.last_error = repr(exc)
            raise
        finally:
            self._ended(outcome)

    async def _send(self, due: WakeUp, fields: dict[str, Any], timeout_s: float) -> Outcome:
        assert isinstance(self.charger, WakesCar)
        try:
            async with asyncio.timeout(timeout_s):
                await self.charger.wake_up()
        except WriteDeferred as exc:  # rate limit: nothing sent, asked for again next cycle
            log.debug("car_wake_up_deferred", **fields, reason=exc.message, retry_after_s=exc.retry_after_s)
            return "deferred"
        except (DeviceError, TimeoutError) as exc:
            error = getattr(exc, "message", None) or f"no answer within {timeout_s:g} s"
        except Exception as exc:  # a driver bug must not end the loop
            log.error("driver_error", device=self.charger.name, what="wake_up", error=repr(exc), exc_info=exc)
            error = repr(exc)
        else:
            self.detector.attempted(self.clock())
            log.info("car_wake_up", **fields, attempt=due.attempt, of=due.of, why=due.why)
            return "sent"
        self.detector.attempted(self.clock())
        self.failures += 1
        self.last_error = error
        log.warning(
            "car_wake_up_failed",
            **fields,
            attempt=due.attempt,
            of=due.of,
            why=due.why,
            error=error,
            action="the command is sent again",
        )
        return "failed"

    def _ended(self, outcome: Outcome) -> None:
        """The wake-up is over: call ``on_end`` (unless nothing was sent), then let writes through.
        Idempotent."""
        if not self._running:
            return
        try:
            if outcome != "deferred" and self.on_end is not None:
                self.on_end(f"wake-up {outcome}")
        finally:
            self._running = False

    def _done(self, task: asyncio.Task[None]) -> None:
        """The task's done-callback: drop the reference and retrieve its end, so nothing is lost."""
        if self._task is task:
            self._task = None
        if task.cancelled():  # cancelled before it ever ran: its own finally did not run
            self._ended("cancelled")
            return
        exc = task.exception()
        if exc is not None:  # only a BaseException gets past _send; logged, never lost
            log.error("driver_error", device=self.charger.name, what="wake_up", error=repr(exc), exc_info=exc)
            self._ended("failed")

    def as_dict(self) -> dict[str, Any]:
        """The status flag: ``attempts`` (this plug-in), ``max_attempts``, ``last_at_s`` (clock s or
        ``None``), ``available`` (the charger has a wake-up), ``failures`` (since start),
        ``last_error``."""
        return self.detector.as_dict() | {"failures": self.failures, "last_error": self.last_error}


def _attempts(charge_point: ChargePoint, vehicle: Vehicle) -> int:
    """Wake-ups allowed per plug-in: the charge point's, or 0 for a vehicle with ``wake_up: false``."""
    return charge_point.wake_up_attempts if vehicle.wake_up else 0
