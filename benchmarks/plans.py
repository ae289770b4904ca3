"""Score charge plans on every trace of a folder (issue 17, item 5): a plan of ``--kwh`` (default 15)
from 08:00 to ``--by`` (default 18:00) local time, the car at 6–16 A on 1 or 3 phases (1.38–11.04 kW).

    python -m benchmarks.plans                      # ../shared/traces, markdown table
    python -m benchmarks.plans --kwh 25 --by 16:00
    python -m benchmarks.plans --loop --seeds 3     # through the 5-s control loop (slower)

Prices: the day-ahead emulator's winter curve (``pvcharge.sim.dayahead.winter_day_eur_mwh``, by local
hour) as a customer price with 0.18/kWh charges and 19 % VAT. The slot-level replay and the forecast
error are described in :mod:`pvcharge.planning.score`; traces shorter than the plan's window are skipped.
``--loop`` replays the 5-s control loop instead, with the daemon's plan service steering the
controller (:mod:`pvcharge.planning.loopscore`), on a 3-phase 6–16 A charge point.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from pvcharge.control.config import ChargePoint
from pvcharge.logs import configure_logging
from pvcharge.planning.config import PlanConfig
from pvcharge.planning.loopscore import score_day_loop
from pvcharge.planning.planner import SLOT_S, ChargeLimits, slot_start
from pvcharge.planning.score import PlanScore, score_day
from pvcharge.planning.tariffs import PriceFormula
from pvcharge.sim.dayahead import winter_day_eur_mwh
from pvcharge.sim.plandemo import zone_name
from pvcharge.sim.trace import load_trace

DEFAULT_TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "traces"
LIMITS = ChargeLimits(6 * 230.0, 16 * 230.0 * 3)
FORMULA = PriceFormula(charges_per_kwh=0.18, vat_pct=19)
#: ``--loop``'s charge point: 6–16 A on 3 phases (4.14–11.04 kW; the replay's car has no phase switching)
LOOP_CHARGE_POINT = ChargePoint(min_current_a=6, max_current_a=16, phases=3)


def local_midnight(t_s: float, utc_offset_s: int) -> float:
    return (t_s + utc_offset_s) // 86400 * 86400 - utc_offset_s


def day_scores(
    path: Path,
    kwh: float,
    arrive_h: float,
    by_h: float,
    seeds: range,
    pv_factor: float = 0.8,
    *,
    loop: bool = False,
) -> list[list[PlanScore]] | None:
    """The three policies' scores on the trace at ``path``, once per forecast error seed (the trace read
    once); ``None`` when the trace does not cover the plan's window (to within an hour). ``loop``:
    through the 5-s control loop (:mod:`pvcharge.planning.loopscore`)."""
    trace = load_trace(path)
    midnight = local_midnight(trace.start_s, trace.utc_offset_s)
    arrive_s, deadline_s = midnight + arrive_h * 3600, midnight + by_h * 3600
    if trace.start_s > arrive_s + 3600 or trace.end_s < deadline_s - 3600:
        return None
    prices = {
        t: FORMULA.price_per_kwh(winter_day_eur_mwh(t + trace.utc_offset_s))
        for t in range(slot_start(arrive_s), int(deadline_s) + SLOT_S, SLOT_S)
    }
    if loop:
        hours, minutes = divmod(round(by_h * 60), 60)
        plan = PlanConfig(deadline=f"{hours:02d}:{minutes:02d}", energy_kwh=kwh, timezone=zone_name(trace))
        first, *others = seeds
        day = functools.partial(
            score_day_loop,
            trace,
            plan=plan,
            arrive_s=arrive_s,
            deadline_s=deadline_s,
            charge_point=LOOP_CHARGE_POINT,
            prices=prices,
            pv_factor=pv_factor,
        )
        runs = [day(seed=first)]
        for seed in others:  # (the baselines do not depend on the forecast)
            planner = day(seed=seed, with_baselines=False)
            runs.append(planner + runs[0][1:])
        return runs
    return [
        score_day(
            trace,
            need_kwh=kwh,
            arrive_s=arrive_s,
            deadline_s=deadline_s,
            limits=LIMITS,
            prices=prices,
            seed=seed,
            pv_factor=pv_factor,
        )
        for seed in seeds
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", default=str(DEFAULT_TRACES), help="folder of trace CSVs")
    parser.add_argument("--kwh", type=float, default=15.0)
    parser.add_argument("--by", default="18:00", help="deadline, local HH:MM")
    parser.add_argument("--seeds", type=int, default=20, help="forecast error draws per day (averaged)")
    parser.add_argument("--pv-factor", type=float, default=0.8, help="the planner's share of the forecast")
    parser.add_argument("--loop", action="store_true", help="replay the 5-s control loop (about 5 s a day)")
    args = parser.parse_args()
    configure_logging("warning", "console")  # (the plan service logs every plan it makes)
    hours, minutes = args.by.split(":")
    by_h = int(hours) + int(minutes) / 60
    print(
        f"plan {args.kwh:g} kWh from 08:00 by {args.by}, pv_factor {args.pv_factor:g}; "
        f"means over {args.seeds} forecast error draws"
        + ("; through the 5-s control loop, 3p 6–16 A" if args.loop else "")
        + "\n"
    )
    print("| day | policy | met | charged kWh | grid kWh | grid cost |")
    print("|---|---|---|---|---|---|")
    totals: dict[str, list[float]] = {}
    for day, path in enumerate(sorted(Path(args.traces).glob("*.csv"))):
        seeds = range(1000 * day, 1000 * day + args.seeds)
        runs = day_scores(path, args.kwh, 8.0, by_h, seeds, pv_factor=args.pv_factor, loop=args.loop)
        if runs is None:
            continue
        for i, first in enumerate(runs[0]):
            scores = [r[i] for r in runs]
            n = len(scores)
            met = sum(s.met for s in scores)
            charged = sum(s.charged_kwh for s in scores) / n
            grid = sum(s.grid_kwh for s in scores) / n
            cost = sum(s.cost for s in scores) / n
            print(
                f"| {path.stem} | {first.policy} | {met} of {n} | {charged:.2f} | {grid:.1f} | {cost:.2f} |"
            )
            entry = totals.setdefault(first.policy, [0.0, 0.0, 0.0, 0.0])
            entry[0] += met
            entry[1] += n
            entry[2] += grid
            entry[3] += cost
    print("\n| policy | runs met | grid kWh (sum of day means) | grid cost (sum of day means) |")
    print("|---|---|---|---|")
    for name, (met_n, runs_n, grid, cost) in totals.items():
        print(f"| {name} | {met_n:.0f} of {runs_n:.0f} | {grid:.1f} | {cost:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
