"""The WARP3 charger behind the WARP emulator (:class:`~pvcharge.sim.warp.WarpEmulator`): its current slots,
what it offers the car of the :class:`~pvcharge.sim.site.SiteModel`, its control-pilot disconnect, its
phase switch and the state it reports (reference ``chargers.md`` §3.2–§3.4; Tinkerforge esp32-firmware
``software/src/modules/{evse_common,power_manager}``).

- ``allowed_charging_current`` (mA) is the minimum over the active slots: 0 incoming cable and 1
  outgoing cable (32000 each), 5 global current (32000), 8 external current; the site is offered it in A
  on ``phases_current``, 0 A while the control pilot is disconnected, nothing new during a phase switch.
- Slot 8 starts blocked at 0 mA; ``external_enabled`` false sets it to 32000 mA (firmware since Nov 2024).
- A phase switch walks ``phases_state`` 1→7, :data:`PHASE_STEP_S` each, on the site's clock, then ends
  with the new ``phases_current`` and offers the site the current on it (:meth:`WarpCharger._follow_switch`).
- Reconnecting the control pilot wakes a sleeping car (:meth:`SiteModel.wake_car`).

A write the firmware would refuse raises :class:`BadRequest` with the plain-text reason of its 400.  The
HTTP side (paths, methods, JSON bodies, Digest login, fault injection) is :mod:`pvcharge.sim.warp`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pvcharge.sim.faults import Fault, FaultSwitch
from pvcharge.sim.site import SiteModel, SiteState

#: valid external currents: 0 (blocked) or this range, in mA (chargers.md §3.2).
MIN_CURRENT_MA = 6000
MAX_CURRENT_MA = 32000
_UINT16_MAX = 65535  # writes above are rejected with 400, below are stored unchecked (chargers.md §3.4)

_SLOT_COUNT = 18  # slots 0..17, chargers.md §3.2
_SLOT_INCOMING_CABLE = 0
_SLOT_OUTGOING_CABLE = 1
_SLOT_GLOBAL = 5
_SLOT_EXTERNAL = 8
_CABLE_MA = 32000  # slots 0 and 1 as a 32-A cable sets them (the emulator's choice)

#: how long each ``phases_state`` 1..7 of a switch lasts, in simulated s (7 s in all: the emulator's choice;
#: chargers.md §3.5 asks for "a few seconds", the states are §3.3's).
PHASE_STEP_S = 1.0
_PHASES_STATE_LAST = 7  # contactor on, the last state of a switch (chargers.md §3.3)

#: ``iec61851_state`` under ``GARBAGE``: no such state (chargers.md §3.3 knows 0–4).
GARBAGE_IEC_STATE = 7
#: ``meter/values.power`` under ``GARBAGE``, in W: a charger does not feed 5 kW back.
GARBAGE_POWER_W = -5000.0


class BadRequest(Exception):
    """A write the firmware would reject with HTTP 400; the message is the plain-text reason."""


@dataclass(frozen=True)
class _Switch:
    """A phase switch in progress: to ``phases``, started at site time ``started_s``."""

    phases: int
    started_s: float


def _uint16(body: dict[str, Any], name: str) -> int:
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{name}: expected an integer, got {json.dumps(value)}")
    if not 0 <= value <= _UINT16_MAX:
        raise BadRequest(f"{name}: value {value} out of range (Uint16, 0..{_UINT16_MAX})")
    return value


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body[name]
    if not isinstance(value, bool):
        raise BadRequest(f"{name}: expected a boolean, got {json.dumps(value)}")
    return value


class WarpCharger:
    """One WARP3 charger at the simulated site: its slots, offer, control pilot, phase switch and reports.

    The state and semantics half of :class:`~pvcharge.sim.warp.WarpEmulator`, which inherits it and serves
    it over HTTP; its knobs and attributes are documented there (``external_control_unavailable``,
    ``phases_info_single_phase_car``, ``management_enabled``, ``switch_log``, ``cp_log``).

    Args:
        site: the simulated site; ``site.offer()`` on writes, ``site.state()`` for the reports.
        phases_connected: phases the charger is wired with (1 or 3).
        phase_switch: set up for external phase switching; needs ``phases_connected`` 3.

    Raises:
        ValueError: ``phases_connected`` is not 1 or 3, or ``phase_switch`` with ``phases_connected`` 1.
    """

    faults: FaultSwitch  #: the serving emulator's (``GARBAGE`` changes the reports)

    def __init__(self, site: SiteModel, *, phases_connected: int, phase_switch: bool) -> None:
        if phases_connected not in (1, 3):
            raise ValueError(f"phases_connected must be 1 or 3, got {phases_connected}")
        if phase_switch and phases_connected != 3:
            raise ValueError("phase_switch needs phases_connected 3 (chargers.md §3.4: phases_connected > 1)")
        self.site = site
        self.phases_connected = phases_connected
        self.external_control_unavailable = False
        self.phases_info_single_phase_car = False
        self.management_enabled = False
        self.switch_log: list[tuple[float, int]] = []
        self.cp_log: list[tuple[float, bool]] = []
        self._cp_disconnected = False
        self._external_ma = 0
        self._external_enabled = True
        self._global_ma = 32000
        self._phase_auto_switch = True
        self._phases_current = phases_connected
        self._phases_wanted = 0
        self._switch: _Switch | None = None
        self._frozen: SiteState | None = None  #: the site state under STALE

    def _state(self) -> SiteState:
        """The site state the box reports: live, or frozen under ``STALE``."""
        return self._frozen if self._frozen is not None else self.site.state()

    # -- device state -----------------------------------------------------------------------------

    def _store_external_current(self, body: dict[str, Any]) -> None:
        self._external_ma = _uint16(body, "current")
        self._offer()

    def _store_external_enabled(self, body: dict[str, Any]) -> None:
        self._external_enabled = _bool(body, "enabled")
        if not self._external_enabled:
            self._external_ma = MAX_CURRENT_MA  # since Nov 2024: "false" sets slot 8 to 32 A
        self._offer()

    def _store_cp_disconnect(self, body: dict[str, Any]) -> None:
        disconnect = _bool(body, "disconnect")
        if disconnect == self._cp_disconnected or self.management_enabled:
            return
        self._cp_disconnected = disconnect
        self.cp_log.append((self.site.now, disconnect))
        if not disconnect:
            self.site.wake_car()  # the car saw an unplug and a plug-in
        self._offer()

    def _active_slots(self) -> dict[int, int]:
        """Active slot index → its ``max_current`` in mA."""
        return {
            _SLOT_INCOMING_CABLE: _CABLE_MA,
            _SLOT_OUTGOING_CABLE: _CABLE_MA,
            _SLOT_GLOBAL: self._global_ma,
            _SLOT_EXTERNAL: self._external_ma,
        }

    def _slots(self) -> object:
        active = self._active_slots()
        return [
            {
                "max_current": active.get(i, MAX_CURRENT_MA),
                "active": i in active,
                "clear_on_disconnect": False,
            }
            for i in range(_SLOT_COUNT)
        ]

    def _allowed_ma(self) -> int:
        """``allowed_charging_current``: the minimum over the active slots, in mA."""
        return min(self._active_slots().values())

    def _offer(self) -> None:
        """Offer the site the allowed current on the current phases; not during a phase switch."""
        if self._switch is None:
            current_a = 0.0 if self._cp_disconnected else self._allowed_ma() / 1000
            self.site.offer(current_a, self._phases_current)

    def _evse_state(self) -> object:
        state = self._state()
        allowed_ma = self._allowed_ma()
        drawing = state.car_connected and state.car_current_a > 0
        if not state.car_connected:
            iec, charger = 0, 0  # A, not connected
        elif drawing:
            iec, charger = 2, 3  # C, charging
        elif allowed_ma >= MIN_CURRENT_MA:
            iec, charger = 1, 2  # B, ready to charge
        else:
            iec, charger = 1, 1  # B, waiting for release
        if self.faults.active(Fault.GARBAGE):
            iec = GARBAGE_IEC_STATE
        return {
            "iec61851_state": iec,
            "charger_state": charger,
            "contactor_state": 3 if drawing else 1,  # 3: live before and after, 1: only before
            "contactor_error": 0,
            "allowed_charging_current": allowed_ma,
            "error_state": 0,
            "lock_state": 0,  # fixed cable: no socket lock
            "dc_fault_current_state": 0,
        }

    def _meter_values(self) -> object:
        power_w = GARBAGE_POWER_W if self.faults.active(Fault.GARBAGE) else self._state().car_power_w
        energy_kwh = self.site.energy.car_wh / 1000
        return {"power": power_w, "energy_rel": energy_kwh, "energy_abs": energy_kwh}

    def _meter_phases(self) -> object:
        phases = self._state().car_phases
        return {
            "phases_connected": [i < self.phases_connected for i in range(3)],
            "phases_active": [i < phases for i in range(3)],
        }

    # -- phase switching --------------------------------------------------------------------------

    def _store_phase_auto_switch(self, body: dict[str, Any]) -> None:
        self._phase_auto_switch = _bool(body, "enabled")

    def _phases_state(self) -> int:
        """0 idle, else 1..7 by the time since the switch started (after :meth:`_follow_switch`)."""
        if self._switch is None:
            return 0
        elapsed_s = self.site.state().t_s - self._switch.started_s
        return min(_PHASES_STATE_LAST, 1 + int(elapsed_s // PHASE_STEP_S))

    def _follow_switch(self) -> None:
        """End a switch whose walk is over: new ``phases_current``, and the site gets the offer."""
        switch = self._switch
        if switch is None:
            return
        if self.site.state().t_s - switch.started_s >= _PHASES_STATE_LAST * PHASE_STEP_S:
            self._switch = None
            self._phases_current = switch.phases
            self._offer()

    def _external_control(self) -> int:
        if self.external_control_unavailable:
            return 2
        if self._switch is not None:
            return 3
        return 1 if self._phases_wanted == 0 else 0

    def _low_level_state(self) -> object:
        return {
            "phases_current": self._phases_current,
            "phases_requested": self._switch.phases if self._switch else self._phases_current,
            "phases_state": self._phases_state(),
            "phases_info": 1 if self.phases_info_single_phase_car else 0,
        }

    def _store_phases_wanted(self, body: dict[str, Any]) -> None:
        phases = body["phases_wanted"]
        if not isinstance(phases, int) or isinstance(phases, bool) or phases not in (1, 3):
            raise BadRequest("Invalid value for phases_wanted! Only 1 or 3 are allowed.")
        if self.external_control_unavailable:
            raise BadRequest("Phase switching is currently unavailable.")
        if self._switch is not None:
            if phases == self._switch.phases:
                return  # the same request while busy is ignored
            raise BadRequest("Phase switching in progress.")
        if phases == 3 and self.phases_info_single_phase_car:
            raise BadRequest("Can't switch to three phases: the vehicle charges on one phase only.")
        self._phases_wanted = phases
        if phases != self._phases_current:
            started_s = self.site.state().t_s
            self._switch = _Switch(phases, started_s)
            self.switch_log.append((started_s, phases))
