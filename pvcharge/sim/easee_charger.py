"""The Easee charger behind the Easee cloud emulator (:class:`~pvcharge.sim.easee.EaseeEmulator`): its
limits and settings, what it offers the car of the :class:`~pvcharge.sim.site.SiteModel`, its observations
and the records the cloud shows of it (reference ``chargers.md`` §1; sources keyed there).

- The charger applies the lowest of its limits [E-limits]: the site is offered
  ``min(dynamic charger current, circuit limit, maxChargerCurrent, 32 A)`` on 1 phase when P2 = P3 = 0
  (circuit limit P1), otherwise on 3 (circuit limit ``min(P1, P2, P3)``) [EV].  From construction the
  charger holds 32 A on 3 phases: an Easee without limits charges a plugged-in car at full current.
- ``chargerOpMode``: 1 no car; 3 the car draws; 2 AwaitingStart when offered < 6 A (paused or limited);
  4 Completed when the car is full; 6 ReadyToCharge otherwise (§1.2 table).
- A sleeping car wakes when the charger resumes from its own pause (``pause_charging``, then an offer of
  6 A or more; see :mod:`pvcharge.sim.easee`).

The cloud's side (login and tokens, rate limits, routes, request bodies, fault injection) is
:mod:`pvcharge.sim.easee`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pvcharge.sim.faults import Fault, FaultSwitch
from pvcharge.sim.site import SiteModel, SiteState

#: Easee Home/Charge maximum, A: the dynamic charger current after ``resume_charging`` (chargers.md §1.3 [EV]:
#: evcc waits for 32 there).
MAX_CHARGER_A = 32
MIN_CURRENT_A = 6  #: below this the car does not draw (IEC 61851)
#: totalPower (kW) under ``GARBAGE``: well-formed, impossible (a charger does not feed 7.4 kW back).
GARBAGE_TOTAL_POWER_KW = -7.4
#: ``ChargerSettings`` keys accepted by ``POST /api/chargers/{id}/settings`` (Easee OpenAPI [GEN];
#: those pyeasee sends [P]) and their initial values, besides ``dynamicChargerCurrent`` (the live
#: :attr:`EaseeEmulator.dynamic_charger_a`, which the commands change too).
CHARGER_SETTINGS: dict[str, object] = {
    "enabled": True,
    "enableIdleCurrent": False,
    "limitToSinglePhaseCharging": False,
    "lockToSinglePhaseCharging": False,
    "phaseMode": 2,
    "smartButtonEnabled": False,
    "smartCharging": False,
    "ledStripBrightness": 50,
    "maxChargerCurrent": 32,
}


def check_number(value: object, name: str, high: float, low: float = 0) -> float:
    """``value`` as a float if it is a JSON number within ``low``–``high``; ``ValueError`` if not."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name}: expected a number within {low:g}–{high:g}, got {json.dumps(value)}")
    return float(value)


def as_amps(value: object) -> float:
    """A current setting, checked by :func:`check_setting`."""
    assert isinstance(value, int | float)
    return float(value)


def check_setting(key: str, value: object) -> object:
    """A charger setting's value checked by its type (:data:`CHARGER_SETTINGS`); ``ValueError`` if not."""
    if key == "dynamicChargerCurrent":
        return check_number(value, key, MAX_CHARGER_A)
    if key == "maxChargerCurrent":
        return check_number(value, key, MAX_CHARGER_A, MIN_CURRENT_A)
    if key == "ledStripBrightness":
        return int(check_number(value, key, 100))
    if key == "phaseMode":
        if value not in (1, 2, 3) or isinstance(value, bool):
            raise ValueError(f"phaseMode: expected 1, 2 or 3, got {json.dumps(value)}")
        return value
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false, got {json.dumps(value)}")
    return value


class EaseeCharger:
    """One Easee charger at the simulated site: its limits, settings and observations.

    The state and semantics half of :class:`~pvcharge.sim.easee.EaseeEmulator`, which inherits it and
    serves it over HTTP; its attributes are documented there (``dynamic_charger_a``, ``settings``,
    ``circuit_a``, ``offers``).

    Args:
        site: the simulated site; ``site.offer()`` on every change of the limits (and at construction),
            ``site.state()`` per observation.
        charger_id, site_id, circuit_id: the ids of the charger, its site and its circuit.
        clock: Unix seconds, for :attr:`offers`.
    """

    faults: FaultSwitch  #: the serving emulator's (``GARBAGE`` changes the observations)

    def __init__(
        self, site: SiteModel, *, charger_id: str, site_id: int, circuit_id: int, clock: Callable[[], float]
    ) -> None:
        self.site = site
        self.charger_id = charger_id
        self.site_id = site_id
        self.circuit_id = circuit_id
        self.clock = clock
        self.dynamic_charger_a = float(MAX_CHARGER_A)
        self.circuit_a = (MAX_CHARGER_A, MAX_CHARGER_A, MAX_CHARGER_A)
        self.settings = dict(CHARGER_SETTINGS)
        self.offers: list[tuple[float, float, int]] = []
        self._paused_by_command = False  # pause_charging since the last offer of 6 A or more
        self._frozen: tuple[SiteState, float] | None = None  #: site state and its time under STALE
        self._offer()

    # -- records (shapes as pyeasee reads them [P]) ---------------------------------------------------

    def _charger_record(self) -> dict[str, Any]:
        return {
            "id": self.charger_id,
            "name": self.charger_id,
            "color": 1,
            "createdOn": "2024-03-01T10:00:00Z",
            "updatedOn": "2026-09-01T10:00:00Z",
            "backPlate": {"id": "BP" + self.charger_id[2:], "masterBackPlateId": "BP" + self.charger_id[2:]},
            "levelOfAccess": 1,
            "productCode": 1,
            "userRole": 1,
            "isTemporary": False,
        }

    def _site_record(self, *, detailed: bool) -> dict[str, Any]:
        site: dict[str, Any] = {
            "id": self.site_id,
            "siteKey": f"EMUL-{self.site_id:04d}",
            "name": "pvcharge emulated site",
            "levelOfAccess": 1,
            "address": {"street": "Loopback 1", "zip": "12700", "area": "Localhost", "country": {"id": "DE"}},
            "ratedCurrent": 35,
            "createdOn": "2024-03-01T10:00:00Z",
            "updatedOn": "2026-09-01T10:00:00Z",
        }
        if detailed:
            circuit = {
                "id": self.circuit_id,
                "siteId": self.site_id,
                "circuitPanelId": 1,
                "panelName": "1",
                "ratedCurrent": MAX_CHARGER_A,
                "fuse": MAX_CHARGER_A,
                "chargers": [self._charger_record()],
            }
            site.update(circuits=[circuit], equalizers=[])
        return site

    def _charger_config(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "isEnabled": settings["enabled"],
            "lockCablePermanently": False,
            "authorizationRequired": False,
            "remoteStartRequired": False,
            "smartButtonEnabled": settings["smartButtonEnabled"],
            "wiFiSSID": "pvcharge-emulator",
            "detectedPowerGridType": 1,
            "offlineChargingMode": 0,
            "circuitMaxCurrentP1": MAX_CHARGER_A,
            "circuitMaxCurrentP2": MAX_CHARGER_A,
            "circuitMaxCurrentP3": MAX_CHARGER_A,
            "enableIdleCurrent": settings["enableIdleCurrent"],
            "limitToSinglePhaseCharging": settings["limitToSinglePhaseCharging"],
            "phaseMode": settings["phaseMode"],
            "localNodeType": 1,  # Master
            "localAuthorizationRequired": False,
            "localRadioForAuthorizationRequired": False,
            "localPreAuthorizeEnabled": False,
            "localAuthorizeOfflineEnabled": False,
            "allowOfflineTxForUnknownId": False,
            "maxChargerCurrent": settings["maxChargerCurrent"],
            "ledStripBrightness": settings["ledStripBrightness"],
            "chargingSchedule": None,
        }

    def _state(self) -> dict[str, Any]:
        """The former ``ChargerStateDTO`` (§1.2), as ``sites/{id}/state`` still carries it."""
        observed = self._observed()
        names = {
            109: "chargerOpMode",
            120: "totalPower",
            114: "outputCurrent",
            48: "dynamicChargerCurrent",
            110: "outputPhase",
            111: "dynamicCircuitCurrentP1",
            112: "dynamicCircuitCurrentP2",
            113: "dynamicCircuitCurrentP3",
            183: "inCurrentT3",
            184: "inCurrentT4",
            185: "inCurrentT5",
        }
        state: dict[str, Any] = {name: observed[i][1] for i, name in names.items()}
        offered, _ = self._limit()
        reason = 0
        if offered < MIN_CURRENT_A:  # chargers.md §1.2: 2 dynamic circuit limit, 52 dynamic charger limit
            reason = 52 if self.dynamic_charger_a < MIN_CURRENT_A else 2
        state.update(reasonForNoCurrent=reason, isOnline=True, cableRating=MAX_CHARGER_A, errorCode=0)
        return state

    # -- device state -----------------------------------------------------------------------------

    def _limit(self) -> tuple[float, int]:
        """The offered current per phase in A and the phases: the lowest of the charger's limits."""
        p1, p2, p3 = self.circuit_a
        phases, circuit = (1, p1) if p2 == 0 and p3 == 0 else (3, min(p1, p2, p3))
        max_a = as_amps(self.settings["maxChargerCurrent"])
        return min(self.dynamic_charger_a, circuit, max_a, MAX_CHARGER_A), phases

    def _offer(self) -> None:
        current, phases = self._limit()
        if not self.offers or self.offers[-1][1:] != (current, phases):
            self.offers.append((self.clock(), current, phases))
        if self._paused_by_command and current >= MIN_CURRENT_A:  # resumed from its own pause
            self._paused_by_command = False
            self.site.wake_car()
        self.site.offer(current, phases)

    def _observed(self) -> dict[int, tuple[int, object]]:
        """Observation id → (dataType, value) now, or frozen under ``STALE`` (chargers.md §1.2)."""
        state = self._frozen[0] if self._frozen is not None else self.site.state()
        offered, _ = self._limit()
        drawing = state.car_connected and state.car_current_a > 0
        if not state.car_connected:
            op_mode = 1  # Disconnected
        elif drawing:
            op_mode = 3  # Charging
        elif offered < MIN_CURRENT_A:
            op_mode = 2  # AwaitingStart: paused or limited by the EVSE
        elif state.car_soc_pct >= self.site.car.soc_target_pct:
            op_mode = 4  # Completed
        else:
            op_mode = 6  # ReadyToCharge: waiting for the car
        drawn = [state.car_current_a if i < state.car_phases else 0.0 for i in range(3)]
        output_phase = {0: 0, 1: 10, 3: 30}.get(state.car_phases, 0)
        p1, p2, p3 = self.circuit_a
        power_kw = GARBAGE_TOTAL_POWER_KW if self.faults.active(Fault.GARBAGE) else state.car_power_w / 1000
        return {
            109: (4, op_mode),
            120: (3, power_kw),  # kW
            114: (3, offered if state.car_connected else 0.0),
            48: (3, self.dynamic_charger_a),
            38: (4, 2),
            110: (4, output_phase),
            111: (3, float(p1)),
            112: (3, float(p2)),
            113: (3, float(p3)),
            183: (3, drawn[0]),
            184: (3, drawn[1]),
            185: (3, drawn[2]),
        }
