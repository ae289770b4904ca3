"""The charge plans over MQTT (:mod:`pvcharge.mqtt`): topics, commands and Home Assistant entities.

Topics (``P`` = ``mqtt.prefix``), with a plan service (``pvcharge run`` always has one)::

    P/plan                JSON of PlanService.describe() (the API's GET /api/plans), retained, QoS 0,
                          when it changes (checked after every control cycle)
    P/plan/set            command: a plan as text ("20 kWh by 07:00", "15 kWh by 18:00 on mon,wed") or
                          JSON ({"energy_kwh": 20, "deadline": "07:00"}); not retained
    P/plan/clear          command: clear the plan set at run time (any payload); not retained

Home Assistant: a ``text`` entity ``plan`` (the plan set at run time in words; type one to set it, an
empty text clears it), a ``button`` ``clear_plan`` and a sensor ``plan_summary`` (the last plan in one
line, e.g. ``plan 20 kWh by 07:00: met (...); from the grid: 02:00–04:00 at ...``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from pvcharge.planning.runtime import TEXT_FORMAT, parse_command
from pvcharge.settings import SettingError

if TYPE_CHECKING:
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


def plan_topics(prefix: str) -> dict[str, str]:
    """``plan``, ``plan_set``, ``plan_clear`` under ``prefix``."""
    return {"plan": f"{prefix}/plan", "plan_set": f"{prefix}/plan/set", "plan_clear": f"{prefix}/plan/clear"}


def entity_topics(object_id: str, prefix: str) -> dict[str, str]:
    """The state/command topics of the plan entity ``object_id``."""
    topics = plan_topics(prefix)
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
