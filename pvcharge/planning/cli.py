"""``pvcharge plan``: the charge plans of the running daemon, set and cleared at run time, and what-if
plans computed here.

    pvcharge plan                                  # the daemon's plans and its last plan (GET /api/plans)
    pvcharge plan set "20 kWh by 07:00"            # a one-off for the next 07:00 (PUT /api/plans/next)
    pvcharge plan set "15 kWh by 18:00 on mon,wed" # repeating until cleared
    pvcharge plan clear                            # clear it (DELETE /api/plans/next)
    pvcharge plan set "20 kWh by 07:00" --loadpoint garage   # another loadpoint's (as plan, plan clear)
    pvcharge plan --local [--kwh 20 --by 07:00] [--charged-kwh 3] [--now 2026-12-07T22:00+01:00]

The first three talk to the running daemon's API as ``pvcharge mode`` does (address and token from the
config's ``api:`` section, or ``--url``), about the first loadpoint, or with ``--loadpoint NAME`` about
that one (``/api/loadpoints/NAME/plans``). ``--local`` (implied by ``--kwh``, ``--by``, ``--now``,
``--charged-kwh``) does not ask the daemon: it shows the plan the same rules give with the config's
tariff and forecast sources as they are now (fetched once). Exit codes: 0 the target can be met (or
the command was done), 1 it cannot (or the daemon did not answer), 2 a config or usage error, or no
plan to show.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time as wallclock
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

if TYPE_CHECKING:  # imported where used: every pvcharge command builds this parser, few plan
    from pvcharge.planning.planner import Plan, PlannedSlot


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan", help="show, set or clear the running daemon's charge plan; or a what-if plan (--local)"
    )
    p.add_argument(
        "action", nargs="?", choices=("show", "set", "clear"), default="show", help="default: show"
    )
    p.add_argument("text", nargs="?", help='with set: e.g. "20 kWh by 07:00" or "15 kWh by 18:00 on mon,wed"')
    p.add_argument(
        "--config",
        "-c",
        help="the config file (its api: section; with --local its tariff:, forecast:, plans:)",
    )
    p.add_argument("--url", help="the daemon's API, e.g. http://127.0.0.1:7080 (default: from the config)")
    p.add_argument("--json", action="store_true", help="print the daemon's JSON answer")
    p.add_argument("--loadpoint", "-l", help="the loadpoint's plans (default: the first loadpoint's)")
    p.add_argument("--local", action="store_true", help="compute the plan here instead of asking the daemon")
    p.add_argument("--kwh", type=float, help="--local: energy to add (default: the next plan of plans:)")
    p.add_argument("--by", help="--local: deadline HH:MM local time (with --kwh)")
    p.add_argument("--charged-kwh", type=float, help="--local: energy already added towards it")
    p.add_argument("--now", help="--local: plan as if it were this time (ISO 8601 with offset)")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    local = args.local or any(v is not None for v in (args.kwh, args.by, args.now, args.charged_kwh))
    if local:
        if args.action != "show" or args.loadpoint is not None:
            what = f"plan {args.action}" if args.action != "show" else "plan --loadpoint"
            print(f"pvcharge: {what}: talks to the daemon; not with --local", file=sys.stderr)
            return 2
        return _local(args)
    return _remote(args)


def format_plans(state: dict[str, Any]) -> str:
    """``GET /api/plans`` in a few lines: the plans in force, then the last plan and its notes."""
    lines = []
    for entry in state["plans"]:
        deadline_s = entry["next_deadline_s"]
        when = (
            "" if deadline_s is None else datetime.fromtimestamp(deadline_s).strftime(" (next: %a %d %H:%M)")
        )
        kind = "once" if entry["once"] else "repeating"
        lines.append(f"{entry['source']:7} {entry['text']}, {kind}{when}")
    if not lines:
        lines.append('no plans (set one: pvcharge plan set "20 kWh by 07:00")')
    plan, target = state["plan"], state["target"]
    if plan is not None:
        lines.append(plan["summary"])
        lines.extend(f"  note: {note}" for note in plan["notes"])
        if target is not None:
            lines.append(f"  charged so far: {target['charged_kwh']:.1f} kWh")
    elif target is not None:
        lines.append(
            "no plan made now: " + ("waiting for the car" if not state["car_connected"] else "pending")
        )
    return "\n".join(lines)


def _remote(args: argparse.Namespace) -> int:
    from pvcharge.api.cli import _Failed, _request
    from pvcharge.planning.runtime import parse_text
    from pvcharge.settings import SettingError

    base = (
        "/api/plans" if args.loadpoint is None else f"/api/loadpoints/{quote(args.loadpoint, safe='')}/plans"
    )
    try:
        if args.action == "set":
            if not args.text:
                print('pvcharge: plan set: give the plan, e.g. "20 kWh by 07:00"', file=sys.stderr)
                return 2
            try:
                body = parse_text(args.text)
            except SettingError as exc:
                print(f"pvcharge: plan set: {exc.problem}", file=sys.stderr)
                return 2
            state = _request(args, "PUT", f"{base}/next", body)
        elif args.action == "clear":
            state = _request(args, "DELETE", f"{base}/next")
        else:
            state = _request(args, "GET", base)
    except _Failed as exc:
        print(f"pvcharge: {exc}", file=sys.stderr)
        return exc.code
    print(json.dumps(state, indent=2) if args.json else format_plans(state))
    plan = state["plan"]
    return 1 if plan is not None and not plan["met"] else 0


def _local(args: argparse.Namespace) -> int:
    from pvcharge.api.cli import DEFAULT_CONFIG
    from pvcharge.cli import _load
    from pvcharge.planning.config import PlanConfig
    from pvcharge.planning.forecast import surplus as surplus_of
    from pvcharge.planning.planner import ChargeLimits, next_deadline, plan_charge
    from pvcharge.planning.sources import forecast_source, tariff_source
    from pvcharge.planning.target import local_zone, next_target, zone_of
    from pvcharge.settings import SettingError

    config = _load(args.config or DEFAULT_CONFIG)
    now_s = datetime.fromisoformat(args.now).timestamp() if args.now else wallclock.time()
    if args.kwh is not None:
        if args.by is None:
            print("pvcharge: plan: --kwh needs --by HH:MM", file=sys.stderr)
            return 2
        try:
            entry = PlanConfig(deadline=args.by, energy_kwh=args.kwh)
        except SettingError as exc:
            print(f"pvcharge: plan: --by/--kwh: {exc.problem}", file=sys.stderr)
            return 2
        zone = local_zone()
        deadline_s = next_deadline(now_s, entry.deadline_time(), zone)
        need_kwh = args.kwh
    else:
        target = next_target(config.plans, now_s)
        if target is None:
            print("pvcharge: plan: no energy_kwh plan in plans: (or give --kwh and --by)", file=sys.stderr)
            return 2
        entry, deadline_s, need_kwh = target.plan, target.deadline_s, target.energy_kwh
        zone = zone_of(entry)

    async def fetch() -> tuple[dict[int, float] | None, dict[int, float] | None]:
        prices = tariff_source(config.tariff, clock=wallclock.time)
        forecast = forecast_source(config.forecast, clock=wallclock.time)
        try:
            return (
                await forecast.latest(now_s) if forecast is not None else None,
                await prices.latest(now_s),
            )
        finally:
            await prices.source.close()
            if forecast is not None:
                await forecast.source.close()

    pv, prices = asyncio.run(fetch())
    surplus = surplus_of(pv, config.forecast.base_load_w) if pv is not None else None
    plan = plan_charge(
        need_kwh=max(0.0, need_kwh - (args.charged_kwh or 0.0)),
        deadline_s=deadline_s,
        now_s=now_s,
        limits=ChargeLimits.of(config.charge_point, config.site.voltage_v),
        surplus_w=surplus,
        prices_per_kwh=prices,
        fallback_price_per_kwh=config.tariff.grid_price_per_kwh,
        feed_in_per_kwh=config.tariff.feed_in_per_kwh,
        pv_factor=config.forecast.pv_factor,
    )
    print(summary(plan, entry.deadline, zone, config.tariff.currency))
    for note in plan.notes:
        print(f"  note: {note}")
    return 0 if plan.met else 1


def windows(slots: tuple[PlannedSlot, ...]) -> list[list[PlannedSlot]]:
    """Runs of adjacent grid slots."""
    runs: list[list[PlannedSlot]] = []
    for slot in slots:
        if runs and runs[-1][-1].end_s == slot.start_s:
            runs[-1].append(slot)
        else:
            runs.append([slot])
    return runs


def summary(plan: Plan, by: str, zone: ZoneInfo, currency: str) -> str:
    """``plan 20 kWh by 07:00: met (20.4 kWh expected: 8.1 from PV, 12.3 from the grid); from the grid:
    02:00–04:00 at 0.181–0.194 EUR/kWh (cheapest before the deadline: 0.179); cost 2.31 EUR``."""

    def hhmm(t_s: float) -> str:
        return datetime.fromtimestamp(t_s, zone).strftime("%H:%M")

    head = f"plan {plan.need_kwh:g} kWh by {by}: "
    split = (
        f"{plan.expected_kwh:.1f} kWh expected: {plan.pv_kwh:.1f} from PV, {plan.grid_kwh:.1f} from the grid"
    )
    if plan.met:
        head += f"met ({split})"
    else:
        head += (
            f"NOT met ({split}; {plan.shortfall_kwh:.1f} kWh short): full power from now "
            f"(the latest start was {hhmm(plan.latest_start_s)})"
        )
    runs = windows(plan.grid_slots)
    if not runs:
        return head + "; no grid charging needed"
    parts = []
    for run in runs:
        low = min(s.price_per_kwh for s in run)
        high = max(s.price_per_kwh for s in run)
        price = f"{low:.3f}" if low == high else f"{low:.3f}–{high:.3f}"
        parts.append(f"{hhmm(run[0].start_s)}–{hhmm(run[-1].end_s)} at {price} {currency}/kWh")
    cheapest = min(s.price_per_kwh for s in plan.slots)
    return (
        f"{head}; from the grid: {', '.join(parts)} (cheapest before the deadline: {cheapest:.3f}); "
        f"cost {plan.cost:.2f} {currency}"
    )
