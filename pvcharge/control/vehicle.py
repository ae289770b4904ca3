"""Vehicle profiles: what a car needs beyond its charge point's limits (the ``vehicle:`` section of a
loadpoint).

Cars differ in ways a charger cannot see: a Renault Zoe will not charge on 3 phases below about 8 A,
some cars must never be paused (they do not resume) or never switched between 1 and 3 phases while
charging (openWB's per-vehicle ``prevent_charge_stop`` and ``prevent_phase_switch``; evcc issues
#4127, #13543); resume recovery (:mod:`pvcharge.resume`) can be turned off per car.
Pure dataclasses; :class:`pvcharge.control.Controller` takes one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from pvcharge.control.config import ChargePoint
from pvcharge.settings import setting


@dataclass(frozen=True)
class Vehicle:
    """The ``vehicle:`` section of a loadpoint (every key optional; the defaults change nothing)."""

    min_current_3p_a: float | None = setting(
        None,
        doc="lowest current per phase the car charges with on 3 phases (a Renault Zoe: 8 A); below it "
        "pvcharge charges on 1 phase or pauses; unset: the charge point's min_current_a",
        unit="A",
        min=6,
        max=32,
    )
    phases: Literal[1, 3, "auto"] = setting(
        "auto",
        doc="phases this car may be charged on: 1 or 3 narrow a charge point with phases: auto (a 1-phase "
        "car on a 3-phase charge point is computed on 1 phase); auto: what the charge point allows",
    )
    never_stop: bool = setting(
        False,
        doc="pv mode: once started, hold min current instead of pausing for lack of surplus (for cars that "
        "do not resume); stale meter data, the fuse and circuits still pause it",
    )
    no_phase_switch: bool = setting(
        False,
        doc="never switch phases while the car charges; the phases are chosen when a charge starts",
    )
    wake_up: bool = setting(
        True,
        doc="resume recovery for this car: false never sends the charger's wake-up (charger."
        "wake_up_attempts) to a car that does not start, e.g. a car that a pilot disconnect upsets",
    )


def narrow(charge_point: ChargePoint, vehicle: Vehicle) -> tuple[ChargePoint, bool]:
    """The charge point as the vehicle narrows it, and whether the car is a 1-phase car on a 3-phase
    charge point (the controller then computes its power on 1 phase from the start).

    A charge point with ``phases: auto`` takes the vehicle's 1 or 3; a fixed charge point stays as it is
    (a charger that cannot switch charges a 3-phase car on its one phase).
    """
    if vehicle.phases == "auto":
        return charge_point, False
    if charge_point.phases == "auto":
        return dataclasses.replace(charge_point, phases=vehicle.phases), False
    return charge_point, charge_point.phases == 3 and vehicle.phases == 1
