"""The MQTT topic schema (:class:`Topics`) and the Home Assistant discovery payloads of the MQTT bridge.

Home Assistant entities, all in one device (identifiers ``[N]``, name "pvcharge", sw_version), all
available while ``P/availability`` is "online", all reading ``P/status`` through a ``value_template``
(``None``, i.e. unknown, while there is no reading yet): sensors ``grid_power``, ``pv_power``,
``battery_power``, ``house_power``, ``car_power``, ``surplus`` (W, device_class power, state_class
measurement), ``battery_soc`` (%, battery), ``car_current`` and ``offered_current`` (A, current),
``phases``, ``reason`` (diagnostic); binary sensors ``car_connected`` (plug) and ``charging``
(battery_charging); a select ``mode`` (options off/pv/minpv/fast, state ``P/mode``, command
``P/mode/set``).  With a session history also ``today_car_energy`` and ``last_session_energy`` (kWh,
device_class energy, state_class total_increasing) and ``today_solar_share`` and
``last_session_solar_share`` (%: PV and home battery over the car's energy), reading ``P/energy``.
With a plan service also the plan's entities (:data:`pvcharge.mqtt_plans.PLAN_ENTITIES`); with several
loadpoints one device per loadpoint (:mod:`pvcharge.mqtt_loadpoints`), with its own energy entities.

The topics (``P``, ``D``, ``N``) are listed in :mod:`pvcharge.mqtt`, which publishes these payloads,
keeps the record of what it published and removes what it no longer publishes.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from pvcharge import __version__
from pvcharge import mqtt_loadpoints as lp
from pvcharge.config import MqttConfig
from pvcharge.control.config import MODES
from pvcharge.mqtt_plans import PLAN_ENTITIES, entity_topics

ONLINE = "online"  #: ``P/availability`` while the bridge is connected
OFFLINE = "offline"  #: ``P/availability`` otherwise (also the last will)


def node_id(prefix: str) -> str:
    """Home Assistant's node id for ``prefix`` (discovery topics allow ``[A-Za-z0-9_-]`` only)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", prefix)


@dataclass(frozen=True)
class Topics:
    """Every topic of one installation (see the :mod:`pvcharge.mqtt` module docstring)."""

    availability: str
    status: str
    mode: str
    mode_set: str
    energy: str
    record: str
    sync: str
    ha_status: str
    discovery_prefix: str
    node: str

    @classmethod
    def of(cls, config: MqttConfig) -> Topics:
        p = config.prefix
        return cls(
            availability=f"{p}/availability",
            status=f"{p}/status",
            mode=f"{p}/mode",
            mode_set=f"{p}/mode/set",
            energy=f"{p}/energy",
            record=f"{p}/discovery",
            sync=f"{p}/discovery/sync",
            ha_status=f"{config.discovery_prefix}/status",
            discovery_prefix=config.discovery_prefix,
            node=node_id(p),
        )

    def config_topic(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node}/{object_id}/config"


def _value(section: str | None, key: str) -> str:
    """A template for one value of the status JSON; ``None`` (HA: unknown) while its section is null."""
    if section is None:
        return f"{{{{ value_json.{key} }}}}"
    return f"{{{{ value_json.{section}.{key} if value_json.{section} else None }}}}"


def _flag(section: str, key: str) -> str:
    return f"{{{{ ('ON' if value_json.{section}.{key} else 'OFF') if value_json.{section} else 'None' }}}}"


def _sensor(
    name: str,
    section: str | None,
    key: str,
    *,
    unit: str,
    precision: int,
    device_class: str | None = None,
    state_class: str = "measurement",
    icon: str | None = None,
) -> dict[str, Any]:
    """A numeric sensor reading ``value_json.<section>.<key>``."""
    fields: dict[str, Any] = {
        "name": name,
        "value_template": _value(section, key),
        "unit_of_measurement": unit,
        **({"device_class": device_class} if device_class else {}),
        "state_class": state_class,
        **({"icon": icon} if icon else {}),
        "suggested_display_precision": precision,
    }
    return fields


def _power(name: str, section: str | None, key: str) -> dict[str, Any]:
    return _sensor(name, section, key, unit="W", device_class="power", precision=0)


def _current(name: str, section: str, key: str) -> dict[str, Any]:
    return _sensor(name, section, key, unit="A", device_class="current", precision=1)


#: (component, object_id, entity-specific fields) of every Home Assistant entity
ENTITIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("sensor", "grid_power", _power("Grid power", "site", "grid_power_w")),
    ("sensor", "pv_power", _power("PV power", "site", "pv_power_w")),
    ("sensor", "battery_power", _power("Home battery power", "site", "battery_power_w")),
    ("sensor", "house_power", _power("House power", "site", "house_power_w")),
    ("sensor", "car_power", _power("Car power", "charger", "power_w")),
    ("sensor", "surplus", _power("Surplus", None, "available_w")),
    (
        "sensor",
        "battery_soc",
        {
            "name": "Home battery SoC",
            "value_template": _value("site", "battery_soc_pct"),
            "unit_of_measurement": "%",
            "device_class": "battery",
            "state_class": "measurement",
            "suggested_display_precision": 0,
        },
    ),
    ("sensor", "car_current", _current("Car current", "charger", "current_a")),
    ("sensor", "offered_current", _current("Offered current", "command", "current_a")),
    (
        "sensor",
        "phases",
        {"name": "Phases", "value_template": _value("command", "phases"), "icon": "mdi:sine-wave"},
    ),
    (
        "sensor",
        "reason",
        {
            "name": "Reason",
            # in words for people (the numbers behind it are in status.reason); HA keeps 255 characters
            "value_template": "{{ (value_json.summary or value_json.reason)[:255] }}",
            "entity_category": "diagnostic",
            "icon": "mdi:information-outline",
        },
    ),
    (
        "binary_sensor",
        "car_connected",
        {"name": "Car connected", "value_template": _flag("charger", "connected"), "device_class": "plug"},
    ),
    (
        "binary_sensor",
        "charging",
        {
            "name": "Charging",
            "value_template": _flag("charger", "charging"),
            "device_class": "battery_charging",
        },
    ),
    ("select", "mode", {"name": "Mode", "options": list(MODES), "icon": "mdi:ev-station"}),
)


def _energy(name: str, section: str, key: str) -> dict[str, Any]:
    return _sensor(
        name, section, key, unit="kWh", device_class="energy", state_class="total_increasing", precision=2
    )


def _share(name: str, section: str) -> dict[str, Any]:
    return _sensor(name, section, "solar_share_pct", unit="%", icon="mdi:solar-power", precision=0)


#: the entities reading ``P/energy`` (with a session history)
ENERGY_ENTITIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("sensor", "today_car_energy", _energy("Car energy today", "today", "car_kwh")),
    ("sensor", "today_solar_share", _share("Car solar share today", "today")),
    ("sensor", "last_session_energy", _energy("Last session energy", "last_session", "energy_kwh")),
    ("sensor", "last_session_solar_share", _share("Last session solar share", "last_session")),
)


def discovery_messages(
    config: MqttConfig,
    *,
    history: bool = False,
    plans: bool = False,
    loadpoints: Sequence[str] = (),
    plan_loadpoints: Collection[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Home Assistant discovery: config topic → payload, for every entity of :data:`ENTITIES` and, with
    ``history`` (a session recorder), of :data:`ENERGY_ENTITIES`, with ``plans`` (a plan service), of
    :data:`pvcharge.mqtt_plans.PLAN_ENTITIES`.  With more than one name in ``loadpoints`` the charger's
    entities move to one device per loadpoint (:mod:`pvcharge.mqtt_loadpoints`), with ``history`` each
    loadpoint's device gets the energy entities too (reading ``P/loadpoints/<name>/energy``; the site's
    stay on ``P/energy``), and with ``plans``
    each loadpoint's device gets the plan entities too, reading and setting its own plan
    (``P/loadpoints/<name>/plan``; ``plan_loadpoints``: only those loadpoints', ``None``: all); the
    site's device keeps the first loadpoint's, as before."""
    topics = Topics.of(config)
    device = {
        "identifiers": [topics.node],
        "name": "pvcharge",
        "manufacturer": "pvcharge",
        "model": "PV surplus charging controller",
        "sw_version": __version__,
    }
    several = len(loadpoints) > 1
    out: dict[str, dict[str, Any]] = {}
    entities = ENTITIES + (ENERGY_ENTITIES if history else ()) + (PLAN_ENTITIES if plans else ())
    for component, object_id, fields in entities:
        if several and (component, object_id, fields) in ENTITIES and object_id not in lp.SITE_ENTITIES:
            continue
        payload = _entity(fields, f"{topics.node}_{object_id}", topics, device)
        if component == "select":
            payload.update(state_topic=topics.mode, command_topic=topics.mode_set)
        elif (component, object_id, fields) in PLAN_ENTITIES:
            payload.update(entity_topics(object_id, config.prefix))
        elif (component, object_id, fields) in ENERGY_ENTITIES:
            payload["state_topic"] = topics.energy
        else:
            payload["state_topic"] = topics.status
        out[topics.config_topic(component, object_id)] = payload
    for name in loadpoints if several else ():
        lp_topics = lp.LoadpointTopics.of(config.prefix, name)
        lp_device = lp.device(topics.node, name, __version__)
        for component, entity, fields in ENTITIES:
            if entity in lp.SITE_ENTITIES:
                continue
            oid = lp.object_id(name, entity)
            payload = _entity(fields, f"{topics.node}_{oid}", topics, lp_device)
            if component == "select":
                payload.update(state_topic=lp_topics.mode, command_topic=lp_topics.mode_set)
            else:
                payload["state_topic"] = lp_topics.status
            out[topics.config_topic(component, oid)] = payload
        for component, entity, fields in ENERGY_ENTITIES if history else ():
            oid = lp.object_id(name, entity)
            payload = _entity(fields, f"{topics.node}_{oid}", topics, lp_device)
            payload["state_topic"] = lp_topics.energy
            out[topics.config_topic(component, oid)] = payload
        if plans and (plan_loadpoints is None or name in plan_loadpoints):
            for component, entity, fields in PLAN_ENTITIES:
                oid = lp.object_id(name, entity)
                payload = _entity(fields, f"{topics.node}_{oid}", topics, lp_device)
                payload.update(entity_topics(entity, config.prefix, name))
                out[topics.config_topic(component, oid)] = payload
    return out


def _entity(fields: dict[str, Any], unique_id: str, topics: Topics, device: dict[str, Any]) -> dict[str, Any]:
    """One entity's discovery payload without its state and command topics."""
    return {
        **fields,
        "unique_id": unique_id,
        "availability_topic": topics.availability,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": device,
        "origin": {"name": "pvcharge", "sw_version": __version__},
    }
