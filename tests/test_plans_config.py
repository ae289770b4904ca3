"""The planner's config: ``plans:``, ``forecast:`` and the day-ahead keys of ``tariff:``."""

from __future__ import annotations

import dataclasses
import re
from datetime import time
from pathlib import Path

import pytest

from pvcharge.config import parse_config, to_dict
from pvcharge.errors import ConfigError
from pvcharge.planning.config import ArrayConfig, ForecastConfig, PlanConfig

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = """
meter: {type: huawei, host: 192.0.2.10}
charger: {type: warp, url: "http://192.0.2.20"}
"""
FULL = (
    MINIMAL
    + """
tariff: {source: awattar, grid_price_per_kwh: 0.32, charges_per_kwh: 0.18, vat_pct: 19}
forecast:
  source: open-meteo
  arrays:
    - {latitude: 48.1, longitude: 11.6, tilt_deg: 35, azimuth_deg: -90, kwp: 5}
    - {latitude: 48.1, longitude: 11.6, azimuth_deg: 90, kwp: 4.2}
plans:
  - {deadline: "07:00", energy_kwh: 20, weekdays: "mon,tue,wed,thu,fri"}
  - {deadline: "18:30", soc_pct: 80, capacity_kwh: 58, timezone: Europe/Berlin}
"""
)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "/etc/pvcharge/config.yaml", environ={})
    return str(err.value)


def test_full_plan_config() -> None:
    cfg = parse_config(FULL, environ={})
    assert cfg.tariff.source == "awattar" and cfg.tariff.vat_pct == 19
    assert cfg.forecast.source == "open-meteo"
    assert cfg.forecast.arrays[1] == ArrayConfig(latitude=48.1, longitude=11.6, azimuth_deg=90, kwp=4.2)
    first, second = cfg.plans
    assert first.deadline_time() == time(7, 0) and first.days() == ("mon", "tue", "wed", "thu", "fri")
    assert second.soc_pct == 80 and second.timezone == "Europe/Berlin"
    plain = to_dict(cfg)
    assert plain["plans"][0]["energy_kwh"] == 20 and plain["forecast"]["arrays"][0]["tilt_deg"] == 35


def test_defaults_plan_nothing() -> None:
    cfg = parse_config(MINIMAL, environ={})
    assert cfg.plans == () and cfg.forecast.source == "none" and cfg.tariff.source == "fixed"


SECOND_PLAN = '  - {deadline: "18:30", soc_pct: 80, capacity_kwh: 58, timezone: Europe/Berlin}'


@pytest.mark.parametrize(
    ("second_plan", "message"),
    [
        (
            '{deadline: "7 Uhr", energy_kwh: 20}',
            "plans[1].deadline: expected a time HH:MM, e.g. \"07:00\", got '7 Uhr'",
        ),
        (
            '{deadline: "07:00", energy_kwh: 20, soc_pct: 50}',
            "plans[1].energy_kwh: give exactly one of energy_kwh and soc_pct",
        ),
        ('{deadline: "07:00"}', "plans[1].energy_kwh: give exactly one of energy_kwh and soc_pct"),
        ('{deadline: "07:00", soc_pct: 80}', "plans[1].capacity_kwh: needed with soc_pct"),
        (
            '{deadline: "07:00", energy_kwh: 9, timezone: Mars/Olympus}',
            "plans[1].timezone: unknown time zone 'Mars/Olympus'",
        ),
        ('{deadline: "07:00", energy_kwh: 900}', "plans[1].energy_kwh: expected a value within 0.1–250 kWh"),
    ],
)
def test_bad_plans_are_named_by_item(second_plan: str, message: str) -> None:
    assert SECOND_PLAN in FULL
    assert message in error_of(FULL.replace(SECOND_PLAN, "  - " + second_plan))


def test_bad_weekday_and_list_shape() -> None:
    assert "plans[0].weekdays: expected some of mon,tue" in error_of(
        FULL.replace("mon,tue,wed,thu,fri", "monday")
    )
    assert "plans: expected a list" in error_of(MINIMAL + "plans: {deadline: '07:00'}\n")


def test_forecast_needs_arrays_and_respects_forecast_solar_limit() -> None:
    assert "forecast.arrays: source open-meteo needs at least one array" in error_of(
        MINIMAL + "forecast: {source: open-meteo}\n"
    )
    four = "[" + ", ".join(["{latitude: 48, longitude: 11, kwp: 3}"] * 4) + "]"
    text = MINIMAL + f"forecast: {{source: forecast.solar, refresh_s: 900, arrays: {four}}}\n"
    assert "more than forecast.solar's 12 requests an hour" in error_of(text)
    assert parse_config(text.replace("900", "1200"), environ={}).forecast.refresh_s == 1200
    assert "forecast.arrays[0].kwp: missing key" in error_of(
        MINIMAL + "forecast: {source: open-meteo, arrays: [{latitude: 48, longitude: 11}]}\n"
    )


def test_tariff_source_is_checked() -> None:
    assert "tariff.source: expected one of 'fixed', 'awattar', 'energy-charts', 'tibber'" in error_of(
        MINIMAL + "tariff: {source: octopus}\n"
    )


def test_example_documents_the_plan_keys_with_unit_and_default() -> None:
    """Every key of plans:, forecast: and forecast.arrays: is in config.example.yaml (a list item's
    first key after '- '), with its unit and default on its line."""
    text = (ROOT / "config.example.yaml").read_text()
    forecast = re.search(r"^forecast:\n((?:[ #].*\n)*)", text, re.MULTILINE)
    plans = re.search(r"^# plans:.*\n((?:#.*\n)*)", text, re.MULTILINE)
    assert forecast is not None and plans is not None
    missing = []
    for cls, block in ((ForecastConfig, forecast[0]), (ArrayConfig, forecast[0]), (PlanConfig, plans[0])):
        for f in dataclasses.fields(cls):
            line = re.search(rf"^\s*#?\s*(- )?{f.name}:.*$", block, re.MULTILINE)
            if line is None:
                missing.append(f"{cls.__name__}.{f.name}: not in the example")
                continue
            unit = f.metadata.get("unit")
            if unit and f"[{unit}]" not in line[0]:
                missing.append(f"{f.name}: unit [{unit}] not on its line")
            default = f.default
            if default is dataclasses.MISSING:
                shown = "required"
            elif default is None:
                shown = "default none"
            elif isinstance(default, float):
                shown = f"default {default:g}"
            else:
                shown = f"default {default}"
            if shown not in line[0]:
                missing.append(f"{f.name}: {shown!r} not on its line")
    assert not missing, "\n".join(missing)
    cfg = parse_config(text, environ={"PVCHARGE_API_TOKEN": "x" * 32})
    assert cfg.forecast.source == "none"
