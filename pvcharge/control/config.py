"""Settings of the control core: the ``control:`` section, plus the site's voltage and the charge
point's limits (``site.voltage_v``, ``charger.min_current_a``/``max_current_a``/``phases``).

Pure dataclasses: the config loader builds them from YAML, tests and library users build them
directly.  ``__post_init__`` raises :class:`pvcharge.settings.SettingError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pvcharge.settings import SettingError, setting

Mode = Literal["off", "pv", "fast"]
MODES: tuple[Mode, ...] = ("off", "pv", "fast")


@dataclass(frozen=True)
class SiteConfig:
    """The ``site:`` section."""

    voltage_v: float = setting(
        230.0, doc="nominal phase voltage used to turn power into current", unit="V", min=100, max=400
    )


@dataclass(frozen=True)
class ChargePoint:
    """The installation's limits at the charger (keys of the ``charger:`` section)."""

    min_current_a: float = setting(
        6.0, doc="lowest current per phase to offer while charging (IEC 61851: 6 A)", unit="A", min=6, max=32
    )
    max_current_a: float = setting(
        16.0,
        doc="highest current per phase ever offered (cable, car, circuit breaker)",
        unit="A",
        min=6,
        max=80,
    )
    phases: Literal[1, 3] = setting(3, doc="phases the charger is wired for and charges on: 1 or 3")

    def __post_init__(self) -> None:
        if self.min_current_a > self.max_current_a:
            raise SettingError(
                "min_current_a",
                f"must be <= max_current_a ({self.max_current_a:g} A), got {self.min_current_a:g} A",
            )


@dataclass(frozen=True)
class ControlConfig:
    """The ``control:`` section."""

    mode: Mode = setting(
        "pv", doc="off: never charge; pv: PV surplus only; fast: max current now, whatever the source"
    )
    interval_s: float = setting(
        5.0, doc="control cycle: read meter and charger, decide, write", unit="s", min=1, max=300
    )
    grid_target_w: float = setting(
        0.0,
        doc="grid power to aim for in pv mode: > 0 allows that much import, < 0 keeps that much export",
        unit="W",
        min=-10000,
        max=10000,
    )
    start_delay_s: float = setting(
        60.0,
        doc="pv mode starts the car only after the surplus covered min power this long",
        unit="s",
        min=0,
        max=3600,
    )
    stop_delay_s: float = setting(
        180.0,
        doc="pv mode pauses the car only after the surplus was short this long",
        unit="s",
        min=0,
        max=3600,
    )
    max_age_s: float = setting(
        30.0,
        doc="a meter reading older than this is stale: pv mode pauses the car until fresh data returns",
        unit="s",
        min=1,
        max=3600,
    )

    def __post_init__(self) -> None:
        if self.max_age_s < self.interval_s:
            raise SettingError(
                "max_age_s", f"must be >= interval_s ({self.interval_s:g} s), got {self.max_age_s:g} s"
            )
