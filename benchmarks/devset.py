"""Replay the Graz development set (``benchmarks.graz``) through pvcharge and the peers; tables per day class.

    pip install -e '.[bench]'
    python -m benchmarks.devset                         # pvcharge, evcc-like, WARP-like: all kept days
    python -m benchmarks.devset --policy pvcharge --set phase_window_s=600 --every 2
    python -m benchmarks.devset --policy pvcharge --every 2 --offset 1   # the other half
    python -m benchmarks.devset --json out.json         # per-day scores as well

One process, one day after the other (the benchmark machine is shared); every policy runs on the same
reference site as ``benchmarks.run`` (``pvcharge.sim.replay.ReplaySite``), called every 5 s.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.baselines import EvccPolicy, WarpPolicy
from benchmarks.graz import CLASSES, DatasetError, DayInfo, load_days
from benchmarks.run import machine, pvcharge_policy, totals
from pvcharge.sim.replay import DayScore, Policy, replay
from pvcharge.sim.trace import Trace

PEERS: dict[str, Callable[[], Policy]] = {"evcc-like": EvccPolicy, "WARP-like": WarpPolicy}


def class_table(name: str, by_class: dict[str, list[DayScore]]) -> str:
    lines = [
        f"**{name}**",
        "",
        "| days | n | capture | battery→car | grid→car | starts | phase switches | charger writes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    everything = [s for scores in by_class.values() for s in scores]
    for cls, scores in [*by_class.items(), ("all", everything)]:
        if not scores:
            continue
        t = totals(scores)
        lines.append(
            f"| {cls} | {len(scores)} | {t['capture_pct']:.1f} % | {t['battery_to_car_pct']:.1f} % "
            f"| {t['grid_to_car_pct']:.1f} % | {t['starts']:.0f} | {t['phase_switches']:.0f} "
            f"| {t['charger_writes']:.0f} |"
        )
    return "\n".join(lines)


def parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def add_day_options(parser: argparse.ArgumentParser) -> None:
    """The options every Graz benchmark takes: ``--set KEY=VALUE`` (a pvcharge control key, repeatable),
    ``--classes``, ``--every`` and ``--offset`` (which days)."""
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a pvcharge control key"
    )
    parser.add_argument("--classes", default=",".join(CLASSES), help="comma-separated day classes")
    parser.add_argument("--every", type=int, default=1, help="every n-th day only (quick tuning)")
    parser.add_argument(
        "--offset", type=int, default=0, help="with --every n: start at the offset-th day (0: days 1, 1+n, …)"
    )


def day_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``doc`` as its description and :func:`add_day_options`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_day_options(parser)
    return parser


def days_of(args: argparse.Namespace) -> Iterator[tuple[DayInfo, Trace]]:
    """The days ``--classes``, ``--every`` and ``--offset`` select (:func:`benchmarks.graz.load_days`)."""
    return load_days(tuple(args.classes.split(",")), args.every, args.offset)


def control_of(args: argparse.Namespace) -> dict[str, Any]:
    """The pvcharge control keys of ``--set`` (:func:`add_day_options`), values as int, float or text."""
    return {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}


def main(argv: list[str] | None = None) -> int:
    parser = day_parser(__doc__)
    parser.add_argument("--policy", action="append", help="pvcharge, evcc-like, WARP-like (default: all)")
    parser.add_argument("--json", metavar="FILE", help="write per-day scores here")
    args = parser.parse_args(argv)
    control = control_of(args)
    factories: dict[str, Callable[[], Policy]] = {"pvcharge": pvcharge_policy(**control), **PEERS}
    names = args.policy or list(factories)
    by_class: dict[str, dict[str, list[DayScore]]] = {n: {c: [] for c in CLASSES} for n in names}
    cpu_s = dict.fromkeys(names, 0.0)
    n_days = 0
    try:
        for info, trace in days_of(args):
            n_days += 1
            for name in names:
                start = time.process_time()
                by_class[name][info.day_class].append(replay(trace, factories[name]()))
                cpu_s[name] += time.process_time() - start
    except DatasetError as exc:
        parser.error(str(exc))
    print(
        f"{n_days} Graz days (every {args.every}, offset {args.offset}), "
        f"pvcharge settings {control or 'default'}"
    )
    print(f"machine: {machine()}\n")
    for name in names:
        print(class_table(name, by_class[name]))
        print(f"\n{cpu_s[name] / max(1, n_days):.2f} s CPU per 1-s day replayed\n")
    out = {n: {c: [s.as_dict() for s in scores] for c, scores in by_class[n].items()} for n in names}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"settings": control, "every": args.every, "policies": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
