"""Settings of the planner and its sources: ``plans:`` (a list), ``forecast:`` with its ``arrays:`` list.
The tariff's keys are in :class:`pvcharge.config.TariffConfig`.

Pure dataclasses like the control core's: ``__post_init__`` raises
:class:`~pvcharge.settings.SettingError` naming the key; the loader (``pvcharge.config_loader``) reads the
lists item by item and names the item (``plans[1].deadline``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pvcharge.planning.planner import WEEKDAYS
from pvcharge.settings import Secret, SettingError, setting


@dataclass(frozen=True)
class PlanConfig:
    """One entry of ``plans:``: a target by a time of day, on some weekdays."""

    deadline: str = setting(doc='local time HH:MM by which the target is met, e.g. "07:00"')
    energy_kwh: float | None = setting(
        None, doc="energy to add by the deadline (give this or soc_pct)", unit="kWh", min=0.1, max=250
    )
    soc_pct: float | None = setting(
        None,
        doc="vehicle SoC to reach by the deadline; needs capacity_kwh and a car that reports its SoC",
        unit="%",
        min=1,
        max=100,
    )
    capacity_kwh: float | None = setting(
        None, doc="the car's usable battery capacity", unit="kWh", min=5, max=250
    )
    weekdays: str = setting(
        "mon,tue,wed,thu,fri,sat,sun", doc="comma-separated days the plan applies to (mon ... sun)"
    )
    timezone: str | None = setting(None, doc="IANA time zone of the deadline (default: the system's)")
    loadpoint: str | None = setting(
        None, doc="name of the loadpoint the plan charges (loadpoints:); default the first"
    )

    def __post_init__(self) -> None:
        self.deadline_time()
        if (self.energy_kwh is None) == (self.soc_pct is None):
            raise SettingError("energy_kwh", "give exactly one of energy_kwh and soc_pct")
        if self.soc_pct is not None and self.capacity_kwh is None:
            raise SettingError("capacity_kwh", "needed with soc_pct (the car's usable capacity in kWh)")
        unknown = [day for day in self.days() if day not in WEEKDAYS]
        if unknown or not self.days():
            raise SettingError("weekdays", f"expected some of {','.join(WEEKDAYS)}, got {self.weekdays!r}")
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise SettingError(
                    "timezone", f"unknown time zone {self.timezone!r} (e.g. Europe/Berlin)"
                ) from exc

    def deadline_time(self) -> time:
        """``deadline`` as a time of day. Raises SettingError unless it reads HH:MM."""
        try:
            hours, minutes = self.deadline.split(":")
            return time(int(hours), int(minutes))
        except ValueError as exc:
            raise SettingError(
                "deadline", f'expected a time HH:MM, e.g. "07:00", got {self.deadline!r}'
            ) from exc

    def days(self) -> tuple[str, ...]:
        return tuple(day.strip().lower() for day in self.weekdays.split(",") if day.strip())


@dataclass(frozen=True)
class ArrayConfig:
    """One entry of ``forecast.arrays:``: a roof plane."""

    latitude: float = setting(doc="latitude of the array", unit="°", min=-90, max=90)
    longitude: float = setting(doc="longitude of the array", unit="°", min=-180, max=180)
    kwp: float = setting(doc="peak power of its modules", unit="kWp", min=0.1, max=1000)
    tilt_deg: float = setting(30.0, doc="tilt from horizontal: 0 flat, 90 vertical", unit="°", min=0, max=90)
    azimuth_deg: float = setting(
        0.0, doc="direction it faces: 0 south, -90 east, 90 west, ±180 north", unit="°", min=-180, max=180
    )


@dataclass(frozen=True)
class ForecastConfig:
    """The ``forecast:`` section: where the solar forecast for the planner comes from."""

    source: Literal["none", "open-meteo", "forecast.solar"] = setting(
        "none", doc="none: plan without PV; open-meteo or forecast.solar (both free, no key)"
    )
    arrays: tuple[ArrayConfig, ...] = setting((), doc="the roof planes (a list; see below)")
    performance_ratio: float = setting(
        0.85,
        doc="open-meteo: share of the modules' power that reaches AC (inverter, wiring, dirt)",
        min=0.3,
        max=1,
    )
    base_load_w: float = setting(
        300.0, doc="the house's typical draw, taken off the PV power", unit="W", min=0, max=20000
    )
    inverter_max_w: float | None = setting(
        None, doc="AC limit of the inverter(s); unset: none", unit="W", min=100, max=1e6
    )
    pv_factor: float = setting(
        0.8, doc="share of the forecast surplus the planner counts on (safety margin)", min=0, max=1
    )
    refresh_s: float = setting(3600.0, doc="how often the forecast is fetched", unit="s", min=900, max=86400)
    max_age_s: float = setting(
        21600.0,
        doc="a forecast older than this is not used (the plan assumes no PV)",
        unit="s",
        min=900,
        max=172800,
    )
    url: str | None = setting(
        None, doc="the service's base URL (default the public one; an emulator in tests)"
    )
    api_key: Secret | None = setting(None, doc="forecast.solar: a paid plan's key (or api_key_file)")

    def __post_init__(self) -> None:
        if self.source != "none" and not self.arrays:
            raise SettingError("arrays", f"source {self.source} needs at least one array")
        if self.source == "forecast.solar" and len(self.arrays) * 3600 / self.refresh_s > 12:
            raise SettingError(
                "refresh_s",
                f"{len(self.arrays)} arrays every {self.refresh_s:g} s is more than forecast.solar's 12 "
                "requests an hour; raise refresh_s",
            )
