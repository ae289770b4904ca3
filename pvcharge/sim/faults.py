"""Fault injection for the device emulators: the emulators learn to misbehave on command.

Every emulator has a :class:`FaultSwitch` as its ``faults`` attribute; a test or the soak run sets a
fault, the emulator misbehaves on every request until the fault is cleared::

    emulator.faults.set(Fault.HTTP_503)
    ...
    emulator.faults.clear()

Which faults an emulator can play is in ``emulator.faults.supported`` (a Modbus device has no HTTP
status codes, an HTTP device no Modbus exceptions).  The faults are the ones users of today's tools
report from the field (``shared/reference/peers.md``) and the ones the vendors document: exception
0x06 (busy) from a SUN2000 right after connecting, 429 with Retry-After from the Easee cloud, a SENEC
that stops updating its values, a WLAN dongle that drops the connection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from enum import StrEnum


class Fault(StrEnum):
    """One way a device misbehaves."""

    TIMEOUT = "timeout"  #: takes the request and never answers (until cleared)
    DROP = "drop"  #: closes the connection without answering
    SLOW = "slow"  #: answers correctly after ``FaultSwitch.delay_s``
    STALE = "stale"  #: answers, but with the values frozen at the moment the fault was set
    GARBAGE = "garbage"  #: answers with well-formed but impossible values (e.g. SoC 6553.5 %)
    # Modbus only
    BUSY = "busy"  #: Modbus exception 0x06, slave device busy
    DEVICE_FAILURE = "device_failure"  #: Modbus exception 0x04, slave device failure
    KICK = "kick"  #: only one client at a time: a new connection closes the older ones
    # HTTP only
    HTTP_500 = "http_500"  #: 500 Internal Server Error
    HTTP_503 = "http_503"  #: 503 Service Unavailable
    HTTP_429 = "http_429"  #: 429 Too Many Requests with ``Retry-After: retry_after_s``
    TRUNCATED = "truncated"  #: 200 with a JSON body cut off in the middle
    NOT_JSON = "not_json"  #: 200 with an HTML error page instead of JSON


MODBUS_FAULTS = frozenset(
    {
        Fault.TIMEOUT,
        Fault.DROP,
        Fault.SLOW,
        Fault.STALE,
        Fault.GARBAGE,
        Fault.BUSY,
        Fault.DEVICE_FAILURE,
        Fault.KICK,
    }
)
HTTP_FAULTS = frozenset(
    {
        Fault.TIMEOUT,
        Fault.DROP,
        Fault.SLOW,
        Fault.STALE,
        Fault.GARBAGE,
        Fault.HTTP_500,
        Fault.HTTP_503,
        Fault.HTTP_429,
        Fault.TRUNCATED,
        Fault.NOT_JSON,
    }
)


class FaultSwitch:
    """The fault an emulator plays now, and how often it played each.

    Args:
        supported: the faults this emulator can play.

    Attributes:
        fault: the active fault, ``None`` when the device behaves.
        delay_s: how late ``SLOW`` answers, in s.
        retry_after_s: the ``Retry-After`` of ``HTTP_429``, in s.
        played: requests answered with each fault (a ``Counter``), for the tests' accounting.
    """

    def __init__(self, supported: Iterable[Fault]) -> None:
        self.supported = frozenset(supported)
        self.fault: Fault | None = None
        self.delay_s = 5.0
        self.retry_after_s = 30.0
        self.played: Counter[Fault] = Counter()

    def set(
        self, fault: Fault | None, *, delay_s: float | None = None, retry_after_s: float | None = None
    ) -> None:
        """Play ``fault`` on every request from now on (``None`` clears).

        Raises:
            ValueError: the emulator cannot play this fault.
        """
        if fault is not None and fault not in self.supported:
            allowed = ", ".join(sorted(f.value for f in self.supported))
            raise ValueError(f"this emulator cannot play fault {fault.value!r}; it plays: {allowed}")
        self.fault = fault
        if delay_s is not None:
            self.delay_s = delay_s
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s

    def clear(self) -> None:
        """Behave again."""
        self.fault = None

    def active(self, fault: Fault) -> bool:
        """True if ``fault`` is the one being played."""
        return self.fault is fault

    def play(self) -> Fault | None:
        """The fault to play on this request (counted), or ``None``."""
        if self.fault is not None:
            self.played[self.fault] += 1
        return self.fault
