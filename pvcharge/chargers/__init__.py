"""Charger sinks: each reads the charge point's state and applies the controller's command.

A vendor is one module here plus one line in :data:`CHARGER_TYPES`.  Each module exposes:

- ``Config``: a frozen dataclass of its settings (fields made with ``pvcharge.settings.setting``);
- ``create(config, *, name, clock) -> Charger``: builds the driver (no I/O yet); the AlphaESS module
  also takes ``account=``, the Open API account it shares with the other device
  (:func:`pvcharge.devices.create_devices` builds both drivers of a config).

Drivers convert vendor units (mA, kW) to canonical ones, describe what the hardware can do in
``capabilities``, keep any vendor rate limit themselves, and raise only ``DeviceError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading

Clock = Callable[[], float]

#: charger ``type`` in the config → module implementing it.
CHARGER_TYPES: dict[str, str] = {
    "warp": "pvcharge.chargers.warp",
    "alphaess": "pvcharge.chargers.alphaess",
    "easee": "pvcharge.chargers.easee",
    "ocpp": "pvcharge.chargers.ocpp",
}


class Charger(Protocol):
    """A charger sink. One instance per configured device."""

    name: str
    capabilities: ChargerCapabilities

    async def read(self) -> ChargerReading:
        """Read the charge point once.

        Raises: ``DeviceUnavailable`` or ``DeviceProtocolError``.
        """
        ...

    async def apply(self, command: ChargerCommand) -> None:
        """Send the command (current in A, 0 pauses; phases where switchable).

        The daemon calls this only when the command differs from the last one applied, and again
        after a failure.  Raises: ``DeviceUnavailable`` or ``DeviceProtocolError``; on an
        exception the daemon treats the command as not applied.
        """
        ...

    def forget(self) -> None:
        """Forget what the charger is believed to hold: the next :meth:`apply` sends the whole command.

        The daemon calls this when the charger may have lost its command behind the driver's back:
        after an outage (a reboot) and when a vehicle is newly connected (Easee clears a pause and
        its dynamic current on plug-in).  No I/O.
        """
        ...

    async def close(self) -> None:
        """Release connections. Safe to call twice."""
        ...


@runtime_checkable
class WakesCar(Protocol):
    """A charger that can wake a car which does not start drawing when offered current (evcc's
    ``api.Resurrector``): an optional capability, used by the daemon's :class:`pvcharge.resume.CarWaker`
    when :mod:`pvcharge.control.wakeup` says so.  Implemented by WARP (a control-pilot disconnect) and
    Easee (pause then resume); OCPP and the AlphaESS wallbox have none."""

    async def wake_up(self) -> None:
        """Make the car see an unplug and plug-in (or its charger's equivalent) and leave the charger
        holding the command it held before, never more.

        Raises: ``WriteDeferred`` (nothing sent now, rate limit; asked for again later),
        ``DeviceUnavailable`` or ``DeviceProtocolError`` (failed: the charger may hold less than the
        command, e.g. paused, never more; the daemon sends the command again).
        """
        ...


def can_wake(charger: object) -> bool:
    """``charger`` has the :class:`WakesCar` capability."""
    return isinstance(charger, WakesCar)
