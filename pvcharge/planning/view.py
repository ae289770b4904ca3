"""What the plan service shows (the API's ``GET /api/plans``, MQTT's ``P/plan``): the plans in force
and the last plan made, as JSON (shape: ``PlanState`` in :mod:`pvcharge.api.openapi_plans`; times Unix s,
energy kWh, power W, prices currency/kWh)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pvcharge.planning import runtime
from pvcharge.planning.cli import summary
from pvcharge.planning.planner import Plan, next_deadline
from pvcharge.planning.target import zone_of

if TYPE_CHECKING:
    from pvcharge.planning.service import PlanService


def outcome_json(plan: Plan) -> dict[str, Any]:
    """What ``plan`` expects: ``need_kwh``, ``met``, ``expected_kwh``, ``shortfall_kwh``, ``pv_kwh``,
    ``grid_kwh`` (kWh), ``cost`` (currency), ``latest_start_s`` (Unix s) and its ``notes`` (the fallbacks
    in force), as ``GET /api/plans`` and the plan chart show them."""
    return {
        "need_kwh": plan.need_kwh,
        "met": plan.met,
        "expected_kwh": plan.expected_kwh,
        "shortfall_kwh": plan.shortfall_kwh,
        "pv_kwh": plan.pv_kwh,
        "grid_kwh": plan.grid_kwh,
        "cost": plan.cost,
        "latest_start_s": plan.latest_start_s,
        "notes": list(plan.notes),
    }


def plan_state(service: PlanService) -> dict[str, Any]:
    """``service``'s plans in force (each with its text, source, one-off or not, next deadline), its
    target and the last plan made (its slots, met, expected energy, notes and a one-line summary)."""
    now_s = service.daemon.clock()
    plans: list[dict[str, Any]] = []
    for entry in service.plans:
        deadline_s = next_deadline(now_s, entry.deadline_time(), zone_of(entry), entry.days())
        plans.append(
            {
                **runtime.entry_json(entry),
                "text": runtime.as_text(entry, repeating=True),
                "source": "config",
                "once": False,
                "next_deadline_s": deadline_s,
            }
        )
    if service.runtime is not None:
        plans.append(
            {
                **runtime.entry_json(service.runtime.entry),
                "text": runtime.as_text(service.runtime.entry, repeating=not service.runtime.once),
                "source": service.runtime.source,
                "once": service.runtime.once,
                "next_deadline_s": service.runtime.next_deadline_s(now_s, zone_of),
            }
        )
    target = service.target
    plan = service.plan
    result: dict[str, Any] | None = None
    if plan is not None and target is not None:
        result = {
            "made_at_s": service.plan_at_s,
            "deadline_s": plan.deadline_s,
            **outcome_json(plan),
            "summary": summary(plan, target.plan.deadline, zone_of(target.plan), service.currency),
            "slots": [
                {
                    "start_s": s.start_s,
                    "end_s": s.end_s,
                    "power_w": s.power_w,
                    "pv_kwh": s.pv_kwh,
                    "grid_kwh": s.grid_kwh,
                    "price_per_kwh": s.price_per_kwh,
                }
                for s in plan.slots
            ],
        }
    return {
        "plans": plans,
        "target": None
        if target is None
        else {
            "source": target.source,
            "deadline_s": target.deadline_s,
            "energy_kwh": target.energy_kwh,
            "charged_kwh": service.charged_kwh,
        },
        "plan": result,
        "car_connected": service.connected,
        "grid_charging": service.grid_charging,
    }
