"""The charge plans over MQTT (:mod:`pvcharge.mqtt`): topics, commands and Home Assistant entities.

Topics (``P`` = ``mqtt.prefix``), with a plan service (``pvcharge run`` always has one)::

    P/plan                JSON of PlanService.describe() (the API's GET /api/plans), retained, QoS 0,
                          when it changes (checked after every control cycle)
    P/plan/set            command: a plan as text ("20 kWh by 07:00", "15 kWh by 18:00 on mon,wed") or
                          JSON ({"energy_kwh": 20, "deadline": "07:00"}); not retained
    P/plan/clear          command: clear the plan set at run time (any payload); not retained
    P/loadpoints/<name>/plan, .../plan/set, .../plan/clear
                          the same for each loadpoint, with several loadpoints (the topics above
                          keep meaning the first)

Home Assistant: a ``text`` entity ``plan`` (the plan set at run time in words; type one to set it, an
empty text clears it), a ``button`` ``clear_plan`` and a sensor ``plan_summary`` (the last plan in one
line, e.g. ``plan 20 kWh by 07:00: met (...); from the grid: 02:00–04:00 at ...``), on the site's
device for the first loadpoint; with several loadpoints the same three on each loadpoint's device
(object ids ``lp_<name>_plan``, ...) for its own plan.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from pvcharge.planning.runtime import TEXT_FORMAT, parse_command
from pvcharge.settings import SettingError

if TYPE_CHECKING:
    import aiomqtt

    from pvcharge.planning.service import PlanService

log = structlog.get_logger("pvcharge.mqtt")

#: the plan set at run time, in words ('' without one): the text entity's state
PLAN_TEXT_TEMPLATE = (
    "{{ (value_json.plans | rejectattr('source', 'eq', 'config') | map(attribute='text') | list + [''])[0] }}"
)

#: (component, object_id, entity-specific fields) of the plans' Home Assistant entities
PLAN_ENTITIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "text",
        "plan",
        {
            "name": "Charge plan",
            "value_template": PLAN_TEXT_TEMPLATE,
            "min": 0,
            "max": 255,
            "icon": "mdi:calendar-clock",
        },
    ),
    ("button", "clear_plan", {"name": "Clear charge plan", "payload_press": "clear", "icon": "mdi:close"}),
    (
        "sensor",
        "plan_summary",
        {
            "name": "Charge plan summary",
            "value_template": "{{ (value_json.plan.summary if value_json.plan else 'no plan now')[:255] }}",
            "icon": "mdi:calendar-check",
        },
    ),
)


def plan_topics(prefix: str, loadpoint: str | None = None) -> dict[str, str]:
    """``plan``, ``plan_set``, ``plan_clear`` under ``prefix`` (with ``loadpoint``: under
    ``prefix/loadpoints/<loadpoint>``)."""
    if loadpoint is not None:
        prefix = f"{prefix}/loadpoints/{loadpoint}"
    return {"plan": f"{prefix}/plan", "plan_set": f"{prefix}/plan/set", "plan_clear": f"{prefix}/plan/clear"}


def entity_topics(object_id: str, prefix: str, loadpoint: str | None = None) -> dict[str, str]:
    """The state/command topics of the plan entity ``object_id`` (of ``loadpoint``: see
    :func:`plan_topics`)."""
    topics = plan_topics(prefix, loadpoint)
    if object_id == "plan":
        return {"state_topic": topics["plan"], "command_topic": topics["plan_set"]}
    if object_id == "clear_plan":
        return {"command_topic": topics["plan_clear"]}
    return {"state_topic": topics["plan"]}


def plan_command(plans: PlanService, topic: str, payload: bytes, *, clear: bool) -> None:
    """Take a ``plan/set`` or (``clear``) ``plan/clear`` message (never raises: a bad one is logged).
    An empty ``plan/set`` (Home Assistant's text entity emptied) clears too."""
    text = payload[:512].decode("utf-8", "replace").strip()
    if clear or not text:
        plans.clear_plan(source="mqtt")
        return
    try:
        entry, repeating = parse_command(text)
    except SettingError as exc:
        log.warning(
            "mqtt_command_ignored",
            topic=topic,
            payload=text[:100],
            reason=f"{exc.key}: {exc.problem}; expected {TEXT_FORMAT} or JSON",
        )
        return
    try:
        plans.set_plan(entry, source="mqtt", repeating=repeating)
    except Exception as exc:
        log.error("mqtt_command_failed", topic=topic, error=repr(exc), exc_info=exc)


class PlanTopics:
    """The bridge's plan topics: each state topic's and command topic's plan service, and what was
    published on this connection.

    Args:
        prefix: ``mqtt.prefix``.
        by_loadpoint: each loadpoint's service by name (``None`` or without the first loadpoint's: no
            plan topics at all); the first loadpoint's on ``P/plan``, and with more than one in
            ``loadpoints`` each one's on ``P/loadpoints/<name>/plan``.
        loadpoints: the names of the daemon's loadpoints, the first loadpoint's first.
    """

    def __init__(
        self,
        prefix: str,
        by_loadpoint: Mapping[str, PlanService] | None,
        loadpoints: Sequence[str],
    ) -> None:
        self.states: dict[str, PlanService] = {}  #: state topic → its service
        self.commands: dict[str, tuple[PlanService, bool]] = {}  #: command topic → (service, clear)
        self._published: dict[str, str] = {}
        self.loadpoints: list[str] = []  #: the loadpoints with their own topics
        by_loadpoint = by_loadpoint or {}
        #: the first loadpoint's service, on ``P/plan`` (``None``: no plan topics)
        self.first = by_loadpoint.get(loadpoints[0]) if loadpoints else None
        if self.first is None:
            return
        pairs: list[tuple[str | None, PlanService]] = [(None, self.first)]
        if len(loadpoints) > 1:
            pairs += [(name, by_loadpoint[name]) for name in loadpoints if name in by_loadpoint]
        self.loadpoints = [name for name, _ in pairs if name is not None]
        for name, service in pairs:
            topics = plan_topics(prefix, name)
            self.states[topics["plan"]] = service
            self.commands[topics["plan_set"]] = (service, False)
            self.commands[topics["plan_clear"]] = (service, True)

    def subscriptions(self) -> list[tuple[str, int]]:
        """The command topics at QoS 1."""
        return [(topic, 1) for topic in self.commands]

    def reset(self) -> None:
        """A new connection: publish everything again."""
        self._published = {}

    async def publish(self, client: aiomqtt.Client) -> None:
        """Each state topic whose ``describe()`` differs from the last published on this connection."""
        for topic, service in self.states.items():
            payload = json.dumps(service.describe())
            if payload != self._published.get(topic):
                await client.publish(topic, payload, qos=0, retain=True)
                self._published[topic] = payload

    def on_message(self, topic: str, payload: bytes, *, retained: bool) -> bool:
        """Take a plan command (a retained one is refused with a warning); False: not a plan topic."""
        if topic not in self.commands:
            return False
        service, clear = self.commands[topic]
        if retained:
            log.warning(
                "mqtt_command_ignored", topic=topic, reason="retained message; publish without retain"
            )
        else:
            plan_command(service, topic, payload, clear=clear)
        return True
