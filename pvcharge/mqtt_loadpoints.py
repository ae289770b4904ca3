"""Several loadpoints over MQTT (:mod:`pvcharge.mqtt`): per-loadpoint topics and Home Assistant devices.

Only with more than one loadpoint (a ``loadpoints:`` config with several items); a ``charger:`` config
publishes exactly what it did before.  The old topics (``P/status``, ``P/mode``, ``P/mode/set``) keep
meaning the first loadpoint.  Topics (``P`` = ``mqtt.prefix``, ``L`` = a loadpoint's name,
``[a-z0-9_-]``)::

    P/loadpoints/L/status            JSON of the loadpoint's part of the status (:meth:`Loadpoint.status`:
                                     name, priority, mode, command, reason, summary, available_w,
                                     charger, device, writes_blocked, wake_up, writes, starts), retained,
                                     QoS 0, after every control cycle
    P/loadpoints/L/mode              off | pv | minpv | fast, retained, QoS 1, on change
    P/loadpoints/L/offered_current_a the current commanded (A; 0 while paused), retained, on change
    P/loadpoints/L/phases            the phases commanded (1 or 3)
    P/loadpoints/L/current_a         the current the car draws (A, the charger's reading)
    P/loadpoints/L/power_w           the car's power (W, the charger's reading)
    P/loadpoints/L/connected         true | false: a car is plugged in
    P/loadpoints/L/charging          true | false: the car is charging
    P/loadpoints/L/reason            the decision in words (the status' ``summary``)
    P/loadpoints/L/mode/set          command: a mode (not retained), as ``P/mode/set``
    P/loadpoints/L/energy            with a session history: JSON {"today": ..., "last_session": ...} of
                                     this loadpoint (:meth:`pvcharge.sessions.SessionRecorder.summary`
                                     with its name: its car energy today, the site's keys null; its own
                                     latest session, open or closed, or null), retained, QoS 0, on the
                                     cadence of ``P/energy``

The plain value topics are retained and published when they change; ``null`` while there is no
reading (numbers and flags are JSON).

Home Assistant: the site's device (identifiers ``[N]``) keeps the site's sensors (grid, PV, home
battery, house, battery SoC) and the session and plan entities (the first loadpoint's); each loadpoint
is a device of its own (identifiers ``[N_lp_L]``, name ``pvcharge L``, ``via_device`` the site) with
the charger's entities of :data:`pvcharge.mqtt_discovery.ENTITIES` (car power, surplus, car and
offered current, phases, reason, car connected, charging, the mode select) reading
``P/loadpoints/L/status`` and ``P/loadpoints/L/mode``, and its plan's entities
(:data:`pvcharge.mqtt_plans.PLAN_ENTITIES` on ``P/loadpoints/L/plan``) and, with a session history,
its energy entities (:data:`pvcharge.mqtt_discovery.ENERGY_ENTITIES` on ``P/loadpoints/L/energy``;
the site's device keeps them on ``P/energy``, the site's).  Their object ids are
``lp_L_<id>`` under the site's node, so the discovery record and its removal cover them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: the entities of :data:`pvcharge.mqtt_discovery.ENTITIES` that belong to the site's device with several
#: loadpoints; all others are per loadpoint
SITE_ENTITIES = frozenset({"grid_power", "pv_power", "battery_power", "house_power", "battery_soc"})


@dataclass(frozen=True)
class LoadpointTopics:
    """The topics of the loadpoint ``name`` (see the module docstring)."""

    name: str
    base: str

    @classmethod
    def of(cls, prefix: str, name: str) -> LoadpointTopics:
        return cls(name=name, base=f"{prefix}/loadpoints/{name}")

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def mode(self) -> str:
        return f"{self.base}/mode"

    @property
    def mode_set(self) -> str:
        return f"{self.base}/mode/set"

    @property
    def energy(self) -> str:
        return f"{self.base}/energy"

    def value(self, key: str) -> str:
        """The plain value topic ``key`` (a key of :func:`values`)."""
        return f"{self.base}/{key}"

    def all_state(self) -> list[str]:
        """Every retained state topic (for removal)."""
        return [self.status, *(self.value(key) for key in VALUE_KEYS), self.energy]


#: the plain value topics under ``P/loadpoints/L/`` (``mode`` included), in publishing order
VALUE_KEYS = (
    "mode",
    "offered_current_a",
    "phases",
    "current_a",
    "power_w",
    "connected",
    "charging",
    "reason",
)


def values(status: dict[str, Any]) -> dict[str, str]:
    """The plain value topics' payloads (key → text) of one loadpoint's status (:meth:`Loadpoint.status`):
    strings as they are, numbers and flags as JSON, ``null`` while unknown."""
    command = status.get("command") or {}
    charger = status.get("charger") or {}
    raw: dict[str, Any] = {
        "mode": str(status["mode"]),
        "offered_current_a": command.get("current_a"),
        "phases": command.get("phases"),
        "current_a": charger.get("current_a"),
        "power_w": charger.get("power_w"),
        "connected": charger.get("connected"),
        "charging": charger.get("charging"),
        "reason": str(status.get("summary") or status.get("reason") or ""),
    }
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def object_id(name: str, entity: str) -> str:
    """The discovery object id of the loadpoint ``name``'s entity ``entity`` (unique beside the site's)."""
    return f"lp_{name}_{entity}"


def device(node: str, name: str, version: str) -> dict[str, Any]:
    """The Home Assistant device of the loadpoint ``name``, under the site's device ``node``."""
    return {
        "identifiers": [f"{node}_lp_{name}"],
        "name": f"pvcharge {name}",
        "manufacturer": "pvcharge",
        "model": "Loadpoint",
        "sw_version": version,
        "via_device": node,
    }
