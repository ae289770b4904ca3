"""Prometheus metrics, read from ``Daemon.status()`` at scrape time.

A custom collector in a registry of its own (no global state: two daemons in one process, as in the
tests, never share metrics).  Units follow Prometheus' naming rules (``_watts``, ``_amperes``,
``_seconds``, ``_total`` for counters) and the project's signs: ``pvcharge_grid_power_watts`` > 0
imports, ``pvcharge_battery_power_watts`` > 0 discharges.  A value the daemon does not have (no meter
reading yet, no battery) is left out rather than exported as 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from pvcharge.control.config import MODES
from pvcharge.sessions.tally import DayTotals

#: site keys of the status → (metric name, help)
_SITE = {
    "grid_power_w": ("pvcharge_grid_power_watts", "Grid exchange in W: > 0 import, < 0 export."),
    "pv_power_w": ("pvcharge_pv_power_watts", "PV production in W."),
    "battery_power_w": (
        "pvcharge_battery_power_watts",
        "Home battery power in W: > 0 discharging, < 0 charging.",
    ),
    "house_power_w": ("pvcharge_house_power_watts", "Load behind the grid meter, car included, in W."),
    "battery_soc_pct": ("pvcharge_battery_soc_percent", "Home battery state of charge in % (0-100)."),
    "age_s": ("pvcharge_meter_reading_age_seconds", "Age of the last good meter reading in s."),
}

_CHARGER = {
    "power_w": ("pvcharge_car_power_watts", "Charging power in W."),
    "current_a": ("pvcharge_car_current_amperes", "Current the charger allows the car, A per phase."),
    "phases": ("pvcharge_car_phases", "Phases the car draws on (0 while not charging)."),
    "connected": ("pvcharge_car_connected", "1 if a car is plugged in."),
    "charging": ("pvcharge_car_charging", "1 if the car draws current."),
}

#: Stats counters → (metric name without _total, help)
_COUNTERS = {
    "cycles": ("pvcharge_cycles", "Control cycles run."),
    "charger_writes": ("pvcharge_charger_writes", "Commands written to the charger."),
    "starts": ("pvcharge_starts", "Commands that went from pause to a current > 0."),
    "meter_failures": ("pvcharge_meter_failures", "Cycles without a meter reading."),
    "charger_failures": ("pvcharge_charger_failures", "Cycles without a charger reading."),
    "write_failures": ("pvcharge_write_failures", "Failed writes to the charger."),
    "deferred_writes": ("pvcharge_deferred_writes", "Writes a driver held back for its rate limit."),
    "late_reads": ("pvcharge_late_reads", "Reads still running at the end of a cycle."),
    "held_increases": (
        "pvcharge_held_increases",
        "Increases not sent because another charger's decrease was not delivered.",
    ),
}


def _gauge(name: str, doc: str, value: Any, unit: str = "") -> GaugeMetricFamily | None:
    if value is None:
        return None
    return GaugeMetricFamily(name, doc, value=float(value), unit=unit)


class StatusCollector(Collector):
    """Turns one ``status()`` into metric families on every scrape."""

    def __init__(self, status: Callable[[], Mapping[str, Any]]) -> None:
        self._status = status

    def describe(self) -> Iterable[Metric]:
        return []  # nothing fixed to check for clashes: the registry is ours alone

    def collect(self) -> Iterable[Metric]:
        status = self._status()
        yield InfoMetricFamily(
            "pvcharge_build", "pvcharge version.", value={"version": str(status["version"])}
        )
        yield GaugeMetricFamily(
            "pvcharge_uptime_seconds", "Time since the daemon started.", value=status["uptime_s"]
        )
        site = status.get("site") or {}
        for key, (name, doc) in _SITE.items():
            metric = _gauge(name, doc, site.get(key))
            if metric is not None:
                yield metric
        # one series per loadpoint, labelled with its name when there are several; a single loadpoint
        # (a ``charger:`` config) keeps the unlabelled series of the top-level status
        loadpoints = status.get("loadpoints") or []
        parts: list[tuple[str | None, Mapping[str, Any]]]
        if len(loadpoints) > 1:
            parts = [(str(lp["name"]), lp) for lp in loadpoints]
        else:
            parts = [
                (
                    None,
                    {
                        "mode": status["mode"],
                        "charger": status.get("charger"),
                        "command": status.get("command"),
                        "available_w": status["available_w"],
                        "writes_blocked": status["writes_blocked"],
                        "writes": status["stats"]["charger_writes"],
                        "starts": status["stats"]["starts"],
                    },
                )
            ]
        yield from _loadpoint_metrics(parts)
        devices = status["devices"]
        named = len(loadpoints) > 1
        extra = ["loadpoint"] if named else []
        up = GaugeMetricFamily(
            "pvcharge_device_up", "1 if the device answered its last read.", labels=["device", "name", *extra]
        )
        consecutive = GaugeMetricFamily(
            "pvcharge_device_consecutive_failures",
            "Failed reads in a row.",
            labels=["device", "name", *extra],
        )
        failures = CounterMetricFamily(
            "pvcharge_device_failures", "Failed reads.", labels=["device", "name", *extra]
        )
        last_success = GaugeMetricFamily(
            "pvcharge_device_last_success_timestamp_seconds",
            "Unix time of the last good read.",
            labels=["device", "name", *extra],
        )
        if named:  # the meter belongs to the site (loadpoint=""), each charger to its loadpoint
            healths = [("meter", devices["meter"], "")]
            healths += [("charger", lp["device"], str(lp["name"])) for lp in loadpoints]
        else:
            healths = [(role, health, "") for role, health in devices.items()]
        for role, health, loadpoint in healths:
            labels = [role, str(health["name"]), *([loadpoint] if named else [])]
            up.add_metric(labels, 1.0 if health["ok"] else 0.0)
            consecutive.add_metric(labels, float(health["consecutive_failures"]))
            failures.add_metric(labels, float(health["failures"]))
            if health["last_success_s"] is not None:
                last_success.add_metric(labels, float(health["last_success_s"]))
        yield from (up, consecutive, failures, last_success)
        stats = status["stats"]
        for key, (name, doc) in _COUNTERS.items():
            if key not in _LOADPOINT_COUNTERS:
                yield CounterMetricFamily(name, doc, value=float(stats[key]))
        yield GaugeMetricFamily(
            "pvcharge_cycle_duration_seconds",
            "Wall time the last control cycle took.",
            value=stats["last_cycle_s"],
        )
        yield GaugeMetricFamily(
            "pvcharge_cycle_duration_max_seconds",
            "The longest control cycle since start.",
            value=stats["max_cycle_s"],
        )


#: Stats counters kept per loadpoint (its status' ``writes``, ``starts``)
_LOADPOINT_COUNTERS = {"charger_writes": "writes", "starts": "starts"}

_COMMAND = {
    "current_a": ("pvcharge_command_current_amperes", "Commanded current, A per phase (0 = paused)."),
    "phases": ("pvcharge_command_phases", "Commanded phases (1 or 3)."),
}


def _loadpoint_metrics(parts: Sequence[tuple[str | None, Mapping[str, Any]]]) -> Iterable[Metric]:
    """The charger's gauges and counters, one series per ``(name, loadpoint status)`` of ``parts``:
    labelled ``loadpoint=name``, or unlabelled for the one part named ``None`` (a single loadpoint).
    A value a loadpoint does not have (no charger reading yet) is left out, as are families no
    loadpoint has a value for."""
    extra = [] if parts and parts[0][0] is None else ["loadpoint"]

    def family(
        kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
        name: str,
        doc: str,
        values: Iterable[tuple[str | None, Any]],
        labels: Iterable[str] = (),
    ) -> Metric | None:
        metric = kind(name, doc, labels=[*labels, *extra])
        for loadpoint, value in values:
            if value is not None:
                *head, v = value if isinstance(value, tuple) else (value,)
                metric.add_metric([*head, *([str(loadpoint)] if extra else [])], float(v))
        return metric if metric.samples else None

    families: list[Metric | None] = [
        family(
            GaugeMetricFamily,
            "pvcharge_mode",
            "1 for the mode in force, 0 for the others.",
            [(n, (m, 1.0 if lp["mode"] == m else 0.0)) for n, lp in parts for m in MODES],
            labels=["mode"],
        )
    ]
    for key, (name, doc) in _CHARGER.items():
        values = [(n, (lp.get("charger") or {}).get(key)) for n, lp in parts]
        families.append(family(GaugeMetricFamily, name, doc, values))
    for key, (name, doc) in _COMMAND.items():
        values = [(n, (lp.get("command") or {}).get(key)) for n, lp in parts]
        families.append(family(GaugeMetricFamily, name, doc, values))
    families.append(
        family(
            GaugeMetricFamily,
            "pvcharge_available_power_watts",
            "Surplus the controller used in the last cycle, W.",
            [(n, lp["available_w"]) for n, lp in parts],
        )
    )
    families.append(
        family(
            GaugeMetricFamily,
            "pvcharge_writes_blocked",
            "1 if the charger refuses all writes.",
            [(n, float(lp["writes_blocked"])) for n, lp in parts],
        )
    )
    for key, lp_key in _LOADPOINT_COUNTERS.items():
        name, doc = _COUNTERS[key]
        families.append(family(CounterMetricFamily, name, doc, [(n, lp[lp_key]) for n, lp in parts]))
    yield from (f for f in families if f is not None)


#: DayTotals fields → the ``flow`` label of pvcharge_site_energy_joules_total
_SITE_FLOWS = {
    "pv_wh": "pv",
    "import_wh": "grid_import",
    "export_wh": "grid_export",
    "battery_charge_wh": "battery_charge",
    "battery_discharge_wh": "battery_discharge",
    "car_wh": "car",
}
#: DayTotals fields → the ``source`` label of pvcharge_car_energy_joules_total
_CAR_SOURCES = {"car_pv_wh": "pv", "car_battery_wh": "battery", "car_grid_wh": "grid"}
J_PER_WH = 3600.0


class EnergyCollector(Collector):
    """Energy counters from the session history (:meth:`pvcharge.sessions.SessionRecorder.totals`), in J
    (Prometheus' base unit; ÷ 3.6e6 for kWh): everything recorded, so they survive restarts."""

    def __init__(self, totals: Callable[[], DayTotals | None]) -> None:
        self._totals = totals

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        totals = self._totals()
        if totals is None:
            return
        site = CounterMetricFamily(
            "pvcharge_site_energy_joules",
            "Site energy recorded, J, by flow (pv, grid_import, grid_export, battery_charge, "
            "battery_discharge, car).",
            labels=["flow"],
        )
        for key, flow in _SITE_FLOWS.items():
            site.add_metric([flow], getattr(totals, key) * J_PER_WH)
        car = CounterMetricFamily(
            "pvcharge_car_energy_joules",
            "Energy charged into the car, J, by source (pv, battery, grid; the replay's attribution).",
            labels=["source"],
        )
        for key, source in _CAR_SOURCES.items():
            car.add_metric([source], getattr(totals, key) * J_PER_WH)
        yield site
        yield car


def metrics_registry(
    status: Callable[[], Mapping[str, Any]], energy: Callable[[], DayTotals | None] | None = None
) -> CollectorRegistry:
    """A registry of its own holding one :class:`StatusCollector` over ``status`` and, with ``energy``
    (the session history's totals), an :class:`EnergyCollector`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status))
    if energy is not None:
        registry.register(EnergyCollector(energy))
    return registry
