"""Replay every trace in a folder through pvcharge and the peers' algorithms and print one table.

    python -m benchmarks.run                       # ../shared/traces, markdown table
    python -m benchmarks.run --traces DIR --json
    python -m benchmarks.run --sweep               # trade-offs: cloud filter, battery weight, phases
    python -m benchmarks.run --cars 2              # two cars on one site (benchmarks.twocars)

Every policy runs on the same reference site (``pvcharge.sim.replay.ReplaySite``: 10 kWh battery, 60 kWh
car plugged in 08:00–18:00, 6–16 A at 1 or 3 phases) and is called every 5 s; totals are over all days.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.baselines import EvccPolicy, SeedPolicy, WarpPolicy
from pvcharge.control import ChargePoint, ControlConfig, Controller
from pvcharge.sim.replay import DayScore, Policy, replay
from pvcharge.sim.trace import load_trace

DEFAULT_TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "traces"


def _make_pvcharge(control: dict[str, Any], phases: Any) -> Policy:
    return Controller(ControlConfig(**control), ChargePoint(phases=phases))


def pvcharge_policy(phases: Any = "auto", **control: Any) -> Callable[[], Policy]:
    """A picklable factory of pvcharge controllers with these ``control`` settings."""
    return functools.partial(_make_pvcharge, control, phases)


POLICIES: dict[str, Callable[[], Policy]] = {
    "seed formula, no hysteresis": SeedPolicy,
    "evcc defaults": EvccPolicy,
    "WARP power manager defaults": WarpPolicy,
    "pvcharge, default config": pvcharge_policy(),
}


def run_policy(args: tuple[str, Callable[[], Policy], list[str]]) -> tuple[str, list[DayScore], float]:
    """Replay every trace through a fresh policy: ``(name, day scores, CPU seconds it took)``."""
    name, factory, paths = args
    start = time.process_time()
    scores = [replay(load_trace(p), factory()) for p in paths]
    return name, scores, time.process_time() - start


def totals(scores: list[DayScore]) -> dict[str, float]:
    car = sum(s.car_kwh for s in scores)
    oracle = sum(s.oracle_kwh for s in scores)
    return {
        "oracle_kwh": oracle,
        "car_kwh": car,
        "capture_pct": 100 * sum(s.pv_to_car_kwh for s in scores) / oracle if oracle else 100.0,
        "battery_to_car_pct": 100 * sum(s.battery_to_car_kwh for s in scores) / car if car else 0.0,
        "grid_to_car_pct": 100 * sum(s.grid_to_car_kwh for s in scores) / car if car else 0.0,
        "starts": sum(s.starts for s in scores),
        "phase_switches": sum(s.phase_switches for s in scores),
        "charger_writes": sum(s.charger_writes for s in scores),
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def table(rows: list[tuple[str, dict[str, float]]]) -> str:
    lines = [
        "| policy | capture | battery→car | grid→car | starts | phase switches | charger writes |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, t in rows:
        lines.append(
            f"| {name} | {t['capture_pct']:.1f} % | {t['battery_to_car_pct']:.1f} % "
            f"| {t['grid_to_car_pct']:.1f} % | {t['starts']:.0f} | {t['phase_switches']:.0f} "
            f"| {t['charger_writes']:.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", default=str(DEFAULT_TRACES), help="folder of trace CSVs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="pvcharge per cloud filter and battery weight")
    parser.add_argument("--jobs", type=int, default=2, help="policies replayed in parallel (default 2)")
    parser.add_argument(
        "--cars", type=int, choices=(1, 2), default=1, help="2: two cars (benchmarks.twocars)"
    )
    args = parser.parse_args()
    if args.cars == 2:
        from benchmarks import twocars

        return twocars.main(
            ["--traces", args.traces, "--jobs", str(args.jobs), *(["--json"] if args.json else [])]
        )
    paths = sorted(str(p) for p in Path(args.traces).glob("*.csv"))
    if not paths:
        parser.error(f"no *.csv traces in {args.traces}")
    if args.sweep:
        policies = {
            f"cloud_filter {cf}, battery_weight {w:g}": pvcharge_policy(cloud_filter=cf, battery_weight=w)
            for cf in ("off", "weak", "medium", "strong")
            for w in (1.0, 1.5, 3.0)
        }
        policies["phases: 1 (never 3p), default config"] = pvcharge_policy(phases=1)
        policies["phases: 3 (never 1p), default config"] = pvcharge_policy(phases=3)
    else:
        policies = POLICIES
    start = time.perf_counter()
    work = [(n, f, paths) for n, f in policies.items()]
    if args.jobs <= 1:
        results = [run_policy(w) for w in work]
    else:
        with ProcessPoolExecutor(max_workers=min(args.jobs, os.cpu_count() or 1)) as pool:
            results = list(pool.map(run_policy, work))
    wall_s = time.perf_counter() - start
    if args.json:
        print(
            json.dumps(
                {
                    "machine": machine(),
                    "traces": [Path(p).name for p in paths],
                    "wall_s": round(wall_s, 1),
                    "policies": {
                        name: {
                            "totals": totals(scores),
                            "days": [s.as_dict() for s in scores],
                            "cpu_s": round(cpu_s, 2),
                        }
                        for name, scores, cpu_s in results
                    },
                },
                indent=2,
            )
        )
        return 0
    print(f"{len(paths)} traces from {args.traces}: {', '.join(Path(p).name for p in paths)}")
    print(f"machine: {machine()}; wall time {wall_s:.1f} s\n")
    print(table([(name, totals(scores)) for name, scores, _ in results]))
    for name, scores, cpu_s in results:
        per_day = cpu_s / len(scores)
        print(f"\n{name}: {per_day:.2f} s CPU per day replayed")
        for s in scores:
            d = s.as_dict()
            print(
                f"  {d['trace']:38} capture {100 * float(d['capture']):5.1f} %  car {d['car_kwh']:6.2f} kWh  "
                f"battery {d['battery_to_car_kwh']:5.2f}  grid {d['grid_to_car_kwh']:5.2f}  "
                f"starts {d['starts']:2}  switches {d['phase_switches']:3}  writes {d['charger_writes']:4}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
