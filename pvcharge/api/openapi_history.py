"""The OpenAPI document's part for the session history (:mod:`pvcharge.api.history`): its schemas and
paths, merged into :func:`pvcharge.api.openapi.openapi_document`."""

from __future__ import annotations

from typing import Any

from pvcharge.api.history import HISTORY_DAYS
from pvcharge.api.openapi import _closed, _int, _json, _num


def _kwh(description: str) -> dict[str, Any]:
    return _num(f"{description}, in kWh", minimum=0)


def _local_time(description: str, *, nullable: bool = False) -> dict[str, Any]:
    return {
        "type": ["string", "null"] if nullable else "string",
        "format": "date-time",
        "description": f"{description}: ISO 8601 with the local offset, e.g. 2025-06-15T08:00:05+02:00",
    }


def _share(formula: str) -> dict[str, Any]:
    return {
        "type": ["number", "null"],
        "minimum": 0,
        "maximum": 1,
        "description": f"{formula}, 0–1: the car's energy from the sun; null before any energy",
    }


SESSION = _closed(
    {
        "id": {"type": ["integer", "null"], "description": "the row id; null until first stored"},
        "loadpoint": {"type": "string", "description": "the loadpoint (the charger's type, e.g. 'warp')"},
        "start": _local_time("plug-in (or the first power when the charger cannot see the car)"),
        "end": _local_time("unplug; null while the session is open", nullable=True),
        "open": {"type": "boolean", "description": "the car is still plugged in"},
        "duration_s": _int("from start to end (or to the last cycle while open), in s"),
        "energy_kwh": _kwh("energy charged"),
        "pv_kwh": _kwh("of it from PV (after the house)"),
        "battery_kwh": _kwh("of it from the home battery"),
        "grid_kwh": _kwh("of it from the grid"),
        "solar_share": _share("(pv + battery) / energy"),
        "peak_power_w": _int("the highest charging power, in W"),
        "phases": {
            "type": "array",
            "items": {"type": "integer", "enum": [1, 2, 3]},
            "description": "the phase counts the car drew on",
        },
        "starts": _int("commands written going from pause to a current"),
        "phase_switches": _int("commands written changing the phases"),
        "cost": _num("grid energy × tariff.grid_price_per_kwh, in currency", minimum=0),
        "savings": _num("(pv + battery) × (tariff.grid_price_per_kwh − tariff.feed_in_per_kwh), in currency"),
        "currency": {"type": "string", "description": "tariff.currency"},
    },
    "one charging session",
)

DAY = _closed(
    {
        "day": {"type": "string", "format": "date", "description": "the local day, YYYY-MM-DD"},
        "pv_kwh": _kwh("PV produced"),
        "export_kwh": _kwh("exported to the grid"),
        "import_kwh": _kwh("imported from the grid"),
        "battery_charge_kwh": _kwh("into the home battery"),
        "battery_discharge_kwh": _kwh("out of the home battery"),
        "car_kwh": _kwh("charged into the car"),
        "car_pv_kwh": _kwh("the car's energy from PV"),
        "car_battery_kwh": _kwh("the car's energy from the home battery"),
        "car_grid_kwh": _kwh("the car's energy from the grid"),
        "solar_share": _share("(car_pv + car_battery) / car"),
    },
    "the site's energy of one local day (integrated from the meter's readings each cycle)",
)


def _column(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "number"}, "description": description}


POWER = _closed(
    {
        "t_s": _column("each minute's start, Unix time in s"),
        "pv_w": _column("PV production, mean W over the minute"),
        "house_w": _column("the house without the car, mean W"),
        "car_w": _column("the car, mean W"),
        "grid_w": _column("grid exchange, mean W: > 0 import, < 0 export"),
        "battery_w": _column("home battery, mean W: > 0 discharging, < 0 charging"),
    },
    "the power per minute as columns of equal length (minutes without readings are left out)",
)


def _bounds(things: str) -> list[dict[str, Any]]:
    """The ``from`` and ``to`` parameters of a route answering ``things`` (e.g. "sessions started")."""
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {
                "anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]
            },
            "description": f"{things} {what}: a local date YYYY-MM-DD ({day}) or an RFC 3339 time",
        }
        for name, what, day in (("from", "at or after", "its start"), ("to", "before", "the day included"))
    ]


_LOADPOINT = {
    "name": "loadpoint",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "only this loadpoint's sessions",
}
_NO_HISTORY = "no session history: sessions.enabled is false or the database could not be opened"


def history_paths(guard: dict[str, Any]) -> dict[str, Any]:
    """The history's paths; ``guard``: the answers every operation may give (400, 401 or 403)."""
    return {
        "/api/sessions": {
            "get": {
                "operationId": "getSessions",
                "summary": "charging sessions, oldest first, the open one with its latest values",
                "parameters": [*_bounds("sessions started"), _LOADPOINT],
                "responses": {
                    "200": _json("Sessions", "the sessions"),
                    "404": _json("Error", _NO_HISTORY),
                    **guard,
                },
            }
        },
        "/api/sessions.csv": {
            "get": {
                "operationId": "getSessionsCsv",
                "summary": "the sessions as CSV (start, end, loadpoint, energy_kwh, pv_kwh, battery_kwh, "
                "grid_kwh, solar_share, peak_power_w, phases, starts, phase_switches, cost, savings, "
                "currency)",
                "parameters": [*_bounds("sessions started"), _LOADPOINT],
                "responses": {
                    "200": {
                        "description": "the CSV, one header row",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    },
                    "404": _json("Error", _NO_HISTORY),
                    **guard,
                },
            }
        },
        "/api/energy": {
            "get": {
                "operationId": "getEnergy",
                "summary": f"the site's energy per local day (default: the last {HISTORY_DAYS}) and today",
                "parameters": _bounds("days"),
                "responses": {
                    "200": _json("Energy", "today and the days asked for, oldest first"),
                    "404": _json("Error", _NO_HISTORY),
                    **guard,
                },
            }
        },
        "/api/power": {
            "get": {
                "operationId": "getPower",
                "summary": "the mean power per minute (default: today so far), for the page's chart",
                "parameters": _bounds("minutes"),
                "responses": {
                    "200": _json("Power", "one column per series, oldest minute first"),
                    "404": _json("Error", _NO_HISTORY),
                    **guard,
                },
            }
        },
    }


HISTORY_SCHEMAS: dict[str, Any] = {
    "Session": SESSION,
    "Sessions": _closed(
        {"sessions": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}}},
        "sessions started within the bounds",
    ),
    "Day": DAY,
    "Power": POWER,
    "Energy": _closed(
        {
            "today": {"$ref": "#/components/schemas/Day"},
            "days": {"type": "array", "items": {"$ref": "#/components/schemas/Day"}},
        },
        "the site's energy: today so far and per day",
    ),
}
