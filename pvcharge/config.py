"""Load the one YAML config file into typed, frozen objects, validated up front.

Layout of the file (every key is documented in ``config.example.yaml``)::

    site:    {voltage_v, max_grid_current_a, circuits}
    meter:   {type: huawei, <the huawei driver's keys>}
    charger: {type: warp, min_current_a, max_current_a, phases, <the warp driver's keys>}
    loadpoints: [{name, priority, mode, charger, vehicle}, ...]   (instead of charger:, see
             pvcharge.loadpoints_config)
    control: {mode, interval_s, grid_target_w, start_delay_s, stop_delay_s, max_age_s}
    log:     {level, format}
    api, mqtt, state, sessions, tariff, forecast, plans: see config.example.yaml

Rules:

- every error is a :class:`pvcharge.errors.ConfigError` reading ``FILE: key.path: problem
  (expected …)``;
- unknown keys are errors (with a "did you mean" hint), never silently ignored;
- ``${NAME}`` in any string is replaced by the environment variable ``NAME`` (an unset variable is
  an error);
- a secret key ``password`` may instead be given as ``password_file: PATH`` (e.g. a systemd
  credential in ``$CREDENTIALS_DIRECTORY``); the file's content, without its trailing newline, is the
  secret; relative paths are relative to the config file.

How one section becomes its typed dataclass (keys, types, ranges, ``${NAME}``, ``*_file`` secrets) is
:mod:`pvcharge.config_loader`; this module holds the sections and the file's layout.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pvcharge.config_loader import ConfigLoader, value_kind
from pvcharge.control.config import ChargePoint, ControlConfig, SiteConfig
from pvcharge.errors import ConfigError
from pvcharge.loadpoints_config import MAIN, LoadpointConfig, check_circuits, parse_charger, parse_loadpoints
from pvcharge.meters import METER_TYPES
from pvcharge.planning.config import ForecastConfig, PlanConfig
from pvcharge.settings import Secret, SettingError, is_loopback, setting
from pvcharge.yamlfile import decode_text, load_yaml_text


@dataclass(frozen=True)
class LogConfig:
    """The ``log:`` section."""

    level: Literal["debug", "info", "warning", "error"] = setting("info", doc="lowest level logged")
    format: Literal["console", "json"] = setting(
        "console",
        doc="console: one readable line per event; json: one JSON object per line (for journald/Loki)",
    )


@dataclass(frozen=True)
class ApiConfig:
    """The ``api:`` section: the local HTTP API and status page."""

    enabled: bool = setting(True, doc="serve the HTTP API, the status page and /metrics")
    listen: str = setting(
        "127.0.0.1",
        doc="address to listen on; anything but loopback (127.0.0.1, ::1) needs a token",
    )
    port: int = setting(7080, doc="TCP port (0: any free one, for tests)", min=0, max=65535)
    token: Secret | None = setting(
        None, doc="bearer token every request must carry (Authorization: Bearer ...); required off loopback"
    )

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.reveal().strip():
            raise SettingError("token", "empty; set a long random token (e.g. `openssl rand -hex 32`)")
        if self.enabled and not is_loopback(self.listen) and self.token is None:
            raise SettingError(
                "token",
                f"required when listen is not a loopback address (listen: {self.listen}): anyone on the "
                "network could switch the charger; set token (or token_file), or listen on 127.0.0.1",
            )


@dataclass(frozen=True)
class MqttConfig:
    """The ``mqtt:`` section (optional): status to an MQTT broker, mode commands from it, Home Assistant
    discovery."""

    host: str = setting(doc="broker host name or address")
    port: int = setting(1883, doc="broker port (1883 plain, 8883 TLS)", min=1, max=65535)
    tls: bool = setting(False, doc="connect with TLS, verifying the broker's certificate")
    ca_file: str | None = setting(None, doc="CA bundle for tls (default: the system's)")
    username: str | None = setting(None, doc="login name, if the broker wants one")
    password: Secret | None = setting(None, doc="login password; or password_file: PATH")
    client_id: str = setting("pvcharge", doc="MQTT client id (unique per broker)")
    prefix: str = setting(
        "pvcharge", doc="topic prefix: status under <prefix>/..., mode commands on <prefix>/mode/set"
    )
    discovery: bool = setting(True, doc="publish Home Assistant MQTT discovery (sensors, mode select)")
    discovery_prefix: str = setting("homeassistant", doc="Home Assistant's discovery prefix")

    def __post_init__(self) -> None:
        if self.password is not None and self.username is None:
            raise SettingError("password", "given without username")
        if self.ca_file is not None and not self.tls:
            raise SettingError("ca_file", "only used with tls: true")
        for key in ("prefix", "discovery_prefix"):
            value = getattr(self, key)
            if not value or any(c in value for c in "#+") or value.startswith("/") or value.endswith("/"):
                raise SettingError(
                    key, f"expected a topic prefix without #, + or leading/trailing '/', got {value!r}"
                )


@dataclass(frozen=True)
class StateConfig:
    """The ``state:`` section: what pvcharge keeps across restarts (the mode chosen over the API/MQTT)."""

    file: str | None = setting(
        None,
        doc="state file; default $STATE_DIRECTORY/state.json under systemd, else "
        "$XDG_STATE_HOME (~/.local/state)/pvcharge/state.json",
    )


@dataclass(frozen=True)
class SessionsConfig:
    """The ``sessions:`` section: the charging sessions and daily energy kept in SQLite
    (:mod:`pvcharge.sessions`)."""

    enabled: bool = setting(True, doc="record charging sessions and daily energy")
    database: str | None = setting(
        None,
        doc="SQLite file; default sessions.db beside the state file ($STATE_DIRECTORY under systemd, "
        "else $XDG_STATE_HOME (~/.local/state)/pvcharge)",
    )


@dataclass(frozen=True)
class TariffConfig:
    """The ``tariff:`` section: prices for the sessions' cost and savings, and for the planner
    (:mod:`pvcharge.planning.tariffs`): a fixed price or day-ahead prices, where
    ``price = (market + charges_per_kwh) * (1 + vat_pct / 100)``."""

    grid_price_per_kwh: float = setting(
        0.0,
        doc="price of 1 kWh from the grid, in currency; with a day-ahead source the planner's flat price "
        "for hours without one",
        min=0,
    )
    feed_in_per_kwh: float = setting(0.0, doc="paid for 1 kWh exported, in currency", min=0)
    currency: str = setting("EUR", doc="currency of the prices (a label: EUR, CHF, ...)")
    source: Literal["fixed", "awattar", "energy-charts", "tibber"] = setting(
        "fixed",
        doc="fixed: grid_price_per_kwh at all hours; awattar or energy-charts: day-ahead market prices "
        "(no key) with charges_per_kwh and vat_pct; tibber: Tibber's prices (VAT included) with token",
    )
    charges_per_kwh: float = setting(
        0.0,
        doc="day-ahead: what the supplier adds to the market price per kWh before VAT (grid fees, levies, "
        "margin), in currency",
        min=-1,
        max=10,
    )
    vat_pct: float = setting(0.0, doc="day-ahead: VAT on market price plus charges", unit="%", min=0, max=100)
    bidding_zone: str = setting("DE-LU", doc="energy-charts: the market's bidding zone (DE-LU, AT, ...)")
    refresh_s: float = setting(
        3600.0, doc="day-ahead: how often prices are fetched", unit="s", min=900, max=86400
    )
    url: str | None = setting(
        None, doc="day-ahead: the service's endpoint (default the public one; an emulator in tests)"
    )
    smart_cost_limit: float | None = setting(
        None,
        doc="with a car plugged in, charge at full power from the grid whenever the price (currency/kWh) "
        "is at or below this, in pv and minpv mode; unset: never",
        min=-10,
        max=10,
    )
    token: Secret | None = setting(None, doc="tibber: the personal access token; or token_file: PATH")
    home_id: str | None = setting(None, doc="tibber: the home's id (default: the first with a subscription)")

    def __post_init__(self) -> None:
        if self.source == "tibber":
            if self.token is None:
                raise SettingError(
                    "token", "source tibber needs token (or token_file), from developer.tibber.com"
                )
            if self.vat_pct != 0:
                raise SettingError("vat_pct", "Tibber's prices include VAT already: leave vat_pct at 0")
        elif self.token is not None or self.home_id is not None:
            key = "token" if self.token is not None else "home_id"
            raise SettingError(key, "only used with source: tibber")


@dataclass(frozen=True)
class DeviceConfig:
    """A ``meter:`` or ``charger:`` section: the driver ``type`` and its typed settings.

    ``module`` is the driver module (``pvcharge.meters.huawei``); ``settings`` is an instance of that
    module's ``Config`` dataclass.
    """

    type: str
    module: str
    settings: Any

    def create(self, *, name: str, clock: typing.Callable[[], float], **options: Any) -> Any:
        """Build the driver (no I/O yet): ``module.create(settings, name=..., clock=..., **options)``
        (``options``: what that module's ``create`` takes besides, e.g. the AlphaESS ``account``)."""
        return importlib.import_module(self.module).create(self.settings, name=name, clock=clock, **options)


@dataclass(frozen=True)
class Config:
    """The whole config file, validated."""

    path: str
    site: SiteConfig
    meter: DeviceConfig
    charger: DeviceConfig
    charge_point: ChargePoint
    control: ControlConfig
    log: LogConfig
    api: ApiConfig = ApiConfig()
    mqtt: MqttConfig | None = None
    state: StateConfig = StateConfig()
    sessions: SessionsConfig = SessionsConfig()
    tariff: TariffConfig = TariffConfig()
    forecast: ForecastConfig = ForecastConfig()  # noqa: RUF009 (frozen, so immutable)
    plans: tuple[PlanConfig, ...] = ()
    #: the ``loadpoints:`` section as given (empty with a ``charger:`` section); ``charger`` and
    #: ``charge_point`` are then the first loadpoint's.  See :meth:`all_loadpoints`.
    loadpoints: tuple[LoadpointConfig, ...] = ()
    #: things that work but should be fixed, e.g. a secret in a file others can read; the daemon logs
    #: each as a ``config_warning`` at start-up
    warnings: tuple[str, ...] = ()

    def all_loadpoints(self) -> tuple[LoadpointConfig, ...]:
        """Every loadpoint: the ``loadpoints:`` section, or the ``charger:`` section as one loadpoint
        named ``main`` (mode ``control.mode``, priority 0, no vehicle profile)."""
        return self.loadpoints or (LoadpointConfig(MAIN, self.charger, self.charge_point),)


#: the file's top-level sections, in :class:`Config`'s order (its fields but the path, the charger's limits,
#: which live in ``charger:``, the loadpoints, which replace ``charger:``, and the warnings)
SECTIONS = tuple(
    f.name
    for f in dataclasses.fields(Config)
    if f.name not in ("path", "charge_point", "loadpoints", "warnings")
)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file.

    Args:
        path: the YAML file.
        environ: the environment for ``${NAME}`` references (default ``os.environ``).

    Raises:
        ConfigError: unreadable file, bad YAML, missing/unknown/mistyped key, out-of-range value.
    """
    return parse_config(_file_text(str(path)), str(path), environ=environ)


def read_section(path: str, cls: type[Any], section: str) -> Any:
    """One section of config file ``path`` as an instance of ``cls`` (only that section is validated:
    ``${ENV}``, ``*_file`` secrets and unknown keys as in the daemon), so a command works without the
    drivers' secrets (systemd credentials exist only inside the service): ``pvcharge status``,
    ``mode``, ``sessions``.

    Raises:
        ConfigError: unreadable file, bad YAML, or a bad key in that section.
    """
    data = _top_mapping(load_yaml_text(_file_text(path), path), path)
    return ConfigLoader(path, os.environ).dataclass(cls, data.get(section), section)


def _file_text(path: str) -> str:
    """The config file's text. Raises ConfigError: unreadable, or not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read config file: {exc.strerror or exc}") from exc
    return decode_text(data, path)


def _top_mapping(data: Any, path: str) -> dict[str, Any]:
    """The parsed file as its mapping of sections (an empty file: none). Raises ConfigError otherwise."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, "", f"expected a mapping of sections at the top, got {value_kind(data)}")
    return data


def parse_config(text: str, path: str = "<config>", environ: Mapping[str, str] | None = None) -> Config:
    """Validate config ``text``; ``path`` is used in messages and to resolve ``*_file`` keys."""
    loader = _Loader(path, os.environ if environ is None else environ)
    data = _top_mapping(load_yaml_text(text, path), path)
    loader.check_keys(data, "", [*SECTIONS, "loadpoints"])
    if "charger" in data and "loadpoints" in data:
        raise ConfigError(path, "loadpoints", "give either charger: (one charger) or loadpoints:, not both")
    for required in ("meter", "charger"):
        if required not in data and not (required == "charger" and "loadpoints" in data):
            raise ConfigError(path, required, "missing section (expected a mapping with at least 'type')")
    site = loader.dataclass(SiteConfig, data.get("site"), "site")
    meter = loader.device(data["meter"], "meter", METER_TYPES, extra=None)
    loadpoints: tuple[LoadpointConfig, ...] = ()
    if "loadpoints" in data:
        loadpoints = parse_loadpoints(loader, data["loadpoints"])
        charger, charge_point = loadpoints[0].charger, loadpoints[0].charge_point
    else:
        charger, charge_point = parse_charger(loader, data["charger"], "charger")
    check_circuits(loader, site.circuits, [lp.name for lp in loadpoints] or [MAIN])
    control = loader.dataclass(ControlConfig, data.get("control"), "control")
    log = loader.dataclass(LogConfig, data.get("log"), "log")
    api = loader.dataclass(ApiConfig, data.get("api"), "api")
    mqtt = loader.dataclass(MqttConfig, data["mqtt"], "mqtt") if data.get("mqtt") is not None else None
    state = loader.dataclass(StateConfig, data.get("state"), "state")
    sessions = loader.dataclass(SessionsConfig, data.get("sessions"), "sessions")
    tariff = loader.dataclass(TariffConfig, data.get("tariff"), "tariff")
    forecast = loader.dataclass(ForecastConfig, data.get("forecast"), "forecast")
    plans = loader.value("plans", data.get("plans") or [], tuple[PlanConfig, ...], {})
    names = [lp.name for lp in loadpoints] or [MAIN]
    for i, entry in enumerate(plans):
        if entry.loadpoint is not None and entry.loadpoint not in names:
            raise ConfigError(
                path,
                f"plans[{i}].loadpoint",
                f"no loadpoint {entry.loadpoint!r} (expected one of {', '.join(names)})",
            )
    update_s = float(getattr(meter.settings, "update_interval_s", 0.0))
    if control.max_age_s < update_s:
        raise ConfigError(
            path,
            "control.max_age_s",
            f"must be >= the meter's update interval ({update_s:g} s), got {control.max_age_s:g} s: "
            "every reading would count as stale",
        )
    return Config(
        path,
        site,
        meter,
        charger,
        charge_point,
        control,
        log,
        api,
        mqtt,
        state,
        sessions,
        tariff,
        forecast,
        plans,
        loadpoints,
        warnings=loader.warnings(),
    )


class _Loader(ConfigLoader):
    """The generic loader plus the driver sections (``meter:``, ``charger:``) of this file's layout."""

    def device(
        self, data: Any, section: str, registry: Mapping[str, str], extra: list[str] | None
    ) -> DeviceConfig:
        """Driver section ``data`` at ``section``: its ``type`` picks the module in ``registry`` whose
        ``Config`` dataclass takes the other keys but ``extra`` (keys the caller reads itself)."""
        if not isinstance(data, dict):
            raise self.error(section, f"expected a mapping with at least 'type', got {value_kind(data)}")
        kind = data.get("type")
        if kind is None:
            raise self.error(
                f"{section}.type", f"missing key; expected one of: {', '.join(sorted(registry))}"
            )
        if kind not in registry:
            raise self.error(
                f"{section}.type",
                f"unknown {section} type {kind!r}; expected one of: {', '.join(sorted(registry))}",
            )
        module = importlib.import_module(registry[kind])
        cls = module.Config
        own = {k: v for k, v in data.items() if k != "type" and k not in (extra or [])}
        allowed_extra = ["type", *(extra or [])]
        settings = self.dataclass(cls, own, section, allowed_extra=allowed_extra)
        return DeviceConfig(type=kind, module=registry[kind], settings=settings)


def secret_values(config: Config) -> list[str]:
    """Every secret value in ``config`` (drivers, every loadpoint's charger, API token, MQTT password,
    the forecast's key, the tariff's token), for masking in logs and answers; values shorter than 3
    characters are left out (masking them would garble everything)."""
    chargers = [lp.charger.settings for lp in config.all_loadpoints()]
    sections = [config.meter.settings, *chargers, config.api, config.mqtt, config.forecast, config.tariff]
    return [
        value.reveal()
        for section in sections
        if section is not None
        for f in dataclasses.fields(section)
        if isinstance(value := getattr(section, f.name), Secret) and len(value.reveal()) >= 3
    ]


def to_dict(config: Config) -> dict[str, Any]:
    """The effective config as plain data, secrets shown as ``***`` (for ``check-config``)."""

    def plain(obj: Any) -> Any:
        if isinstance(obj, Secret):
            return "***"
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, tuple):
            return [plain(item) for item in obj]
        return obj

    def charger(device: DeviceConfig, charge_point: ChargePoint) -> dict[str, Any]:
        return {"type": device.type, **plain(charge_point), **plain(device.settings)}

    devices = {
        "meter": {"type": config.meter.type, **plain(config.meter.settings)},
        "charger": charger(config.charger, config.charge_point),
    }
    result = {
        section: devices[section] if section in devices else plain(getattr(config, section))
        for section in SECTIONS
        if getattr(config, section) is not None  # no mqtt: section
    }
    if config.loadpoints:  # the file has loadpoints: instead of charger:
        del result["charger"]
        result["loadpoints"] = [
            {
                "name": lp.name,
                "priority": lp.priority,
                "mode": lp.mode,
                "charger": charger(lp.charger, lp.charge_point),
                "vehicle": plain(lp.vehicle),
            }
            for lp in config.loadpoints
        ]
    return result
