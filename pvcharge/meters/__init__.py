"""Meter sources: each reads grid, PV and home-battery telemetry and returns a ``SiteReading``.

A vendor is one module here plus one line in :data:`METER_TYPES`.  Each module exposes:

- ``Config``: a frozen dataclass of its settings (fields made with ``pvcharge.settings.setting``);
- ``create(config, *, name, clock) -> Meter``: builds the driver (no I/O yet); the AlphaESS module
  also takes ``account=``, the Open API account it shares with the other device
  (:func:`pvcharge.devices.create_devices` builds both drivers of a config).

A meter that gives new readings less often than every cycle (a cloud API, a traffic-sensitive
appliance) exposes ``Config.update_interval_s``; the config loader then requires
``control.max_age_s`` to be at least that long.

Drivers convert vendor signs and units to the canonical ones of ``pvcharge.readings`` and raise only
``pvcharge.errors.DeviceError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pvcharge.readings import SiteReading

Clock = Callable[[], float]

#: meter ``type`` in the config → module implementing it.
METER_TYPES: dict[str, str] = {
    "huawei": "pvcharge.meters.huawei",
    "senec": "pvcharge.meters.senec",
    "alphaess": "pvcharge.meters.alphaess",
}


class Meter(Protocol):
    """A meter source. One instance per configured device; not shared between tasks."""

    name: str

    async def read(self) -> SiteReading:
        """Read the site once.

        Returns: a canonical reading stamped with the driver's clock.
        Raises: ``DeviceUnavailable`` (unreachable, timeout, busy after retries) or
        ``DeviceProtocolError`` (malformed or out-of-range answer).
        """
        ...

    async def close(self) -> None:
        """Release the connection. Safe to call twice."""
        ...
