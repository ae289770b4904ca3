"""The OpenAPI document's part for the charge plans (:mod:`pvcharge.api.plans`): their schemas and
paths, merged into :func:`pvcharge.api.openapi.openapi_document`."""

from __future__ import annotations

from typing import Any

from pvcharge.api.openapi import LOADPOINT_NAME, _closed, _json, _num
from pvcharge.api.plans import NO_PLANS
from pvcharge.planning.runtime import DEADLINE_PATTERN, WEEKDAYS_PATTERN

_CLOCK = "Unix time in s, on the daemon's clock"


def _kwh(description: str, *, nullable: bool = False) -> dict[str, Any]:
    return _num(f"{description}, in kWh", nullable=nullable)


def _text(description: str, *, nullable: bool = False) -> dict[str, Any]:
    return {"type": ["string", "null"] if nullable else "string", "description": description}


_DEADLINE = {"type": "string", "pattern": DEADLINE_PATTERN, "description": "local time HH:MM, e.g. 07:00"}
_WEEKDAYS = {
    "type": "string",
    "pattern": WEEKDAYS_PATTERN,
    "description": "the days it repeats on, e.g. mon,wed (without: a one-off for the next deadline)",
}


def _request(properties: dict[str, Any], required: list[str], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": {**properties, "deadline": _DEADLINE, "weekdays": _WEEKDAYS},
        "required": [*required, "deadline"],
        "additionalProperties": False,
    }


PLAN_REQUEST = {
    "description": "the plan to set at run time (replaces the last one set; the config's plans stay)",
    "oneOf": [
        _request(
            {"energy_kwh": {"type": "number", "minimum": 0.1, "maximum": 250, "description": "kWh to add"}},
            ["energy_kwh"],
            "energy to add by the deadline",
        ),
        _request(
            {
                "soc_pct": {"type": "number", "minimum": 1, "maximum": 100, "description": "SoC to reach, %"},
                "capacity_kwh": {
                    "type": "number",
                    "minimum": 5,
                    "maximum": 250,
                    "description": "the car's usable battery capacity, kWh",
                },
            },
            ["soc_pct", "capacity_kwh"],
            "vehicle SoC to reach by the deadline (needs a car that reports its SoC; skipped until then)",
        ),
    ],
}

PLAN_ENTRY = _closed(
    {
        "energy_kwh": _kwh("energy to add", nullable=True),
        "soc_pct": _num("SoC to reach, in %", nullable=True),
        "capacity_kwh": _kwh("the car's usable capacity", nullable=True),
        "deadline": _text("local time HH:MM"),
        "weekdays": _text("the days it applies to, e.g. mon,tue,wed,thu,fri,sat,sun"),
        "timezone": _text("IANA time zone of the deadline; null: the daemon's", nullable=True),
        "text": _text("the plan in words, e.g. 20 kWh by 07:00 on mon,wed (as `pvcharge plan set` takes it)"),
        "source": _text("config (plans:), or who set it at run time: api, mqtt"),
        "once": {"type": "boolean", "description": "a one-off, dropped once its deadline has passed"},
        "next_deadline_s": _num(f"its next deadline, {_CLOCK}; null: passed", nullable=True),
    },
    "a plan in force",
)

PLAN_SLOT = _closed(
    {
        "start_s": _num(f"slot start, {_CLOCK}"),
        "end_s": _num(f"slot end, {_CLOCK}"),
        "power_w": _num("grid charging power planned, in W; 0: PV surplus only (pv mode)", minimum=0),
        "pv_kwh": _kwh("energy expected from PV"),
        "grid_kwh": _kwh("energy expected from the grid"),
        "price_per_kwh": _num("the grid price used, in currency/kWh"),
    },
    "one 15-min slot of the plan",
)

PLAN_RESULT = _closed(
    {
        "made_at_s": _num(f"when the plan was made, {_CLOCK}", nullable=True),
        "need_kwh": _kwh("energy still to add"),
        "deadline_s": _num(f"the deadline, {_CLOCK}"),
        "met": {"type": "boolean", "description": "the target is expected to be met by the deadline"},
        "expected_kwh": _kwh("energy expected by the deadline (PV + grid)"),
        "shortfall_kwh": _kwh("what is expected to be missing (0 if met)"),
        "pv_kwh": _kwh("of it from PV"),
        "grid_kwh": _kwh("of it from the grid"),
        "cost": _num("expected grid cost plus the feed-in given up, in currency"),
        "latest_start_s": _num(f"the last start from which full power alone meets the need, {_CLOCK}"),
        "notes": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the fallbacks in force, in words (no forecast: no PV assumed; no prices: flat)",
        },
        "summary": _text("the plan in one line, as `pvcharge plan` prints it"),
        "slots": {"type": "array", "items": {"$ref": "#/components/schemas/PlanSlot"}},
    },
    "the last plan made (null without a car, or without a plan in force)",
    nullable=True,
)

PLAN_STATE = _closed(
    {
        "plans": {"type": "array", "items": {"$ref": "#/components/schemas/PlanEntry"}},
        "target": _closed(
            {
                "source": _text("where the plan in force comes from"),
                "deadline_s": _num(f"its deadline, {_CLOCK}"),
                "energy_kwh": _kwh("the energy it asks for"),
                "charged_kwh": _kwh("energy the car took towards it so far"),
            },
            "the plan with the nearest deadline (null: none)",
            nullable=True,
        ),
        "plan": {"$ref": "#/components/schemas/PlanResult"},
        "car_connected": {"type": "boolean", "description": "a car is plugged in"},
        "grid_charging": {"type": "boolean", "description": "the plan has raised the mode to fast right now"},
        "loadpoint": _text("the name of the loadpoint the plans charge (main: a charger: config)"),
    },
    "the charge plans in force and the last plan made",
)


def _plan_operations(guard: dict[str, Any], not_found: dict[str, Any], *, suffix: str = "") -> dict[str, Any]:
    """The GET of the plans and the PUT/DELETE of the run-time plan (``suffix`` to the operation ids,
    ``not_found`` the 404); keyed ``plans`` and ``next``."""
    state = _json("PlanState", "the plans in force and the plan made after the change")
    return {
        "plans": {
            "get": {
                "operationId": f"getPlans{suffix}",
                "summary": "the charge plans in force and the last plan made (slots from PV and grid)",
                "responses": {"200": _json("PlanState", "the plans"), "404": not_found, **guard},
            }
        },
        "next": {
            "put": {
                "operationId": f"setPlan{suffix}",
                "summary": "set the plan at run time: a one-off for the next deadline, or repeating on "
                "weekdays; kept across restarts",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PlanRequest"}}},
                },
                "responses": {
                    "200": state,
                    "404": not_found,
                    "413": _json("Error", "the body is larger than 64 KiB"),
                    "422": _json("PlanError", "not a plan (the error names the key)"),
                    **guard,
                },
            },
            "delete": {
                "operationId": f"clearPlan{suffix}",
                "summary": "clear the plan set at run time (the config's plans stay)",
                "responses": {"200": state, "404": not_found, **guard},
            },
        },
    }


def plan_paths(guard: dict[str, Any]) -> dict[str, Any]:
    """The plans' paths, the first loadpoint's and each loadpoint's; ``guard``: the answers every
    operation may give (400, 401 or 403)."""
    first = _plan_operations(guard, _json("Error", NO_PLANS))
    name = {"parameters": [LOADPOINT_NAME]}
    missing = _json("LoadpointError", "no loadpoint of that name, or no plan service runs for it")
    each = _plan_operations(guard, missing, suffix="OfLoadpoint")
    return {
        "/api/plans": first["plans"],
        "/api/plans/next": first["next"],
        "/api/loadpoints/{name}/plans": {**name, **each["plans"]},
        "/api/loadpoints/{name}/plans/next": {**name, **each["next"]},
    }


PLAN_SCHEMAS: dict[str, Any] = {
    "PlanRequest": PLAN_REQUEST,
    "PlanEntry": PLAN_ENTRY,
    "PlanSlot": PLAN_SLOT,
    "PlanResult": PLAN_RESULT,
    "PlanState": PLAN_STATE,
    "PlanError": _closed(
        {
            "error": _text("what is wrong, naming the key"),
            "example": {"type": "object", "description": "a valid plan"},
        },
        "a plan that cannot be set",
    ),
}
