"""The plan set at run time (over the API, MQTT or ``pvcharge plan set``), beside the config's ``plans:``.

One such plan at a time: setting one replaces the last. It is

- **one-off** without ``weekdays``: its deadline is the next time the ``HH:MM`` comes after it was set
  ("20 kWh by 07:00" set at 22:00 is tomorrow 07:00), and it is dropped once that deadline has passed;
- **repeating** with ``weekdays`` (``"mon,tue"``, like a ``plans:`` entry) until it is cleared.

It is written as text (:func:`parse_text`)::

    20 kWh by 07:00                 add 20 kWh by the next 07:00
    80 % of 60 kWh by 7:30          reach 80 % SoC of a 60 kWh battery (needs the car's SoC)
    15 kWh by 18:00 on mon,wed      every Monday and Wednesday

or as JSON (:func:`parse_json`): ``{"energy_kwh": 20, "deadline": "07:00"}``, or ``soc_pct`` with
``capacity_kwh`` instead of ``energy_kwh``; optional ``weekdays`` (``"mon,wed"``, lower case). The
deadline is in the daemon's time zone. Both check the values as the config loader checks a ``plans:``
entry (:class:`PlanConfig`, with its ranges) and raise :class:`~pvcharge.settings.SettingError` naming
the key; the JSON form takes exactly what the API's OpenAPI document allows (``PlanRequest``).

Pure: no I/O, no clock of its own.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from pvcharge.planning.config import PlanConfig
from pvcharge.planning.planner import next_deadline
from pvcharge.settings import SettingError

#: the JSON keys a run-time plan takes
KEYS = ("energy_kwh", "soc_pct", "capacity_kwh", "deadline", "weekdays")
#: a deadline as the JSON form takes it (``07:00``; the text form also takes ``7:00``)
DEADLINE_PATTERN = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$"
#: weekdays as the JSON form takes them
WEEKDAYS_PATTERN = r"^(?:mon|tue|wed|thu|fri|sat|sun)(?:,(?:mon|tue|wed|thu|fri|sat|sun))*$"

_NUMBER = r"\d+(?:[.,]\d+)?"
_TEXT = re.compile(
    rf"\s*(?P<amount>{_NUMBER})\s*(?P<unit>kwh|%)"
    rf"(?:\s+of\s+(?P<capacity>{_NUMBER})\s*kwh)?"
    r"\s+by\s+(?P<deadline>\d{1,2}:\d{2})"
    r"(?:\s+(?:on|every)\s+(?P<days>[a-z]{3}(?:\s*,\s*[a-z]{3})*))?\s*",
    re.IGNORECASE,
)
TEXT_FORMAT = '"20 kWh by 07:00", "80 % of 60 kWh by 07:00" or "15 kWh by 18:00 on mon,wed"'


@dataclass(frozen=True)
class RuntimePlan:
    """A plan set at run time: its entry (checked like a ``plans:`` entry), the Unix s of its single
    deadline (``None``: repeating on ``entry.weekdays``), who set it and when (Unix s)."""

    entry: PlanConfig
    deadline_s: float | None
    source: str
    set_at_s: float

    @property
    def once(self) -> bool:
        return self.deadline_s is not None

    def next_deadline_s(self, now_s: float, zone: Callable[[PlanConfig], ZoneInfo]) -> float | None:
        """The deadline in force at ``now_s`` (Unix s); ``None`` for a one-off whose time has passed."""
        if self.deadline_s is not None:
            return self.deadline_s if self.deadline_s > now_s else None
        return next_deadline(now_s, self.entry.deadline_time(), zone(self.entry), self.entry.days())

    def as_json(self) -> dict[str, Any]:
        """For the state file; :func:`from_saved` reads it back."""
        extra = {"deadline_s": self.deadline_s, "source": self.source, "set_at_s": self.set_at_s}
        return {**entry_json(self.entry), **extra}


def entry_json(entry: PlanConfig) -> dict[str, Any]:
    """A plan entry as JSON (:data:`KEYS`, unset ones ``null``) and its ``timezone`` (``null``: the
    daemon's)."""
    return {key: getattr(entry, key) for key in (*KEYS, "timezone")}


def as_text(entry: PlanConfig, *, repeating: bool) -> str:
    """An entry in the text form :func:`parse_text` reads, e.g. ``20 kWh by 07:00`` or ``80 % of 60 kWh
    by 07:00 on mon,wed``."""
    if entry.energy_kwh is not None:
        amount = f"{entry.energy_kwh:g} kWh"
    else:
        amount = f"{entry.soc_pct:g} % of {entry.capacity_kwh:g} kWh"
    days = f" on {','.join(entry.days())}" if repeating else ""
    return f"{amount} by {entry.deadline}{days}"


def parse_command(payload: str) -> tuple[PlanConfig, bool]:
    """A plan as a JSON object or as text (MQTT's ``plan/set``): the checked entry, and whether it
    repeats (``weekdays`` given). Raises SettingError naming the key."""
    payload = payload.strip()
    if payload.startswith("{"):
        try:
            data = json.loads(payload)
        except ValueError as exc:
            raise SettingError("plan", f"not valid JSON: {exc}") from None
    else:
        data = parse_text(payload)
    entry = parse_json(data)
    return entry, isinstance(data, Mapping) and "weekdays" in data


def parse_text(text: str) -> dict[str, Any]:
    """``"20 kWh by 07:00"`` (see the module docstring) → the JSON form. Raises SettingError (key
    ``plan``) for anything else."""
    match = _TEXT.fullmatch(text)
    if match is None:
        shown = text if len(text) <= 60 else text[:60] + "…"
        raise SettingError("plan", f"expected {TEXT_FORMAT}, got {shown!r}")
    amount = float(match["amount"].replace(",", "."))
    hours, minutes = match["deadline"].split(":")
    out: dict[str, Any] = {"deadline": f"{int(hours):02d}:{minutes}"}  # (checked by parse_json)
    if match["unit"] == "%":
        out["soc_pct"] = amount
        if match["capacity"] is not None:
            out["capacity_kwh"] = float(match["capacity"].replace(",", "."))
    else:
        if match["capacity"] is not None:
            raise SettingError("plan", f"'of ... kWh' goes with a SoC in %, e.g. {TEXT_FORMAT}")
        out["energy_kwh"] = amount
    if match["days"]:
        out["weekdays"] = ",".join(day.strip().lower() for day in match["days"].split(","))
    return out


def parse_json(data: object) -> PlanConfig:
    """A JSON object of :data:`KEYS` (``deadline`` and either ``energy_kwh`` or ``soc_pct`` with
    ``capacity_kwh``) as a checked entry. Raises SettingError naming the key."""
    if not isinstance(data, Mapping):
        raise SettingError("plan", f"expected a JSON object with {', '.join(KEYS)}")
    unknown = sorted(str(key)[:40] for key in data if key not in KEYS)
    if unknown:
        raise SettingError(unknown[0], f"unknown key; a plan takes {', '.join(KEYS)}")
    fields = {f.name: f.metadata for f in dataclasses.fields(PlanConfig)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("energy_kwh", "soc_pct", "capacity_kwh"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SettingError(key, f"expected a number, got {value!r}"[:120])
            low, high, unit = fields[key]["min"], fields[key]["max"], fields[key]["unit"]
            if not low <= value <= high:
                raise SettingError(key, f"expected {low:g}–{high:g} {unit}, got {value!r}"[:120])
            values[key] = float(value)
        else:
            pattern = DEADLINE_PATTERN if key == "deadline" else WEEKDAYS_PATTERN
            if not isinstance(value, str) or not re.fullmatch(pattern, value, re.ASCII):
                example = '"07:00"' if key == "deadline" else '"mon,wed"'
                raise SettingError(key, f"expected e.g. {example}, got {value!r}"[:120])
            values[key] = value
    if "deadline" not in values:
        raise SettingError("deadline", 'missing: the local time HH:MM, e.g. "07:00"')
    if "capacity_kwh" in values and "soc_pct" not in values:
        raise SettingError("capacity_kwh", "goes with soc_pct (the battery the SoC is of)")
    return PlanConfig(**values)


def make(entry: PlanConfig, *, now_s: float, zone: ZoneInfo, source: str, repeating: bool) -> RuntimePlan:
    """The run-time plan for ``entry`` set at ``now_s``: a one-off's deadline is the next ``deadline``
    in ``zone`` (the entry's own ``timezone`` first)."""
    if repeating:
        return RuntimePlan(entry, None, source, now_s)
    tz = ZoneInfo(entry.timezone) if entry.timezone else zone
    return RuntimePlan(entry, next_deadline(now_s, entry.deadline_time(), tz), source, now_s)


def from_saved(data: Mapping[str, Any]) -> RuntimePlan:
    """:meth:`RuntimePlan.as_json` read back. Raises SettingError or ValueError for a damaged one."""
    entry = parse_json({key: data[key] for key in KEYS if data.get(key) is not None})
    deadline_s = data.get("deadline_s")
    if deadline_s is not None and not isinstance(deadline_s, int | float):
        raise ValueError(f"deadline_s: expected a number, got {deadline_s!r}")
    set_at_s = data.get("set_at_s", 0.0)
    if not isinstance(set_at_s, int | float):
        raise ValueError(f"set_at_s: expected a number, got {set_at_s!r}")
    return RuntimePlan(entry, deadline_s, str(data.get("source", "state")), float(set_at_s))
