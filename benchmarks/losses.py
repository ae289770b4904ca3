"""Where pvcharge loses capture and draws non-PV energy: a loss decomposition over the Graz days.

    python -m benchmarks.losses                       # all kept days, default config
    python -m benchmarks.losses --every 2 --offset 1 --set up_hold_s=30

Every second of the replay is put in one controller state, from the decision in force (its reason)
and the simulated site; the second's *lost capture* (oracle power − PV power into the car, W, signed:
the oracle rounds down to whole amps, so a second can give back) and its *non-PV power* (car power
from battery and grid) are summed per state and day class.  Lost capture is shown as a share of the
oracle's energy, non-PV as a share of the car's energy, so the rows add up to ``100 − capture`` and to
battery→car + grid→car of :mod:`benchmarks.devset` (up to the oracle's cut once the car is full).

States (first that applies):

- ``paused: min_off`` — paused, waiting out ``min_off_s`` after a stop;
- ``paused: start window`` — paused, the surplus has not covered the minimum power long enough;
- ``paused: other`` — paused for another reason (no new reading, stale data);
- ``phase-switch pause`` — offered a current, the car not drawing, within 30 s of a phase change;
- ``start ramp`` — offered a current, the car not drawing yet (its start delay);
- ``1p, 3p would fit`` — charging on 1 phase while the oracle's best level is above 1-phase maximum;
- ``min through shade (3p)`` / ``(1p)`` — at min current, the surplus below its power;
- ``down-following lag`` — above the surplus otherwise;
- ``rise lag`` — below the oracle's level otherwise;
- ``following`` — the rest (rounding: the car at or above the oracle's level within the surplus).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from benchmarks.devset import control_of, day_parser, days_of
from benchmarks.graz import DatasetError
from pvcharge.control import ChargePoint, ControlConfig, Controller, Decision
from pvcharge.readings import ChargerReading, SiteReading
from pvcharge.sessions.tally import split_car_power
from pvcharge.sim.replay import ReplaySite, Sample, replay
from pvcharge.sim.trace import Trace

STATES = (
    "paused: min_off",
    "paused: start window",
    "paused: other",
    "phase-switch pause",
    "start ramp",
    "1p, 3p would fit",
    "min through shade (3p)",
    "min through shade (1p)",
    "down-following lag",
    "rise lag",
    "following",
)


class _Watched:
    """A controller that remembers its last decision."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.reason = ""

    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision:
        decision = self.controller.step(now, site, charger)
        self.reason = decision.reason
        return decision


def day_losses(trace: Trace, control: dict[str, Any]) -> dict[str, list[float]]:
    """``{state: [lost capture Wh, non-PV Wh, seconds]}`` of one day, plus ``"_oracle"`` and ``"_car"``
    (``[Wh, 0, 0]``)."""
    site = ReplaySite()
    car = site.car
    v = site.voltage_v
    levels = sorted(
        {
            a * p * v
            for p in (1, 3)
            for a in range(math.ceil(site.min_current_a), math.floor(site.max_current_a) + 1)
        }
    )
    max_1p_w = site.max_current_a * v
    room_wh = car.capacity_wh * (car.soc_target_pct - car.soc_start_pct) / 100.0
    watched = _Watched(Controller(ControlConfig(**control), ChargePoint(phases="auto")))
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    state = {"oracle_wh": 0.0, "car_wh": 0.0, "phases": 1, "phase_t": -math.inf}

    def record(s: Sample) -> None:
        if s.phases != state["phases"]:
            state["phases"], state["phase_t"] = s.phases, s.t_s
        local_s = trace.local_seconds_of_day(s.t_s)
        if not car.plug_in_s <= local_s < car.plug_out_s or state["car_wh"] >= room_wh:
            return
        surplus_w = s.pv_power_w - s.house_power_w
        best_w = 0.0
        if state["oracle_wh"] < room_wh:
            for level in levels:
                if level > surplus_w:
                    break
                best_w = level
        split = split_car_power(
            s.car_power_w,
            pv_w=s.pv_power_w,
            house_w=s.house_power_w,
            battery_w=s.battery_power_w,
            grid_w=s.grid_power_w,
        )
        lost_w, nonpv_w = best_w - split.pv, split.car - split.pv
        state["oracle_wh"] += best_w / 3600.0
        state["car_wh"] += split.car / 3600.0
        if lost_w == 0.0 and nonpv_w == 0.0:
            return
        reason = watched.reason
        car_w, p = s.car_power_w, s.phases
        if s.offered_current_a == 0:
            if "min off time" in reason:
                what = "paused: min_off"
            elif reason.startswith(("waiting", "cloud filter")):
                what = "paused: start window"
            else:
                what = "paused: other"
        elif car_w <= 0:
            what = "phase-switch pause" if s.t_s - state["phase_t"] <= 35 else "start ramp"
        elif p == 1 and best_w > max_1p_w:
            what = "1p, 3p would fit"
        elif s.offered_current_a <= site.min_current_a and surplus_w < site.min_current_a * p * v:
            what = f"min through shade ({p}p)"
        elif car_w > surplus_w:
            what = "down-following lag"
        elif car_w < best_w:
            what = "rise lag"
        else:
            what = "following"
        row = out[what]
        row[0] += lost_w / 3600.0
        row[1] += nonpv_w / 3600.0
        row[2] += 1.0

    replay(trace, watched, record=record)
    out["_oracle"][0] = state["oracle_wh"]
    out["_car"][0] = state["car_wh"]
    return dict(out)


def table(by_class: dict[str, dict[str, list[float]]]) -> str:
    """Markdown: per state, lost capture (% of oracle) / non-PV (% of car energy) per class and all."""
    every = {
        k: [sum(by_class[c].get(k, [0.0, 0.0, 0.0])[i] for c in by_class) for i in range(3)]
        for k in {k for d in by_class.values() for k in d}
    }
    columns = [*by_class.items(), ("all", every)]
    head = " | ".join(f"{c}" for c, _ in columns)
    lines = [
        f"| state (lost capture % / non-PV %) | {head} |",
        "|---|" + "---|" * len(columns),
    ]
    for what in [*STATES, "total"]:
        cells = []
        for _, d in columns:
            oracle, car = d.get("_oracle", [0.0])[0], d.get("_car", [0.0])[0]
            if what == "total":
                lost = sum(d[k][0] for k in STATES if k in d)
                nonpv = sum(d[k][1] for k in STATES if k in d)
            else:
                lost, nonpv = d.get(what, [0.0, 0.0])[:2]
            cells.append(
                f"{100 * lost / oracle if oracle else 0:.2f} / {100 * nonpv / car if car else 0:.2f}"
            )
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = day_parser(__doc__)
    args = parser.parse_args(argv)
    control = control_of(args)
    by_class: dict[str, dict[str, list[float]]] = {}
    n_days = 0
    try:
        for info, trace in days_of(args):
            n_days += 1
            acc = by_class.setdefault(info.day_class, {})
            for k, row in day_losses(trace, control).items():
                old = acc.setdefault(k, [0.0, 0.0, 0.0])
                for i in range(3):
                    old[i] += row[i]
    except DatasetError as exc:
        parser.error(str(exc))
    print(f"{n_days} Graz days (every {args.every}, offset {args.offset}), settings {control or 'default'}\n")
    print(table(by_class))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
