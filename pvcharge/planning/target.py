"""The plan in force for a loadpoint: which of its plans has the nearest deadline (in the plan's time zone
or the system's), and how much energy it still asks for at the charger.

A plan given as ``soc_pct`` plans the energy at the charger from the car's SoC
(:attr:`~pvcharge.readings.ChargerReading.vehicle_soc_pct`, e.g. an OCPP box's ``SoC``)::

    need_kwh = (soc_pct - vehicle_soc_pct) / 100 * capacity_kwh / CHARGE_EFFICIENCY

with :data:`CHARGE_EFFICIENCY` 0.9 (charger to battery: on-board charger and battery losses), as evcc
does (``core/soc/estimator.go``: ``ChargeEfficiency = 0.9``, remaining energy = SoC gap × capacity /
0.9). Without a SoC reading the car is taken as empty, as evcc's estimator does before its first SoC
(its SoC starts at 0): the plan asks for ``soc_pct / 100 × capacity_kwh / 0.9`` less what the car took
since it connected, and says so in its notes. That may buy more grid energy than needed, never less;
the car stops by itself when full.

The plan service that counts the energy and steers the daemon by the plan is
:mod:`pvcharge.planning.service`.  No I/O but reading the system's time zone (:func:`local_zone`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pvcharge.planning import runtime
from pvcharge.planning.config import PlanConfig
from pvcharge.planning.planner import energy_to_add_kwh, next_deadline

#: share of the energy at the charger that reaches the car's battery (evcc's ``soc.ChargeEfficiency``).
CHARGE_EFFICIENCY = 0.9
NO_SOC_NOTE = "no vehicle SoC: planned from 0 %"
#: the system's time zone without ``$TZ``: a link into the zone database, or a copy of a zone file
LOCALTIME = Path("/etc/localtime")


@dataclass(frozen=True)
class Target:
    """The plan in force: its entry, its next deadline (Unix s), the energy it asks for at the charger
    (kWh; for a ``soc_pct`` plan, from an empty battery: see :func:`need_kwh`) and where it comes from
    (``config``, or who set it at run time: ``api``, ``mqtt``)."""

    plan: PlanConfig
    deadline_s: float
    energy_kwh: float
    source: str = "config"


def need_kwh(target: Target, charged_kwh: float, vehicle_soc_pct: float | None) -> tuple[float, str | None]:
    """The energy still to add at the charger (kWh) and, for a ``soc_pct`` plan without a SoC, the
    note that says it was planned from 0 %.

    An ``energy_kwh`` plan: what is left after ``charged_kwh``. A ``soc_pct`` plan with the car's SoC:
    the SoC gap × ``capacity_kwh`` / :data:`CHARGE_EFFICIENCY` (what was charged shows in the SoC);
    without: ``target.energy_kwh`` (from 0 %) less ``charged_kwh``.
    """
    plan = target.plan
    if plan.soc_pct is not None and plan.capacity_kwh is not None and vehicle_soc_pct is not None:
        return energy_to_add_kwh(plan.soc_pct, vehicle_soc_pct, plan.capacity_kwh) / CHARGE_EFFICIENCY, None
    note = NO_SOC_NOTE if plan.soc_pct is not None else None
    return max(0.0, target.energy_kwh - charged_kwh), note


#: what :func:`local_zone` found last for :data:`LOCALTIME`: (its key, the zone)
_localtime_zone: tuple[tuple[str, int, int, int] | None, ZoneInfo] | None = None


def local_zone() -> ZoneInfo:
    """The system's time zone: ``$TZ`` if set, else what :data:`LOCALTIME` is (a link into the zone
    database, or a zone file), else UTC.

    :data:`LOCALTIME` is read again only when it changed: the zone found last is kept with the link's
    target and the file's inode, mtime and size (a ``stat``), so a new zone is picked up without a
    restart but a zone file is not parsed at each call (the plan service and the MQTT plan topics ask
    every cycle). A ``$TZ`` zone is cached by :mod:`zoneinfo` itself."""
    global _localtime_zone
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(name)
    target = str(LOCALTIME.resolve())
    try:
        stat = os.stat(target)
        key: tuple[str, int, int, int] | None = (target, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = None
    if _localtime_zone is not None and key is not None and _localtime_zone[0] == key:
        return _localtime_zone[1]
    zone = _read_localtime(target)
    _localtime_zone = (key, zone)
    return zone


def _read_localtime(target: str) -> ZoneInfo:
    """The zone of :data:`LOCALTIME`, whose resolved path is ``target`` (UTC: none, or no zone file)."""
    if "zoneinfo/" in target:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
    try:
        with LOCALTIME.open("rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError):
        return ZoneInfo("UTC")


def zone_of(entry: PlanConfig) -> ZoneInfo:
    """The time zone of ``entry``'s deadline: its ``timezone``, else the system's."""
    return ZoneInfo(entry.timezone) if entry.timezone else local_zone()


def next_target(
    plans: Sequence[PlanConfig], now_s: float, extra: runtime.RuntimePlan | None = None
) -> Target | None:
    """The plan with the nearest next deadline among ``plans`` and the run-time plan ``extra`` (a
    one-off whose deadline has passed is skipped), or ``None``; a ``soc_pct`` plan's ``energy_kwh`` is
    the energy from an empty battery (``soc_pct / 100 × capacity_kwh / CHARGE_EFFICIENCY``)."""
    best: Target | None = None
    candidates = [
        (entry, next_deadline(now_s, entry.deadline_time(), zone_of(entry), entry.days()), "config")
        for entry in plans
    ]
    if extra is not None:
        deadline_s = extra.next_deadline_s(now_s, zone_of)
        if deadline_s is not None:
            candidates.append((extra.entry, deadline_s, extra.source))
    for entry, deadline_s, source in candidates:
        if entry.energy_kwh is not None:
            energy_kwh = entry.energy_kwh
        elif entry.soc_pct is not None and entry.capacity_kwh is not None:
            energy_kwh = entry.soc_pct / 100 * entry.capacity_kwh / CHARGE_EFFICIENCY
        else:
            continue  # (PlanConfig refuses such an entry)
        if best is None or deadline_s < best.deadline_s:
            best = Target(entry, deadline_s, energy_kwh, source)
    return best
