"""Exceptions shared by the config loader, the drivers and the daemon.

Every message names what failed (a file and key path, or a device) and what was expected, so that
a user reading one log line knows where to look.
"""

from __future__ import annotations


class PvchargeError(Exception):
    """Base class of every error pvcharge raises on purpose."""


class ConfigError(PvchargeError):
    """A config file is unreadable, malformed, or holds a wrong, missing or unknown key.

    ``str(err)`` reads ``FILE: KEY.PATH: problem (expected …)``.
    """

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + problem)


class DeviceError(PvchargeError):
    """A meter or charger did not give a usable answer.

    ``device`` is the configured device name (e.g. ``"meter huawei 127.0.0.1:502"``).  Drivers wrap
    every library exception (pymodbus, httpx) in a subclass of this so the daemon catches one type.
    """

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        self.message = message
        super().__init__(f"{device}: {message}")


class DeviceUnavailable(DeviceError):
    """The device could not be reached: connection refused or dropped, timeout, device busy."""


class DeviceProtocolError(DeviceError):
    """The device answered, but the answer is malformed or out of range (e.g. SoC 250 %)."""


class RateLimited(DeviceUnavailable):
    """The device asked for no request for a while (HTTP 429 with ``Retry-After``, AlphaESS 6053), or
    the driver is still honouring such a request and sent nothing.

    Attributes:
        retry_after_s: seconds (on the driver's clock) before the driver sends again.
    """

    def __init__(self, device: str, message: str, *, retry_after_s: float) -> None:
        super().__init__(device, message)
        self.retry_after_s = retry_after_s


class WriteDeferred(DeviceError):
    """The driver did not send a command now, to stay inside the device's rate limits.

    Not a failure: the daemon keeps the command pending and offers it again next cycle, logging at
    debug level.  ``retry_after_s`` is when the driver expects to accept it (0 when unknown).
    """

    def __init__(self, device: str, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(device, message)
        self.retry_after_s = retry_after_s


class WritesBlocked(DeviceError):
    """The device refuses all writes until a person acts (e.g. Easee's HTTP 403 "IP blocked").

    The daemon stops writing to that charger, logs an error once, and says so in every later cycle's
    decision log; it does not retry.
    """
