"""Resume recovery in the daemon: feed :class:`~pvcharge.control.wakeup.WakeUpDetector` each cycle and
send the charger's wake-up when it says so (issue #15 item 4).

:class:`CarWaker` is the daemon's helper: it owns the detector, calls the driver's optional
:meth:`~pvcharge.chargers.WakesCar.wake_up`, logs what it did and why, and keeps the status flag
(``/api/status`` ``wake_up``).  A failing wake-up never ends the loop: it is logged and counts as an
attempt; a wake-up the driver defers for its rate limit does not count and is asked for again next cycle.

Log events: ``car_wake_up`` (info, once the wake-up was sent: attempt n of m, why);
``car_wake_up_failed`` (warning: attempt n of m, why, the error; the daemon then sends its command
again); ``car_wake_up_deferred`` (debug); ``car_not_starting`` once per plug-in: info when the
charger has no wake-up (a full car waiting in state B looks the same), warning when all attempts are
spent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from pvcharge.chargers import Charger, WakesCar, can_wake
from pvcharge.control.config import ChargePoint
from pvcharge.control.vehicle import Vehicle
from pvcharge.control.wakeup import WakeUpDetector
from pvcharge.errors import DeviceError, WriteDeferred
from pvcharge.readings import ChargerCommand, ChargerReading

log = structlog.get_logger("pvcharge.daemon")


class CarWaker:
    """Wakes a car that does not start, through ``charger`` if it can (see the module docstring).

    Args:
        charger: the charger driver; with a ``wake_up`` method (:class:`~pvcharge.chargers.WakesCar`)
            it can wake a car, without one the car is only reported.
        charge_point: ``wake_up_attempts`` (0: off) and ``wake_up_after_s`` are read from it.
        vehicle: the loadpoint's vehicle profile; ``wake_up: false`` turns the wake-up off (as
            ``wake_up_attempts: 0``).
    """

    def __init__(self, charger: Charger, charge_point: ChargePoint, vehicle: Vehicle = Vehicle()) -> None:  # noqa: B008 (frozen)
        self.charger = charger
        self.detector = WakeUpDetector(
            _attempts(charge_point, vehicle), charge_point.wake_up_after_s, available=can_wake(charger)
        )
        self.failures = 0  #: wake-ups that raised, since start
        self.last_error: str | None = None

    def reconfigure(self, charge_point: ChargePoint, vehicle: Vehicle = Vehicle()) -> None:  # noqa: B008
        """Take a reloaded config's settings; the session's attempts stay counted."""
        self.detector.reconfigure(_attempts(charge_point, vehicle), charge_point.wake_up_after_s)

    async def cycle(
        self,
        now_s: float,
        command: ChargerCommand | None,
        reading: ChargerReading | None,
        *,
        timeout_s: float,
    ) -> bool:
        """One cycle: ``command`` is what the charger holds (``None`` if unknown), ``reading`` this
        cycle's charger reading.  Sends a wake-up if due, waiting at most ``timeout_s`` for it.

        Returns:
            True when a wake-up failed, so the charger may no longer hold the command (paused, or its
            state unknown to the driver): the daemon is to send the command again.
        """
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
        assert isinstance(self.charger, WakesCar)
        try:
            await asyncio.wait_for(self.charger.wake_up(), timeout=timeout_s)
        except WriteDeferred as exc:  # rate limit: nothing sent, asked for again next cycle
            log.debug("car_wake_up_deferred", **fields, reason=exc.message, retry_after_s=exc.retry_after_s)
            return False
        except (DeviceError, TimeoutError) as exc:
            error = getattr(exc, "message", None) or f"no answer within {timeout_s:g} s"
        except Exception as exc:  # a driver bug must not end the loop
            log.error("driver_error", device=self.charger.name, what="wake_up", error=repr(exc), exc_info=exc)
            error = repr(exc)
        else:
            self.detector.attempted(now_s)
            log.info("car_wake_up", **fields, attempt=due.attempt, of=due.of, why=due.why)
            return False
        self.detector.attempted(now_s)
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
        return True

    def as_dict(self) -> dict[str, Any]:
        """The status flag: ``attempts`` (this plug-in), ``max_attempts``, ``last_at_s`` (clock s or
        ``None``), ``available`` (the charger has a wake-up), ``failures`` (since start),
        ``last_error``."""
        return self.detector.as_dict() | {"failures": self.failures, "last_error": self.last_error}


def _attempts(charge_point: ChargePoint, vehicle: Vehicle) -> int:
    """Wake-ups allowed per plug-in: the charge point's, or 0 for a vehicle with ``wake_up: false``."""
    return charge_point.wake_up_attempts if vehicle.wake_up else 0
