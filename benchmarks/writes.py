"""Where pvcharge's charger writes go: per day class, writes a day by kind and how many were soon undone.

    python -m benchmarks.writes                               # all kept Graz days, default config
    python -m benchmarks.writes --every 2 --offset 1 --set up_energy_wh=6

A *write* is a change of the command the replay sends the charger (what ``charger_writes`` of
:mod:`benchmarks.devset` counts).  Each is put in one kind, from the decision's reason: a rise or a
decrease of the current (by its size, 1 A or more), a phase switch, a start, a stop, or other (no
vehicle, stale data, grid import, …).  A rise or decrease is *undone* when the next write, within
``SOON_S`` seconds, goes the other way, and a *staircase* step when it goes the same way: the
writes a following with better judgement would not have needed.  The issue's budget for unseen days
is per day, and the days that spend it are the variable ones: so the table is per class.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from benchmarks.devset import control_of, day_parser, days_of
from benchmarks.graz import CLASSES, DatasetError
from pvcharge.control import ChargePoint, ControlConfig, Controller, Decision
from pvcharge.readings import ChargerCommand, ChargerReading, SiteReading
from pvcharge.sim.replay import replay

SOON_S = 60.0  #: a write followed by another this soon counts as undone or as a staircase step, s
KINDS = ("rise 1 A", "rise ≥ 2 A", "decrease 1 A", "decrease ≥ 2 A", "phase switch", "start", "stop", "other")


def kind_of(previous: ChargerCommand | None, command: ChargerCommand, reason: str) -> str:
    """The kind of the write from ``previous`` to ``command`` (one of :data:`KINDS`), by the reason."""
    if reason.startswith("switch to"):
        return "phase switch"
    if reason.startswith("start"):
        return "start"
    if reason.startswith("stop"):
        return "stop"
    if previous is not None and reason.startswith(("up:", "down:")):
        step_a = command.current_a - previous.current_a
        size = "1 A" if abs(step_a) <= 1 else "≥ 2 A"
        return f"{'rise' if step_a > 0 else 'decrease'} {size}"
    return "other"


class Counted:
    """A policy around ``controller`` that counts its writes by kind into ``kinds`` (:data:`KINDS`, and
    ``undone``/``staircase`` for a rise or decrease followed within ``SOON_S`` by one the other or the
    same way)."""

    def __init__(self, controller: Any, kinds: Counter[str]) -> None:
        self.controller, self.kinds = controller, kinds
        self._last: ChargerCommand | None = None
        self._last_kind, self._last_t = "", -1e18

    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision:
        decision = self.controller.step(now, site, charger)
        if decision.command != self._last:
            kind = kind_of(self._last, decision.command, decision.reason)
            self.kinds[kind] += 1
            before = self._last_kind.split(" ")[0]
            if now - self._last_t < SOON_S and before in ("rise", "decrease"):
                now_dir = kind.split(" ")[0]
                if now_dir in ("rise", "decrease"):
                    self.kinds["undone" if now_dir != before else "staircase"] += 1
            self._last, self._last_kind, self._last_t = decision.command, kind, now
        return decision


def table(by_class: dict[str, tuple[int, Counter[str]]]) -> str:
    """Markdown: per class, writes a day and each kind's share of the writes."""
    head = [
        "days",
        "n",
        "writes a day",
        *KINDS,
        f"undone within {SOON_S:g} s",
        f"staircase within {SOON_S:g} s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    everything: Counter[str] = Counter()
    n_all = 0
    for _, (n, kinds) in by_class.items():
        everything.update(kinds)
        n_all += n
    for cls, (n, kinds) in [*by_class.items(), ("all", (n_all, everything))]:
        if not n:
            continue
        total = sum(kinds[k] for k in KINDS)
        shares = [f"{100 * kinds[k] / max(total, 1):.0f} %" for k in (*KINDS, "undone", "staircase")]
        lines.append(f"| {cls} | {n} | {total / n:.0f} | " + " | ".join(shares) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = day_parser(__doc__)
    args = parser.parse_args(argv)
    control = control_of(args)
    by_class: dict[str, tuple[int, Counter[str]]] = {c: (0, Counter()) for c in CLASSES}
    start = time.process_time()
    try:
        for info, trace in days_of(args):
            n, kinds = by_class[info.day_class]
            replay(trace, Counted(Controller(ControlConfig(**control), ChargePoint(phases="auto")), kinds))
            by_class[info.day_class] = (n + 1, kinds)
    except DatasetError as exc:
        parser.error(str(exc))
    days = sum(n for n, _ in by_class.values())
    print(f"{days} Graz days, pvcharge settings {control or 'default'}\n")
    print(table(by_class))
    print(f"\n{(time.process_time() - start) / max(1, days):.2f} s CPU per day")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
