"""The OpenAPI document's part for the plan chart (:mod:`pvcharge.api.plan_chart`): its schema and paths,
merged into :func:`pvcharge.api.openapi.openapi_document`."""

from __future__ import annotations

from typing import Any

from pvcharge.api.openapi import LOADPOINT_NAME, _closed, _json, _num
from pvcharge.api.plans import NO_PLANS


def _kwh(description: str) -> dict[str, Any]:
    return _num(f"{description}, in kWh", minimum=0)


def _pct(description: str) -> dict[str, Any]:
    return {"type": ["number", "null"], "minimum": 0, "maximum": 100, "description": description}


_SOURCE = _closed(
    {
        "name": {"type": "string", "description": "the source, e.g. 'tariff tibber', 'forecast open-meteo'"},
        "fetched_s": _num("when its last good answer came (Unix s); null before one", nullable=True),
        "last_error": {
            "type": ["string", "null"],
            "description": "why the last fetch failed; null after a success",
        },
    },
    "a forecast or tariff source; null when none is configured",
    nullable=True,
)

SLOT = _closed(
    {
        "start_s": _num("the 15-min slot's start (Unix s)"),
        "pv_forecast_w": _num("the PV power forecast, in W; null without a forecast", nullable=True),
        "surplus_w": _num(
            "the surplus the planner counts on (forecast less base load, corrected, times pv_factor), in W; "
            "null without a forecast",
            nullable=True,
        ),
        "price_per_kwh": _num("the grid price, in currency/kWh; null where none is known", nullable=True),
        "source": {
            "type": ["string", "null"],
            "enum": ["grid", "pv", None],
            "description": "what the plan charges from there: grid (power added), pv (the surplus), null",
        },
        "power_w": _num("the grid-charging power planned, in W (0: left to the pv mode)", minimum=0),
        "pv_kwh": _kwh("energy expected from PV in the slot"),
        "grid_kwh": _kwh("energy expected from the grid in the slot"),
    },
    "one 15-min slot",
)

PLAN_SUMMARY = _closed(
    {
        "deadline_s": _num("the deadline (Unix s)"),
        "deadline": {"type": "string", "description": "the deadline as configured, HH:MM local time"},
        "energy_kwh": _num("the energy target, in kWh; null for a SoC target", nullable=True),
        "soc_pct": _pct("the SoC target, in %; null for an energy target"),
        "capacity_kwh": _num("the car's usable capacity, in kWh (SoC targets)", nullable=True),
        "need_kwh": _kwh("energy still to add at the charger"),
        "charged_kwh": _kwh("energy the car took since it connected"),
        "expected_kwh": _kwh("energy expected by the deadline, PV and grid"),
        "met": {"type": "boolean", "description": "the target is expected to be met by the deadline"},
        "shortfall_kwh": _kwh("what is expected to be missing (0 when met)"),
        "pv_kwh": _kwh("energy expected from PV"),
        "grid_kwh": _kwh("energy expected from the grid"),
        "cost": _num("expected cost: grid energy x price plus PV energy x feed-in, in currency"),
        "latest_start_s": _num("the last start from which full power alone meets the need (Unix s)"),
        "notes": {"type": "array", "items": {"type": "string"}, "description": "fallbacks used, in words"},
        "vehicle_soc_pct": _pct("the car's SoC now, in %; null when the charger does not report it"),
        "expected_soc_pct": _pct("the SoC expected at the deadline, in %; null without a SoC"),
    },
    "the plan in force; null without one (no car, no plan)",
    nullable=True,
)

FORECAST = _closed(
    {
        "now_s": _num("now (Unix s)"),
        "currency": {"type": "string", "description": "the prices' currency (tariff.currency)"},
        "slots": {"type": "array", "items": SLOT, "description": "from now to the deadline, at least 24 h"},
        "plan": PLAN_SUMMARY,
        "prices": _SOURCE,
        "forecast": _SOURCE,
    },
    "the PV forecast, the prices and the plan per 15-min slot, for the status page's chart",
)

FORECAST_SCHEMAS = {"Forecast": FORECAST}


def _forecast_operation(
    guard: dict[str, Any], not_found: dict[str, Any], *, suffix: str = ""
) -> dict[str, Any]:
    """The GET of the plan chart (``suffix`` to the operation id, ``not_found`` the 404)."""
    return {
        "get": {
            "operationId": f"getForecast{suffix}",
            "summary": "PV forecast, prices and the plan per 15-min slot (the status page's plan chart)",
            "responses": {"200": _json("Forecast", "the chart's data"), "404": not_found, **guard},
        }
    }


def forecast_paths(guard: dict[str, Any]) -> dict[str, Any]:
    """The plan chart's paths, the first loadpoint's and each loadpoint's; ``guard``: the answers every
    operation may give (400, 401 or 403)."""
    missing = _json("LoadpointError", "no loadpoint of that name, or no plan service runs for it")
    return {
        "/api/forecast": _forecast_operation(guard, _json("Error", NO_PLANS)),
        "/api/loadpoints/{name}/forecast": {
            "parameters": [LOADPOINT_NAME],
            **_forecast_operation(guard, missing, suffix="OfLoadpoint"),
        },
    }
