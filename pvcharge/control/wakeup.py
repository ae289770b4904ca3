"""Resume recovery: notice a car that is offered current but does not start, and say when to wake it.

Some cars fall asleep during a pause and then ignore the current offered again (VW ID family, Dacia
Spring; evcc #4127, #21293): the charger shows IEC 61851 state B (connected, not charging) and the car
draws nothing.  A control-pilot interruption, which the car takes for an unplug and plug-in, wakes them
(evcc's ``api.Resurrector``, openWB's CP interruption, the WARP's own ``ev_wakeup``; reference
``sources.md`` "Cars that do not resume").

:class:`WakeUpDetector` is pure: the daemon feeds it, every cycle, the clock, the command the charger
holds and the charger reading, and performs what it answers.  The rules:

- a car is *waiting* while the command the charger holds is above 0 A, the reading says connected and
  in state B (``iec_state`` B, or, where the charger reports no IEC state, connected and not charging)
  and the car draws less than :data:`IDLE_POWER_W`;
- the wait starts at the first such cycle after a start or a resume from pause (a command of 0 A, a
  drawing car or an unplug end it);
- after ``after_s`` of waiting, and ``after_s`` after the previous wake-up, the car gets a wake-up, at
  most ``attempts`` per session; a session ends when the car is unplugged;
- a charger that cannot wake a car gets, once per session, an :attr:`WakeUp.available` ``False`` answer
  instead (the daemon logs that the car did not start), and so does the first cycle after the last
  attempt (``exhausted``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pvcharge.readings import ChargerCommand, ChargerReading, IecState

#: a car drawing less than this, in W, counts as not charging (a choice: the charger's own meter reads a
#: few W at idle, a charging car draws at least 6 A × 230 V ≈ 1.4 kW).
IDLE_POWER_W = 100.0


@dataclass(frozen=True, slots=True)
class WakeUp:
    """What the detector asks of the daemon in one cycle.

    Attributes:
        attempt: the number of this wake-up in the session, 1-based (the last one made when not
            ``available`` or ``exhausted``).
        of: ``attempts`` configured.
        waited_s: how long the car has been offered current without drawing, in s.
        available: the charger can wake a car; ``False``: say once that the car did not start and
            nothing can be sent.
        exhausted: all attempts are spent and the car still does not draw: say so, send nothing.
    """

    attempt: int
    of: int
    waited_s: float
    available: bool = True
    exhausted: bool = False

    @property
    def send(self) -> bool:
        """The daemon is to call the charger's wake-up now."""
        return self.available and not self.exhausted

    @property
    def why(self) -> str:
        """The reason in words, for the log line."""
        return (
            f"offered current for {self.waited_s:.0f} s, but the car stays in state B drawing under "
            f"{IDLE_POWER_W:g} W"
        )


class WakeUpDetector:
    """Decides when a car that does not start gets a wake-up (see the module docstring).

    Args:
        attempts: wake-ups per session, 0 turns the detector off (it never answers).
        after_s: how long a car must wait, and the least time between two wake-ups, in s.
        available: the charger has a wake-up (a driver with ``wake_up``).

    Attributes:
        attempts_made: wake-ups in the present session (tried, successful or not).
        last_at_s: clock time of the last wake-up in the session, ``None`` before the first.
    """

    def __init__(self, attempts: int, after_s: float, *, available: bool) -> None:
        if attempts < 0 or after_s <= 0:
            raise ValueError(f"attempts must be >= 0 and after_s > 0, got {attempts} and {after_s}")
        self.attempts = attempts
        self.after_s = after_s
        self.available = available
        self.attempts_made = 0
        self.last_at_s: float | None = None
        self._waiting_since: float | None = None
        self._told = False  # "unavailable" or "exhausted" answered in this session

    def reconfigure(self, attempts: int, after_s: float) -> None:
        """Take new settings (a config reload); the session's count and timers stay."""
        if attempts < 0 or after_s <= 0:
            raise ValueError(f"attempts must be >= 0 and after_s > 0, got {attempts} and {after_s}")
        self.attempts, self.after_s = attempts, after_s

    def step(
        self, now_s: float, command: ChargerCommand | None, reading: ChargerReading | None
    ) -> WakeUp | None:
        """One cycle: ``command`` is what the charger holds (``None``: unknown), ``reading`` this cycle's
        charger reading (``None``: none, nothing changes).  Returns what to do, or ``None``."""
        if reading is None:
            return None
        if not reading.connected:  # unplugged: the session ends
            self.attempts_made, self.last_at_s, self._waiting_since, self._told = 0, None, None, False
            return None
        if not self._waiting(command, reading):
            self._waiting_since = None
            return None
        if self._waiting_since is None:
            self._waiting_since = now_s
        waited_s = now_s - self._waiting_since
        if self.attempts == 0 or waited_s < self.after_s:
            return None
        if self.last_at_s is not None and now_s - self.last_at_s < self.after_s:
            return None
        if not self.available or self.attempts_made >= self.attempts:
            if self._told:
                return None
            self._told = True
            told = self.available  # True: all attempts spent; False: no wake-up at all
            return WakeUp(self.attempts_made, self.attempts, waited_s, available=told, exhausted=told)
        return WakeUp(self.attempts_made + 1, self.attempts, waited_s)

    def attempted(self, now_s: float) -> None:
        """The daemon sent (or tried to send) a wake-up at ``now_s``: it counts as an attempt."""
        self.attempts_made += 1
        self.last_at_s = now_s

    def as_dict(self) -> dict[str, Any]:
        """For the status API: ``attempts`` (made this session), ``max_attempts``, ``last_at_s`` (clock
        s or ``None``), ``available``."""
        return {
            "attempts": self.attempts_made,
            "max_attempts": self.attempts,
            "last_at_s": self.last_at_s,
            "available": self.available,
        }

    @staticmethod
    def _waiting(command: ChargerCommand | None, reading: ChargerReading) -> bool:
        if command is None or command.current_a <= 0 or reading.power_w >= IDLE_POWER_W:
            return False
        if reading.iec_state is not None:
            return reading.iec_state == IecState.B
        return not reading.charging
