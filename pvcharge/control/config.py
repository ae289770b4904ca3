"""Settings of the control core: the ``control:`` section, plus the site's voltage and the charge
point's limits (``site.voltage_v``, ``charger.min_current_a``/``max_current_a``/``phases``).

Pure dataclasses: the config loader builds them from YAML, tests and library users build them
directly.  ``__post_init__`` raises :class:`pvcharge.settings.SettingError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pvcharge.settings import SettingError, setting

Mode = Literal["off", "pv", "minpv", "fast"]
MODES: tuple[Mode, ...] = ("off", "pv", "minpv", "fast")
CloudFilter = Literal["off", "weak", "medium", "strong"]
#: window lengths of the cloud filter presets in s (WARP's power manager uses the same steps)
CLOUD_FILTER_S: dict[str, float] = {"off": 0.0, "weak": 120.0, "medium": 240.0, "strong": 480.0}


@dataclass(frozen=True)
class Circuit:
    """One item of ``site.circuits``: a feed with its own current limit per phase (a garage
    sub-distribution, a second meter's breaker) that serves some loadpoints."""

    name: str = setting(doc="the circuit's name, for messages (e.g. garage)")
    max_current_a: float = setting(
        doc="limit per phase: the commands of its loadpoints never add up to more on any phase",
        unit="A",
        min=6,
        max=1000,
    )
    loadpoints: tuple[str, ...] = setting(doc="names of the loadpoints this circuit feeds")

    def __post_init__(self) -> None:
        if not self.loadpoints:
            raise SettingError("loadpoints", "empty; name the loadpoints this circuit feeds")


@dataclass(frozen=True)
class SiteConfig:
    """The ``site:`` section."""

    voltage_v: float = setting(
        230.0, doc="nominal phase voltage used to turn power into current", unit="V", min=100, max=400
    )
    max_grid_current_a: float | None = setting(
        None,
        doc="main fuse per phase: the car is turned down (or paused) so no phase imports more than this, "
        "in every mode; checked against the meter's phase currents where it gives them, else all other "
        "import is assumed on the car's phase; unset: no limit",
        unit="A",
        min=6,
        max=1000,
    )
    circuits: tuple[Circuit, ...] = setting(
        (),
        doc="sub-circuits, each with name, max_current_a and the loadpoints it feeds: the sum of their "
        "commands per phase stays within its limit",
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
    phases: Literal[1, 3, "auto"] = setting(
        3, doc="1 or 3: the phases the charger charges on; auto: switch 1p/3p (needs a charger that can)"
    )
    wake_up_attempts: int = setting(
        2,
        doc="wake-ups per plug-in for a car that does not start drawing (WARP: a control-pilot "
        "disconnect; Easee: pause then resume); 0: never",
        min=0,
        max=10,
    )
    wake_up_after_s: float = setting(
        60.0,
        doc="a car offered current that draws under 100 W for this long after a start gets a wake-up; "
        "also the least time between two wake-ups",
        unit="s",
        min=5,
        max=3600,
    )

    def __post_init__(self) -> None:
        if self.min_current_a > self.max_current_a:
            raise SettingError(
                "min_current_a",
                f"must be <= max_current_a ({self.max_current_a:g} A), got {self.min_current_a:g} A",
            )


@dataclass(frozen=True)
class ControlConfig:
    """The ``control:`` section. Every number has a default chosen by replaying measured days."""

    mode: Mode = setting(
        "pv",
        doc="off: never charge; pv: PV surplus only; minpv: at least min current, surplus on top; "
        "fast: max current (3 phases where possible)",
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
    deadzone_w: float = setting(
        100.0,
        doc="grid power within ±this counts as 0 (the slop a balancing home battery leaves); larger values "
        "shrink by it",
        unit="W",
        min=0,
        max=2000,
    )
    battery_policy: Literal["car_first", "battery_first"] = setting(
        "car_first",
        doc="car_first: the home battery's charging power counts as surplus; battery_first: it does not "
        "until the battery SoC reaches battery_first_soc_pct",
    )
    battery_first_soc_pct: float = setting(
        90.0,
        doc="battery_first: battery charging counts as surplus from this SoC on",
        unit="%",
        min=0,
        max=100,
    )
    battery_to_car: bool = setting(
        False,
        doc="opt in to let the home battery discharge into the car in pv/minpv mode (down to "
        "battery_to_car_min_soc_pct); by default its discharge is subtracted from the surplus",
    )
    battery_to_car_min_soc_pct: float = setting(
        50.0, doc="battery_to_car: no discharge into the car below this SoC", unit="%", min=0, max=100
    )
    cloud_filter: CloudFilter | float = setting(
        "strong",
        doc="off, weak (120 s), medium (240 s), strong (480 s) or a window in s: start only when the surplus "
        "covered min power for start_fraction of the window, stop only when it was short the whole window",
        unit="s",
        min=0,
        max=3600,
    )
    start_fraction: float = setting(
        0.3,
        doc="a paused car starts once the surplus covered its minimum power for the last start_fraction x "
        "cloud_filter seconds (1: the whole window, as for a stop)",
        min=0,
        max=1,
    )
    min_on_s: float = setting(
        600.0,
        doc="a started car charges at least this long before a stop for lack of surplus",
        unit="s",
        min=0,
        max=7200,
    )
    min_off_s: float = setting(
        300.0,
        doc="a stopped car stays paused at least this long before it starts again",
        unit="s",
        min=0,
        max=7200,
    )
    up_energy_wh: float = setting(
        12.0,
        doc="damping: raise the current once a higher one would have taken this much more energy (a big "
        "rise acts in seconds, a 1 A rise waits minutes), to what the surplus supported all that time",
        unit="Wh",
        min=0,
        max=1000,
    )
    down_energy_wh: float = setting(
        6.0,
        doc="lower the current once the car drew this much more than the surplus (a big drop acts at once)",
        unit="Wh",
        min=0,
        max=1000,
    )
    up_hold_s: float = setting(
        30.0,
        doc="also raise the current once the surplus held a level at least up_hold_min_w higher for this "
        "whole time (0: off, only up_energy_wh); captures more on variable days and writes the charger more "
        "often",
        unit="s",
        min=0,
        max=3600,
    )
    up_hold_min_w: float = setting(
        690.0,
        doc="up_hold_s raises the current only by at least this much (smaller rises wait for up_energy_wh: "
        "each is a charger write for little energy)",
        unit="W",
        min=0,
        max=10000,
    )
    max_step_up_a: float = setting(
        16.0, doc="slew limit: the most one change raises the current", unit="A", min=1, max=80
    )
    grid_tolerance_s: float = setting(
        60.0,
        doc="pv mode: the car may import from the grid (battery empty or at its limit) at most this long "
        "before it is turned down or paused, whatever the cloud filter says",
        unit="s",
        min=0,
        max=3600,
    )
    phase_window_s: float = setting(
        900.0,
        doc="phases: auto: how far back the evidence for a phase switch may reach: the stretch ending now "
        "(at most this long, and since the last switch) in which the other phase count did best",
        unit="s",
        min=60,
        max=7200,
    )
    phase_switch_gain_wh: float = setting(
        100.0,
        doc="phases: auto: switch to 3 phases when they would have done this much better than 1 over a "
        "recent stretch (PV captured minus battery_weight × energy drawn beyond the surplus)",
        unit="Wh",
        min=0,
        max=10000,
    )
    phase_down_gain_wh: float = setting(
        200.0,
        doc="phases: auto: switch to 1 phase when it would have done this much better than 3 over a recent "
        "stretch (more than phase_switch_gain_wh: a dip on 3 phases costs some battery, a peak on 1 phase "
        "is lost)",
        unit="Wh",
        min=0,
        max=10000,
    )
    phase_down_deficit_wh: float = setting(
        200.0,
        doc="phases: auto: also switch to 1 phase once min current on 3 phases drew this much beyond the "
        "surplus since the surplus last covered it (not multiplied by phase_switch_gain_growth; 0: off)",
        unit="Wh",
        min=0,
        max=10000,
    )
    shade_switch_cost_wh: float = setting(
        400.0,
        doc="phases: auto: at min current on 3 phases, go to 1 phase once battery_weight × what 3-phase "
        "minimum would draw beyond the surplus through the rest of the shade (expected from the last hour's "
        "shade lengths) passes this, and back to 3 phases once the shade is over (0: off)",
        unit="Wh",
        min=0,
        max=10000,
    )
    shade_switch_min_wh: float = setting(
        120.0,
        doc="phases: auto: shade_switch_cost_wh acts only once min current on 3 phases drew this much beyond "
        "the surplus (phase_down_deficit_wh switches later whatever the shade's expected length)",
        unit="Wh",
        min=0,
        max=10000,
    )
    phase_switch_gain_growth: float = setting(
        1.5,
        doc="phases: auto: the evidence a switch needs is multiplied by this for every switch in the last "
        "hour, so switching grows dearer while the weather flaps",
        min=1,
        max=10,
    )
    battery_weight: float = setting(
        1.5,
        doc="phases: auto: how many Wh of uncaptured PV one Wh drawn from the battery or grid is worth",
        min=0,
        max=10,
    )
    phase_switch_interval_s: float = setting(
        120.0, doc="phases: auto: minimum time between two phase switches", unit="s", min=0, max=86400
    )
    phase_switches_per_hour: int = setting(
        10, doc="phases: auto: at most this many phase switches in any hour", min=1, max=60
    )
    max_age_s: float = setting(
        30.0,
        doc="a meter reading older than this is stale: the car goes to safe_state until fresh data returns",
        unit="s",
        min=1,
        max=3600,
    )
    frozen_s: float = setting(
        120.0,
        doc="meter values (grid, PV, battery, SoC) that have not changed by a single watt for this long are "
        "stale too: a meter that keeps answering with frozen values (SENEC's lala.cgi does) is as dead as "
        "one that does not answer; 0 turns the check off",
        unit="s",
        min=0,
        max=86400,
    )
    safe_state: Literal["pause", "min_current"] = setting(
        "pause",
        doc="on stale or missing meter data: pause; or min_current, which keeps min current in minpv and "
        "fast mode (pv mode always pauses)",
    )
    exit_state: Literal["pause", "leave"] = setting(
        "pause",
        doc="what the daemon leaves the charger in when it stops: pause; or leave the last command (the "
        "charger then runs on without a controller)",
    )

    def __post_init__(self) -> None:
        if self.max_age_s < self.interval_s:
            raise SettingError(
                "max_age_s", f"must be >= interval_s ({self.interval_s:g} s), got {self.max_age_s:g} s"
            )
        if 0 < self.frozen_s < self.max_age_s:
            raise SettingError(
                "frozen_s", f"must be 0 (off) or >= max_age_s ({self.max_age_s:g} s), got {self.frozen_s:g} s"
            )
        if 0 < self.window_s < self.interval_s:
            raise SettingError(
                "cloud_filter",
                f"a window of {self.window_s:g} s is shorter than interval_s ({self.interval_s:g} s)",
            )

    @property
    def start_window_s(self) -> float:
        """How long the surplus must have covered a paused car's minimum power before it starts, in s."""
        return self.window_s * self.start_fraction

    @property
    def window_s(self) -> float:
        """The cloud filter's window in s."""
        if isinstance(self.cloud_filter, str):
            return CLOUD_FILTER_S[self.cloud_filter]
        return float(self.cloud_filter)
