"""Canonical readings and commands exchanged between drivers, the control core and the daemon.

Sign convention (the only one inside pvcharge; every driver converts at its edge):

- ``grid_power_w``    > 0 imports from the grid, < 0 exports.
- ``battery_power_w`` > 0 the home battery discharges, < 0 it charges.
- ``pv_power_w``      >= 0.
- so the house load behind the grid meter, car included, is ``pv + grid + battery``.

Units are in the names: W, A, % (0–100), s.  Timestamps (``timestamp_s``) are seconds on the clock
that the daemon passes to drivers and controller (``time.time()`` in the daemon, simulated seconds in
replays); a reading's timestamp is when its values were measured or received.

These dataclasses validate themselves in ``__post_init__`` and raise ``ValueError`` naming the
field, so a driver that decodes a nonsense value (NaN, SoC 250 %, negative PV) fails at its edge
instead of feeding the controller.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


def _finite(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


class IecState(StrEnum):
    """IEC 61851-1 control-pilot states of a charge point."""

    A = "A"  #: no vehicle connected
    B = "B"  #: vehicle connected, not charging
    C = "C"  #: charging
    D = "D"  #: charging with ventilation (practically unused)
    E = "E"  #: no power / short circuit on CP
    F = "F"  #: charger fault


@dataclass(frozen=True, slots=True)
class SiteReading:
    """One reading of the site meter source.

    Attributes:
        grid_power_w: grid exchange in W, > 0 import, < 0 export.
        pv_power_w: PV production in W, >= 0.
        battery_power_w: home battery in W, > 0 discharging, < 0 charging; 0 without a battery.
        battery_soc_pct: home battery state of charge in % (0–100), ``None`` without a battery.
        timestamp_s: when the values were measured, seconds on the daemon's clock.
        grid_currents_a: per-phase grid currents L1–L3 in A (> 0 import) where the meter gives them.

    Raises:
        ValueError: a value is not finite, PV is negative or SoC is outside 0–100 %.
    """

    grid_power_w: float
    pv_power_w: float
    battery_power_w: float
    battery_soc_pct: float | None
    timestamp_s: float
    grid_currents_a: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        for name in ("grid_power_w", "pv_power_w", "battery_power_w", "timestamp_s"):
            _finite(name, getattr(self, name))
        if self.pv_power_w < 0:
            raise ValueError(f"pv_power_w must be >= 0, got {self.pv_power_w!r}")
        if self.battery_soc_pct is not None:
            _finite("battery_soc_pct", self.battery_soc_pct)
            if not 0.0 <= self.battery_soc_pct <= 100.0:
                raise ValueError(f"battery_soc_pct must be within 0–100 %, got {self.battery_soc_pct!r}")
        if self.grid_currents_a is not None:
            if len(self.grid_currents_a) != 3:
                raise ValueError("grid_currents_a must hold three values (L1, L2, L3)")
            for i, current in enumerate(self.grid_currents_a):
                _finite(f"grid_currents_a[{i}]", current)

    @property
    def house_power_w(self) -> float:
        """Everything behind the grid meter, car included: ``pv + grid + battery`` in W."""
        return self.pv_power_w + self.grid_power_w + self.battery_power_w


@dataclass(frozen=True, slots=True)
class ChargerReading:
    """One reading of the charger (charge point).

    Attributes:
        connected: a vehicle is plugged in (IEC 61851 state B, C or D).
        charging: the vehicle draws current (state C or D).
        power_w: charging power in W, >= 0.
        current_a: the current the charger currently allows the car (its effective limit) in A, >= 0.
        phases: phases the car draws on: 1 or 3; 0 while not charging or unknown.
        timestamp_s: when the values were received, seconds on the daemon's clock.
        iec_state: the IEC 61851 state where the charger reports it.
        phase_currents_a: measured L1–L3 currents in A where the charger meters them.
        vehicle_soc_pct: the car's battery state of charge in % (0–100) where the charger learns it
            from the car (ISO 15118, CHAdeMO, an OCPP box's ``SoC`` measurand); ``None`` otherwise.

    Raises:
        ValueError: a value is not finite or negative, ``phases`` is not 0, 1, 2 or 3, or
            ``vehicle_soc_pct`` is outside 0–100.
    """

    connected: bool
    charging: bool
    power_w: float
    current_a: float
    phases: int
    timestamp_s: float
    iec_state: IecState | None = None
    phase_currents_a: tuple[float, float, float] | None = None
    vehicle_soc_pct: float | None = None

    def __post_init__(self) -> None:
        for name in ("power_w", "current_a", "timestamp_s"):
            _finite(name, getattr(self, name))
        if self.vehicle_soc_pct is not None:
            _finite("vehicle_soc_pct", self.vehicle_soc_pct)
            if not 0.0 <= self.vehicle_soc_pct <= 100.0:
                raise ValueError(f"vehicle_soc_pct must be within 0–100 %, got {self.vehicle_soc_pct!r}")
        if self.power_w < 0:
            raise ValueError(f"power_w must be >= 0, got {self.power_w!r}")
        if self.current_a < 0:
            raise ValueError(f"current_a must be >= 0, got {self.current_a!r}")
        if self.phases not in (0, 1, 2, 3):
            raise ValueError(f"phases must be 0, 1, 2 or 3, got {self.phases!r}")


#: how far below 0 W a charger's own meter may read and still count as 0 W, in W (a choice, not a device
#: fact): an idle meter shows a few W either way (offset, rounding, its own supply), while a meter wired in
#: reverse shows the whole charging power below 0, at least 6 A × 230 V ≈ 1.4 kW (IEC 61851 minimum).
CHARGING_POWER_NOISE_W = 50.0


def charging_power_w(power_w: float, where: str, *, shown: str | None = None) -> float:
    """A charger meter's power as :attr:`ChargerReading.power_w`: ``power_w`` (finite, in W, > 0 the car
    draws), read as 0 W down to :data:`CHARGING_POWER_NOISE_W` below 0.

    Args:
        power_w: the meter's value converted to W.
        where: the value's name in the device's terms, for the message, e.g. ``"meter/values: field
            'power'"``.
        shown: the value as the device sent it, for the message, e.g. ``"-7.4 kW"``; by default
            ``"{power_w:g} W"``.

    Raises:
        ValueError: ``"{where} is {shown}, negative: is the meter wired in reverse?"`` further below 0.
    """
    if power_w < -CHARGING_POWER_NOISE_W:
        shown = f"{power_w:g} W" if shown is None else shown
        raise ValueError(f"{where} is {shown}, negative: is the meter wired in reverse?")
    return max(0.0, float(power_w))


@dataclass(frozen=True, slots=True)
class ChargerCommand:
    """What the controller asks of the charger.

    Attributes:
        current_a: current limit per phase in A; 0 pauses charging.
        phases: 1 or 3; chargers that cannot switch phases ignore it (their capability says so).
    """

    current_a: float
    phases: int

    def __post_init__(self) -> None:
        _finite("current_a", self.current_a)
        if self.current_a < 0:
            raise ValueError(f"current_a must be >= 0, got {self.current_a!r}")
        if self.phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, got {self.phases!r}")

    @property
    def paused(self) -> bool:
        """True when the command stops the car from drawing (``current_a == 0``)."""
        return self.current_a == 0

    @property
    def phase_currents_a(self) -> tuple[float, float, float]:
        """What the command offers on grid phases L1, L2, L3, A: ``current_a`` on all three on 3 phases,
        on L1 alone on 1 phase (as the site's fuse and circuits count a 1-phase car)."""
        a = self.current_a
        return (a, a, a) if self.phases == 3 else (a, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class ChargerCapabilities:
    """What a charger can do; the controller honours it instead of switching on the vendor.

    Attributes:
        current_step_a: resolution of the current setpoint in A (1.0 whole amps, 0.001 for mA).
        min_current_a: lowest non-zero current the charger accepts, in A (IEC 61851: 6 A).
        max_current_a: highest current the charger accepts, in A.
        phase_switching: it can switch between 1 and 3 phases on command.
        on_off_only: it can only start and stop, not set a current.
    """

    current_step_a: float = 1.0
    min_current_a: float = 6.0
    max_current_a: float = 32.0
    phase_switching: bool = False
    on_off_only: bool = False


def as_dict(reading: SiteReading | ChargerReading) -> dict[str, Any]:
    """A reading as plain JSON-ready data: its fields (enums as their values, tuples as lists), plus
    ``house_power_w`` for a site reading.  For ``probe --json``, the status API and MQTT."""
    data = dataclasses.asdict(reading)
    for key, value in data.items():
        if isinstance(value, IecState):
            data[key] = value.value
        elif isinstance(value, tuple):
            data[key] = list(value)
    if isinstance(reading, SiteReading):
        data["house_power_w"] = reading.house_power_w
    return data
