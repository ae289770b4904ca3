"""Two cars on one site: replay every trace through pvcharge's SiteController and print one table.

    python -m benchmarks.run --cars 2              # ../shared/traces (or --traces DIR), markdown
    python -m benchmarks.twocars --traces DIR --json

The reference site (``pvcharge.sim.replay.ReplaySite``: 10 kWh battery, 6–16 A at 1 or 3 phases, a
control cycle of 5 s) with car A plugged in 08:00–18:00 and car B 11:00–15:00 (both 60 kWh, 20 % →
100 %), phases auto, the fuse at 25 A per phase and car B behind a 16 A garage circuit; default control
settings.  Scenarios: A before B (priority 1 and 0; car A then decides exactly as the one-car
benchmark's), A and B sharing (equal priorities), and A before B with car A nearly full (70 % → 100 %,
so B charges once A is done).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pvcharge.control import ChargePoint, Circuit, ControlConfig, Loadpoint, SiteConfig, SiteController
from pvcharge.sim.replay import SiteScore, replay_cars
from pvcharge.sim.site import CarParams
from pvcharge.sim.trace import load_trace

DEFAULT_TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "traces"
CARS = {"A": CarParams(), "B": CarParams(plug_in_s=11 * 3600.0, plug_out_s=15 * 3600.0)}
SITE = SiteConfig(max_grid_current_a=25, circuits=(Circuit("garage", 16, ("B",)),))
#: scenario name -> the priorities of A and B, car A's SoC at the start in %
SCENARIOS = {
    "A before B (priority 1, 0)": (1, 0, 20.0),
    "A and B share (equal priority)": (0, 0, 20.0),
    "A (70 % full) before B": (1, 0, 70.0),
}


def site_controller(priorities: tuple[int, int]) -> SiteController:
    auto = ChargePoint(phases="auto")
    loadpoints = [Loadpoint(name, auto, priority=p) for name, p in zip(CARS, priorities, strict=True)]
    return SiteController(ControlConfig(), SITE, loadpoints)


def run_one(args: tuple[str, str]) -> tuple[str, SiteScore, float]:
    """Replay one trace in one scenario: ``(scenario, score, CPU seconds)``."""
    scenario, path = args
    prio_a, prio_b, soc_a = SCENARIOS[scenario]
    cars = {**CARS, "A": dataclasses.replace(CARS["A"], soc_start_pct=soc_a)}
    start = time.process_time()
    score = replay_cars(load_trace(path), site_controller((prio_a, prio_b)), cars)
    return scenario, score, time.process_time() - start


def totals(scores: list[SiteScore]) -> dict[str, Any]:
    """Sums over the days: the site's capture and non-PV share, violations, and per car its energy, PV
    share, starts, phase switches and charger writes."""
    oracle = sum(s.oracle_kwh for s in scores)
    car = sum(s.car_kwh for s in scores)
    cars: dict[str, dict[str, float]] = {}
    for name in CARS:
        each = [s.cars[name] for s in scores]
        kwh = sum(c.car_kwh for c in each)
        cars[name] = {
            "car_kwh": kwh,
            "pv_share_pct": 100 * sum(c.pv_to_car_kwh for c in each) / kwh if kwh else 100.0,
            "starts": sum(c.starts for c in each),
            "phase_switches": sum(c.phase_switches for c in each),
            "charger_writes": sum(c.charger_writes for c in each),
        }
    return {
        "oracle_kwh": oracle,
        "car_kwh": car,
        "capture_pct": 100 * sum(s.pv_to_car_kwh for s in scores) / oracle if oracle else 100.0,
        "non_pv_pct": 100 * (car - sum(s.pv_to_car_kwh for s in scores)) / car if car else 0.0,
        "fuse_violations": sum(s.fuse_violations for s in scores),
        "circuit_violations": sum(s.circuit_violations for s in scores),
        "overload_s": sum(s.overload_s for s in scores),
        "cars": cars,
    }


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| scenario | capture | non-PV | car A kWh / PV % / starts / switches / writes "
        "| car B kWh / PV % / starts / switches / writes | fuse, circuit violations | overload s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, t in rows.items():
        per_car = [
            f"{c['car_kwh']:.1f} / {c['pv_share_pct']:.1f} % / {c['starts']:.0f} / "
            f"{c['phase_switches']:.0f} / {c['charger_writes']:.0f}"
            for c in t["cars"].values()
        ]
        lines.append(
            f"| {name} | {t['capture_pct']:.1f} % | {t['non_pv_pct']:.1f} % | {per_car[0]} | {per_car[1]} "
            f"| {t['fuse_violations']}, {t['circuit_violations']} | {t['overload_s']} |"
        )
    return "\n".join(lines)


def run(paths: list[str], jobs: int = 2) -> dict[str, list[SiteScore]]:
    """Every scenario over every trace: per scenario, the day scores in trace order."""
    work = [(scenario, p) for scenario in SCENARIOS for p in paths]
    if jobs <= 1:
        results = [run_one(w) for w in work]
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, os.cpu_count() or 1)) as pool:
            results = list(pool.map(run_one, work))
    scores: dict[str, list[SiteScore]] = {s: [] for s in SCENARIOS}
    for scenario, score, _ in results:
        scores[scenario].append(score)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", default=str(DEFAULT_TRACES), help="folder of trace CSVs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--jobs", type=int, default=2, help="replays in parallel (default 2)")
    args = parser.parse_args(argv)
    paths = sorted(str(p) for p in Path(args.traces).glob("*.csv"))
    if not paths:
        parser.error(f"no *.csv traces in {args.traces}")
    start = time.perf_counter()
    scores = run(paths, args.jobs)
    wall_s = time.perf_counter() - start
    rows = {scenario: totals(days) for scenario, days in scores.items()}
    if args.json:
        print(
            json.dumps(
                {"traces": [Path(p).name for p in paths], "wall_s": round(wall_s, 1), "scenarios": rows},
                indent=2,
            )
        )
        return 0
    print(
        f"{len(paths)} traces from {args.traces}, two cars (A 08-18 h, B 11-15 h); wall time {wall_s:.1f} s\n"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
