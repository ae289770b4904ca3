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
