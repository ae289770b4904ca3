"""What the status page's plan chart shows (``GET /api/forecast``): per 15-min slot the PV forecast, the
surplus the planner counted on, the grid price and what the plan does there, and the plan in force.

Pure: it reads the plan service's last plan and the cached sources' last answers (nothing is fetched,
so the API never waits on a forecast or tariff service).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pvcharge.planning.forecast import surplus as surplus_of
from pvcharge.planning.planner import SLOT_S, slot_start
from pvcharge.planning.target import CHARGE_EFFICIENCY
from pvcharge.planning.view import outcome_json

if TYPE_CHECKING:
    from pvcharge.planning.service import PlanService
    from pvcharge.planning.source import CachedSource

#: the chart shows at least this far ahead, in s (and up to the plan's deadline if later)
HORIZON_S = 24 * 3600
#: ... and never further than this, in s
MAX_HORIZON_S = 48 * 3600


def _source(cached: CachedSource | None) -> dict[str, Any] | None:
    if cached is None:
        return None
    return {
        "name": cached.source.name,
        "fetched_s": cached.fetched_s if cached.values else None,
        "last_error": cached.last_error,
    }


def chart_data(service: PlanService, now_s: float, *, currency: str = "EUR") -> dict[str, Any]:
    """The chart's data at ``now_s`` (Unix s).

    Returns:
        ``now_s``, ``currency``; ``slots``: from the current slot to the deadline (at least
        :data:`HORIZON_S`, at most :data:`MAX_HORIZON_S`), each ``start_s``, ``pv_forecast_w`` (W,
        ``null`` without a forecast), ``surplus_w`` (W: the forecast less the base load, with the day's
        correction and ``pv_factor``, as planned; ``null`` without), ``price_per_kwh`` (currency/kWh,
        ``null`` where none), ``source`` (``"grid"``: the plan charges from the grid there, ``"pv"``:
        from the surplus, ``null``: no charging planned), ``power_w`` (the grid-charging power
        planned, W), ``pv_kwh``/``grid_kwh`` (kWh expected there); ``plan``: ``null`` without a plan
        in force, else the target (``deadline_s``, ``energy_kwh`` or ``soc_pct`` with
        ``capacity_kwh``), ``need_kwh``, ``charged_kwh``, ``expected_kwh``, ``met``,
        ``shortfall_kwh``, ``pv_kwh``, ``grid_kwh``, ``cost``, ``latest_start_s``, ``notes``,
        ``vehicle_soc_pct`` (% or ``null``) and ``expected_soc_pct`` (the SoC expected at the
        deadline, % or ``null`` without a SoC); ``prices``/``forecast``: each source's ``name``,
        ``fetched_s`` and ``last_error`` (``null`` when none is configured).
    """
    start_s = slot_start(now_s)
    plan, target = service.plan, service.target
    end_s = start_s + HORIZON_S
    if target is not None:
        end_s = min(max(end_s, slot_start(target.deadline_s) + SLOT_S), start_s + MAX_HORIZON_S)
    prices = service.prices.values if service.prices is not None else None
    pv = service.forecast.values if service.forecast is not None else None
    surplus = surplus_of(pv, service.base_load_w, service.pv_factor_today) if pv is not None else {}
    planned = {int(slot.start_s // SLOT_S) * SLOT_S: slot for slot in plan.slots} if plan is not None else {}
    slots = []
    for t in range(start_s, end_s, SLOT_S):
        pv_w = pv.get(t) if pv is not None else None
        surplus_w = surplus[t] * service.pv_factor if t in surplus else None
        slot = planned.get(t)
        source = None
        if slot is not None:
            source = "grid" if slot.grid else ("pv" if slot.pv_kwh > 0 else None)
        slots.append(
            {
                "start_s": t,
                "pv_forecast_w": pv_w,
                "surplus_w": surplus_w,
                "price_per_kwh": prices.get(t) if prices is not None else None,
                "source": source,
                "power_w": slot.power_w if slot is not None else 0.0,
                "pv_kwh": slot.pv_kwh if slot is not None else 0.0,
                "grid_kwh": slot.grid_kwh if slot is not None else 0.0,
            }
        )
    summary = None
    if plan is not None and target is not None:
        entry, soc = target.plan, service.vehicle_soc_pct
        expected_soc = None
        if entry.capacity_kwh is not None and soc is not None:
            added_pct = plan.expected_kwh * CHARGE_EFFICIENCY / entry.capacity_kwh * 100
            expected_soc = min(100.0, soc + added_pct)
        summary = {
            "deadline_s": target.deadline_s,
            "deadline": entry.deadline,
            "energy_kwh": entry.energy_kwh,
            "soc_pct": entry.soc_pct,
            "capacity_kwh": entry.capacity_kwh,
            "charged_kwh": service.charged_kwh,
            **outcome_json(plan),
            "vehicle_soc_pct": soc,
            "expected_soc_pct": expected_soc,
        }
    return {
        "now_s": now_s,
        "currency": currency,
        "slots": slots,
        "plan": summary,
        "prices": _source(service.prices),
        "forecast": _source(service.forecast),
    }
