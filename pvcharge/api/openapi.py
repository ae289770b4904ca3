"""The OpenAPI 3.1 document of the local HTTP API, served at ``/api/openapi.json``.

Written by hand next to the handlers in :mod:`pvcharge.api.server` and checked against them by
``tests/test_api_schema.py`` (schemathesis): every object is closed (``additionalProperties: false``)
and every key required, so a field added to ``Daemon.status()`` without documenting it here fails
the tests.  Units are in the key names (``_w``, ``_a``, ``_pct``, ``_s``) and in each description;
signs follow the project's convention (``grid_power_w`` > 0 imports, ``battery_power_w`` > 0
discharges).

The session history's schemas and paths are in :mod:`pvcharge.api.openapi_history`, the plans' in
:mod:`pvcharge.api.openapi_plans`.

The document follows the server it describes: with a token configured every operation needs the
bearer scheme (``401`` otherwise); without one, requests whose ``Host`` is not a loopback name are
refused with ``403`` (DNS rebinding).
"""

from __future__ import annotations

from typing import Any

from pvcharge import __version__
from pvcharge.control.config import MODES


def _num(description: str, *, nullable: bool = False, minimum: float | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": ["number", "null"] if nullable else "number",
        "description": description,
    }
    if minimum is not None:
        schema["minimum"] = minimum
    return schema


def _int(description: str, *, minimum: int = 0, maximum: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum, "description": description}
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def _closed(properties: dict[str, Any], description: str, *, nullable: bool = False) -> dict[str, Any]:
    return {
        "type": ["object", "null"] if nullable else "object",
        "description": description,
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_CLOCK = "on the daemon's clock (Unix time in s)"


def _phase_currents(description: str) -> dict[str, Any]:
    return {
        "type": ["array", "null"],
        "items": {"type": "number"},
        "minItems": 3,
        "maxItems": 3,
        "description": f"{description}; null otherwise",
    }


SITE = _closed(
    {
        "grid_power_w": _num("grid exchange in W: > 0 import from the grid, < 0 export"),
        "pv_power_w": _num("PV production in W (>= 0)", minimum=0),
        "battery_power_w": _num("home battery in W: > 0 discharging, < 0 charging; 0 without a battery"),
        "battery_soc_pct": {
            "type": ["number", "null"],
            "minimum": 0,
            "maximum": 100,
            "description": "home battery state of charge in % (0–100); null without a battery",
        },
        "house_power_w": _num("everything behind the grid meter, car included, in W: pv + grid + battery"),
        "timestamp_s": _num(f"when the meter measured these values, {_CLOCK}"),
        "grid_currents_a": _phase_currents(
            "grid currents L1–L3 in A, > 0 import, where the meter gives them"
        ),
        "age_s": _num("how old the reading is now, in s"),
    },
    "the last good meter reading (canonical units and signs); null before the first one",
    nullable=True,
)

CHARGER = _closed(
    {
        "connected": {"type": "boolean", "description": "a car is plugged in"},
        "charging": {"type": "boolean", "description": "the car draws current"},
        "power_w": _num("charging power in W (>= 0)", minimum=0),
        "current_a": _num("the current the charger allows the car, in A per phase (>= 0)", minimum=0),
        "phases": _int("phases the car draws on (1 or 3; 0 while not charging or unknown)", maximum=3),
        "iec_state": {
            "type": ["string", "null"],
            "enum": ["A", "B", "C", "D", "E", "F", None],
            "description": "IEC 61851 state where the charger reports it (A no car, B connected, C charging)",
        },
        "phase_currents_a": _phase_currents("measured L1–L3 currents in A where the charger meters them"),
        "vehicle_soc_pct": {
            "type": ["number", "null"],
            "minimum": 0,
            "maximum": 100,
            "description": "the car's state of charge in % (0–100) where the charger learns it; else null",
        },
        "timestamp_s": _num(f"when the reading was received, {_CLOCK}"),
    },
    "the charger's reading of the last cycle; null when it did not answer",
    nullable=True,
)

COMMAND = _closed(
    {
        "current_a": _num("current limit in A per phase; 0 = paused", minimum=0),
        "phases": {"type": "integer", "enum": [1, 3], "description": "phases commanded (1 or 3)"},
    },
    "the command the controller decided in the last cycle; null before the first cycle",
    nullable=True,
)

DEVICE = _closed(
    {
        "name": {"type": "string", "description": "the device's name, e.g. 'meter huawei'"},
        "ok": {"type": "boolean", "description": "it answered its last read"},
        "last_success_s": _num(f"time of the last good read, {_CLOCK}; null if none yet", nullable=True),
        "last_error": {"type": ["string", "null"], "description": "the last error, null if none yet"},
        "last_error_s": _num(f"time of the last error, {_CLOCK}; null if none yet", nullable=True),
        "consecutive_failures": _int("failed reads in a row (0 while it answers)"),
        "failures": _int("failed reads since start"),
    },
    "health of one device",
)

STATS = _closed(
    {
        "cycles": _int("control cycles run since start"),
        "charger_writes": _int("commands written to the charger"),
        "starts": _int("commands that went from pause to a current > 0"),
        "meter_failures": _int("cycles without a meter reading"),
        "charger_failures": _int("cycles without a charger reading"),
        "write_failures": _int("failed writes to the charger"),
        "deferred_writes": _int("writes the driver held back for its rate limit"),
        "held_increases": _int("increases not sent because another charger's decrease was not delivered"),
        "late_reads": _int("reads still running at the end of a cycle"),
        "last_cycle_s": _num("wall time the last cycle took, in s", minimum=0),
        "max_cycle_s": _num("the longest cycle since start, in s", minimum=0),
    },
    "counters since start",
)

WAKE_UP = _closed(
    {
        "attempts": _int("wake-ups sent to a car that did not start, since it was plugged in"),
        "max_attempts": _int("wake-ups allowed per plug-in (charger.wake_up_attempts; 0: off)"),
        "last_at_s": _num(f"time of the last wake-up since the plug-in, {_CLOCK}; null: none", nullable=True),
        "available": {"type": "boolean", "description": "the charger can wake a car (WARP, Easee)"},
        "failures": _int("wake-ups that failed, since start"),
        "last_error": {"type": ["string", "null"], "description": "why the last failed wake-up failed"},
    },
    "resume recovery: a car offered current that stays in state B gets the charger's wake-up",
)

MODE = {
    "type": "string",
    "enum": list(MODES),
    "description": "off: never charge; pv: PV surplus only; minpv: at least the minimum current, surplus on "
    "top; fast: the maximum current",
}

LOADPOINT = _closed(
    {
        "name": {"type": "string", "description": "the loadpoint's name ('main' for a charger: config)"},
        "priority": _int("higher is served first", minimum=-100, maximum=100),
        "mode": MODE,
        "command": COMMAND,
        "reason": {
            "type": "string",
            "description": "why the last command; 'starting' before the first cycle",
        },
        "summary": {"type": "string", "description": "the last decision in words; 'Starting.' before"},
        "available_w": _num(
            "the surplus this loadpoint's controller used, in W; null if none", nullable=True
        ),
        "charger": CHARGER,
        "device": DEVICE,
        "writes_blocked": {"type": "boolean", "description": "this charger refused all writes"},
        "wake_up": WAKE_UP,
        "writes": _int("commands this charger took since start"),
        "starts": _int("commands to this charger that went from pause to a current > 0"),
    },
    "one loadpoint (a charger with its car)",
)

STATUS = _closed(
    {
        "version": {"type": "string", "description": "pvcharge version"},
        "uptime_s": _num("time since the daemon started, in s", minimum=0),
        "now_s": _num(f"now, {_CLOCK}"),
        "mode": MODE,
        "command": COMMAND,
        "reason": {
            "type": "string",
            "description": "why the last command, e.g. 'start: surplus >= 1380 W for 240 s -> 10 A on 1p'; "
            "'starting' before the first cycle",
        },
        "summary": {
            "type": "string",
            "description": "the last decision in words for people, without the internal numbers, e.g. "
            "'More surplus: current raised to 10 A on 1 phase.'; 'Starting.' before the first cycle",
        },
        "available_w": _num(
            "the surplus the controller used in the last cycle, in W; null if none", nullable=True
        ),
        "site": SITE,
        "charger": CHARGER,
        "devices": _closed({"meter": DEVICE, "charger": DEVICE}, "health of the meter and the charger"),
        "writes_blocked": {
            "type": "boolean",
            "description": "the charger refused all writes (e.g. Easee 'IP blocked'); nothing more is sent",
        },
        "wake_up": WAKE_UP,
        "stats": STATS,
        "loadpoints": {
            "type": "array",
            "items": LOADPOINT,
            "minItems": 1,
            "description": "every loadpoint in config order; the top-level mode, command, reason, summary, "
            "available_w, charger, devices.charger, writes_blocked and wake_up are the first one's",
        },
    },
    "what the daemon sees and does now",
)

ERROR = _closed({"error": {"type": "string", "description": "what went wrong"}}, "an error")

MODE_ERROR = _closed(
    {
        "error": {"type": "string", "description": "what was wrong with the request"},
        "allowed": {"type": "array", "items": MODE, "description": "the modes that may be set"},
    },
    'the request was not a JSON object {"mode": <one of allowed>}',
)

_SECTION = {
    "type": "object",
    "description": "one section of the config file, every key with its effective value",
}

_SECTIONS = ("site", "meter", "charger", "control", "log", "api", "state", "sessions", "tariff", "forecast")

CONFIG = {
    "type": "object",
    "description": "the effective configuration (defaults filled in); every secret (passwords, app "
    "secrets, the API token) reads '***'",
    "properties": {
        **{name: _SECTION for name in (*_SECTIONS, "mqtt")},
        "plans": {"type": "array", "items": _SECTION, "description": "the charge plans (plans:)"},
        "loadpoints": {
            "type": "array",
            "items": _SECTION,
            "description": "the loadpoints (instead of charger)",
        },
    },
    "required": [name for name in (*_SECTIONS, "plans") if name != "charger"],
    "additionalProperties": False,
}


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def _mode_put(operation_id: str, summary: str, more: dict[str, Any]) -> dict[str, Any]:
    return {
        "put": {
            "operationId": operation_id,
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModeRequest"}}},
            },
            "responses": {
                "200": _json("Status", "the status with the new mode"),
                **more,
                "413": _json("Error", "the body is larger than 64 KiB"),
                "422": _json("ModeError", 'not a JSON object {"mode": <mode>}, or an unknown mode'),
            },
        }
    }


#: the path parameter ``{name}`` of the ``/api/loadpoints/{name}/...`` routes
LOADPOINT_NAME: dict[str, Any] = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the loadpoint's name ('main' for a charger: config)",
}


def openapi_document(*, token_required: bool) -> dict[str, Any]:
    """The OpenAPI document of the server; ``token_required``: a bearer token is configured."""
    from pvcharge.api.openapi_forecast import FORECAST_SCHEMAS, forecast_paths
    from pvcharge.api.openapi_history import HISTORY_SCHEMAS, history_paths  # (it imports the helpers here)
    from pvcharge.api.openapi_plans import PLAN_SCHEMAS, plan_paths

    guard: dict[str, Any] = {
        "400": _json("Error", "a query parameter the operation does not take, or a malformed from/to")
    }
    if token_required:
        guard["401"] = _json("Error", "no or a wrong bearer token (see the WWW-Authenticate header)")
    else:
        guard["403"] = _json("Error", "the Host header is not a loopback name (DNS rebinding protection)")
    page_guard = dict(guard)
    if token_required:
        page_guard["401"] = {
            "description": "no or a wrong token: a small page asking for it",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "pvcharge local API",
            "version": __version__,
            "description": "Status, mode and metrics of the pvcharge daemon. Units are in the key names "
            "(_w W, _a A per phase, _pct %, _s s). Signs: grid_power_w > 0 imports from the grid, "
            "battery_power_w > 0 discharges the home battery, pv_power_w >= 0.",
        },
        "paths": {
            "/": {
                "get": {
                    "operationId": "statusPage",
                    "summary": "the live status page (HTML; polls /api/status every 2 s)",
                    "parameters": [
                        {
                            "name": "token",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "the API token, for opening the page in a browser once (ignored "
                            "without api.token); the page keeps it in sessionStorage, sends it as a bearer "
                            "header and removes it from the address bar",
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "the page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                        **page_guard,
                    },
                }
            },
            "/api/status": {
                "get": {
                    "operationId": "getStatus",
                    "summary": "readings, command, reason, mode, device health, uptime, version",
                    "responses": {"200": _json("Status", "the status"), **guard},
                }
            },
            "/api/mode": _mode_put(
                "setMode",
                "switch the mode (the first loadpoint's) from the next control cycle on (kept across "
                "restarts)",
                guard,
            ),
            "/api/loadpoints/{name}/mode": {
                "parameters": [LOADPOINT_NAME],
                **_mode_put(
                    "setLoadpointMode",
                    "switch one loadpoint's mode from the next control cycle on (only the first "
                    "loadpoint's is kept across restarts)",
                    {"404": _json("LoadpointError", "no loadpoint of that name"), **guard},
                ),
            },
            "/api/config": {
                "get": {
                    "operationId": "getConfig",
                    "summary": "the effective configuration, secrets redacted",
                    "responses": {"200": _json("Config", "the configuration"), **guard},
                }
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "this document",
                    "responses": {
                        "200": {
                            "description": "the OpenAPI document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **guard,
                    },
                }
            },
            **history_paths(guard),
            **plan_paths(guard),
            **forecast_paths(guard),
            "/metrics": {
                "get": {
                    "operationId": "getMetrics",
                    "summary": "Prometheus metrics (text format; OpenMetrics when the Accept header asks)",
                    "responses": {
                        "200": {
                            "description": "the metrics, read from the status at scrape time",
                            "content": {
                                "text/plain": {"schema": {"type": "string"}},
                                "application/openmetrics-text": {"schema": {"type": "string"}},
                            },
                        },
                        **guard,
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Status": STATUS,
                "LoadpointError": _closed(
                    {
                        "error": {"type": "string", "description": "which name was not found"},
                        "loadpoints": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "the names",
                        },
                    },
                    "no loadpoint of that name",
                ),
                "ModeRequest": _closed({"mode": MODE}, "the mode to switch to"),
                "ModeError": MODE_ERROR,
                "Error": ERROR,
                "Config": CONFIG,
                **HISTORY_SCHEMAS,
                **PLAN_SCHEMAS,
                **FORECAST_SCHEMAS,
            },
        },
    }
    if token_required:
        document["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "api.token of the config: Authorization: Bearer <token>",
            }
        }
        document["security"] = [{"bearer": []}]
    return document
