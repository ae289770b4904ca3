"""The ``loadpoints:`` section: several chargers on one site, each with its own name, mode, priority,
charge point limits and vehicle profile (:mod:`pvcharge.control.site` decides them).

Layout (every key is documented in ``config.example.yaml``)::

    loadpoints:
      - name: carport                  # unique, [a-z0-9_-]
        priority: 1                    # higher first; default 0
        mode: pv                       # default control.mode
        charger: {type: warp, url: ..., min_current_a, max_current_a, phases}   # as charger:
        vehicle: {min_current_3p_a, phases, never_stop, no_phase_switch, wake_up}

A file gives either ``charger:`` (one charger: one loadpoint named :data:`MAIN`) or ``loadpoints:``.
Errors name the item, e.g. ``loadpoints[1].priority``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pvcharge.chargers import CHARGER_TYPES
from pvcharge.control.config import ChargePoint, Mode
from pvcharge.control.site import Loadpoint
from pvcharge.control.vehicle import Vehicle
from pvcharge.settings import setting

if TYPE_CHECKING:
    from pvcharge.config import DeviceConfig, _Loader

#: the name of the one loadpoint of a config with a ``charger:`` section
MAIN = "main"
_NAME = re.compile(r"[a-z0-9_-]+")
#: the keys of a ``charger:`` section that are the charge point's, not the driver's
CHARGE_POINT_KEYS = [f.name for f in dataclasses.fields(ChargePoint)]


@dataclass(frozen=True)
class LoadpointSettings:
    """The plain keys of one ``loadpoints:`` item (its ``charger:`` and ``vehicle:`` are sections)."""

    name: str = setting(
        doc="unique name ([a-z0-9_-]), used in messages, the API (/api/loadpoints/{name}/...) and MQTT "
        "(<prefix>/loadpoints/<name>/...)"
    )
    mode: Mode | None = setting(
        None, doc="this loadpoint's mode: off, pv, minpv or fast; unset: control.mode"
    )
    priority: int = setting(
        0,
        doc="higher is served first from the surplus and cut last at the fuse and circuits; equal "
        "priorities share equally",
        min=-100,
        max=100,
    )


@dataclass(frozen=True)
class LoadpointConfig:
    """One loadpoint of the config: its settings, charger driver, charge point and vehicle."""

    name: str
    charger: DeviceConfig
    charge_point: ChargePoint
    mode: Mode | None = None
    priority: int = 0
    vehicle: Vehicle = Vehicle()  # noqa: RUF009 (frozen, so immutable)

    def loadpoint(self) -> Loadpoint:
        """The loadpoint as the control core sees it."""
        return Loadpoint(self.name, self.charge_point, self.mode, self.priority, self.vehicle)


def parse_charger(loader: _Loader, data: Any, key: str) -> tuple[DeviceConfig, ChargePoint]:
    """A ``charger:`` section at ``key``: the driver's settings and the charge point's limits."""
    device = loader.device(data, key, CHARGER_TYPES, extra=CHARGE_POINT_KEYS)
    cp_data = {k: v for k, v in data.items() if k in CHARGE_POINT_KEYS}
    return device, loader.dataclass(ChargePoint, cp_data, key)


def parse_loadpoints(loader: _Loader, data: Any) -> tuple[LoadpointConfig, ...]:
    """The ``loadpoints:`` list. Raises ConfigError naming the item and key."""
    if not isinstance(data, list) or not data:
        raise loader.error("loadpoints", "expected a list of loadpoints (items starting with '- ')")
    allowed = [*(f.name for f in dataclasses.fields(LoadpointSettings)), "charger", "vehicle"]
    found: dict[str, int] = {}
    loadpoints = []
    for i, item in enumerate(data):
        key = f"loadpoints[{i}]"
        if not isinstance(item, dict):
            raise loader.error(key, "expected a mapping with at least name and charger")
        loader.check_keys(item, f"{key}.", allowed)
        plain = {k: v for k, v in item.items() if k not in ("charger", "vehicle")}
        settings = loader.dataclass(LoadpointSettings, plain, key)
        if not _NAME.fullmatch(settings.name):
            raise loader.error(
                f"{key}.name", f"expected lower-case letters, digits, _ or -, got {settings.name!r}"
            )
        if settings.name in found:
            raise loader.error(
                f"{key}.name", f"duplicate name {settings.name!r} (also loadpoints[{found[settings.name]}])"
            )
        found[settings.name] = i
        if item.get("charger") is None:
            raise loader.error(f"{key}.charger", "missing section (expected a mapping with at least 'type')")
        device, charge_point = parse_charger(loader, item["charger"], f"{key}.charger")
        vehicle = loader.dataclass(Vehicle, item.get("vehicle"), f"{key}.vehicle")
        loadpoints.append(
            LoadpointConfig(settings.name, device, charge_point, settings.mode, settings.priority, vehicle)
        )
    return tuple(loadpoints)


def check_circuits(loader: _Loader, circuits: Any, names: list[str]) -> None:
    """Every ``site.circuits`` item names known loadpoints. Raises ConfigError naming the item."""
    for i, circuit in enumerate(circuits):
        for name in circuit.loadpoints:
            if name not in names:
                raise loader.error(
                    f"site.circuits[{i}].loadpoints",
                    f"unknown loadpoint {name!r}; expected one of: {', '.join(names)}",
                )
