"""The hindsight limit: per day, the best charging schedule under a budget of starts and phase switches.

    python -m benchmarks.limit                      # Graz development set, 3 starts and 5 switches a day
    python -m benchmarks.limit --starts 3 --switches 5 --every 4 --classes variable
    python -m benchmarks.limit --phases --every 2 --offset 1   # also: pvcharge with hindsight phases

Dynamic programming over 30-s steps of the car's plug-in window, knowing the whole day: in each step
the car is off, or on 1 or 3 phases at the whole-amp current that is best for that step (PV captured
minus ``battery_weight`` × energy drawn beyond the surplus, the controller's own score); a start costs
the car's start delay (15 s) and a phase switch its pause (30 s) of that step's value; at most
``--starts`` starts and ``--switches`` switches a day.  The schedule is then replayed through the same
site model as every policy (``pvcharge.sim.replay``), so its numbers are the replay's own, next to
pvcharge's defaults (or ``--set``'s keys) on the same days.  The car's capacity is ignored by the
schedule (the replay honours it).

``--phases`` adds a diagnostic: pvcharge's defaults with only the phase decision taken from the
schedule (:class:`HindsightPhases`: its starts, stops and current following are pvcharge's own), i.e.
what perfect foresight of the phase count alone would be worth to the controller.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from benchmarks.devset import class_table, control_of, day_parser, days_of
from benchmarks.graz import CLASSES, DatasetError
from benchmarks.run import pvcharge_policy
from pvcharge.control import ChargePoint, ControlConfig, Controller, Decision
from pvcharge.readings import ChargerCommand, ChargerReading, SiteReading
from pvcharge.sim.replay import DayScore, ReplaySite, replay
from pvcharge.sim.trace import Trace

STEP_S = 30
SITE = ReplaySite()  #: the reference site every policy and the schedule are replayed on
VOLTAGE_V = SITE.voltage_v
LEVELS_A = np.arange(math.ceil(SITE.min_current_a), math.floor(SITE.max_current_a) + 1)  #: whole amps


def step_values(surplus_w: np.ndarray, battery_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Per 30-s step and phase count (index 0: 1p, 1: 3p): the best whole-amp current's value in Wh
    and that current, from a 1-s surplus (length a multiple of 30)."""
    s = np.maximum(surplus_w.reshape(-1, STEP_S), 0.0)
    values = np.empty((len(s), 2))
    levels = np.empty((len(s), 2))
    for j, phases in enumerate((1, 3)):
        power = LEVELS_A * phases * VOLTAGE_V  # (levels,)
        car = power[None, :, None]
        got = np.minimum(car, s[:, None, :]).sum(axis=2)
        over = np.maximum(car - s[:, None, :], 0.0).sum(axis=2)
        score = (got - battery_weight * over) / 3600.0
        best = np.argmax(score, axis=1)
        values[:, j] = score[np.arange(len(s)), best]
        levels[:, j] = LEVELS_A[best]
    return values, levels


def best_schedule(
    values: np.ndarray, max_starts: int, max_switches: int, start_s: float = 15.0, pause_s: float = 30.0
) -> list[int]:
    """The best per-step state (1 or 3: on at those phases; -1 or -3: off, the charger set to those
    phases) for the step values of :func:`step_values`, with at most ``max_starts`` starts and
    ``max_switches`` phase changes (the charger starts on 3p; a phase change while off counts too)."""
    n = len(values)
    neg = -math.inf
    # state: (on, phase index) × starts used × switches used
    best = np.full((2, 2, max_starts + 1, max_switches + 1), neg)
    best[0, 1, 0, 0] = 0.0
    back = np.zeros((n, 2, 2, max_starts + 1, max_switches + 1, 4), dtype=np.int16)
    for k in range(n):
        new = np.full_like(best, neg)
        for on in (0, 1):
            for ph in (0, 1):
                for st in range(max_starts + 1):
                    for sw in range(max_switches + 1):
                        v = best[on, ph, st, sw]
                        if v == neg:
                            continue
                        for on2 in (0, 1):
                            for ph2 in (0, 1):
                                st2 = st + (1 if on2 and not on else 0)
                                sw2 = sw + (1 if ph2 != ph else 0)
                                if st2 > max_starts or sw2 > max_switches:
                                    continue
                                gain = 0.0
                                if on2:
                                    gain = values[k, ph2]
                                    if not on:
                                        gain *= 1 - start_s / STEP_S
                                    elif ph2 != ph:
                                        gain *= max(0.0, 1 - pause_s / STEP_S)
                                if v + gain > new[on2, ph2, st2, sw2]:
                                    new[on2, ph2, st2, sw2] = v + gain
                                    back[k, on2, ph2, st2, sw2] = (on, ph, st, sw)
        best = new
    used = np.add.outer(np.arange(max_starts + 1), np.arange(max_switches + 1))  # ties: fewer is better
    idx = np.unravel_index(int(np.argmax(best - 1e-9 * used)), best.shape)
    state = tuple(int(i) for i in idx)
    path: list[int] = []
    for k in range(n - 1, -1, -1):
        on, ph = state[0], state[1]
        path.append((1, 3)[ph] if on else -(1, 3)[ph])
        state = tuple(int(i) for i in back[k, state[0], state[1], state[2], state[3]])
    return path[::-1]


class Schedule:
    """Replays a schedule: from ``t0_s`` on, step ``k`` of ``STEP_S`` seconds gets ``commands[k]``
    (commanded ``lead_s`` early, for the meter's latency)."""

    def __init__(self, t0_s: float, commands: list[ChargerCommand], lead_s: float = 1.0) -> None:
        self.t0_s, self.commands, self.lead_s = t0_s, commands, lead_s

    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision:
        k = int((now + self.lead_s - self.t0_s) // STEP_S)
        if 0 <= k < len(self.commands):
            return Decision(self.commands[k], "schedule", "pv")
        phases = self.commands[-1].phases if k >= len(self.commands) else 3  # no switch after the window
        return Decision(ChargerCommand(0, phases), "schedule: unplugged", "pv")


class HindsightPhases(Controller):
    """pvcharge's controller (default config, or ``control``) whose phase count is dictated by a schedule's
    (:func:`best_schedule`): at each cycle while charging it switches to the phases of the schedule's
    step at hand (on or off there), with no switch interval or cap; the evidence, deficit and shade
    rules are off.  Starts, stops and the current are the controller's own.  A diagnostic, not a policy
    (it knows the day's future).

    Args:
        t0_s: the time of the schedule's first step, s.
        path: the schedule's per-step states (``±1``, ``±3``), one per :data:`STEP_S` seconds.
        lead_s: how far ahead of the latest meter reading the step is taken (its latency and the
            charger's reaction), s.
        control: pvcharge control keys (``--set``), under the two rules turned off.
    """

    def __init__(self, t0_s: float, path: list[int], lead_s: float = 6.0, **control: Any) -> None:
        config = ControlConfig(**{**control, "shade_switch_cost_wh": 0.0, "phase_down_deficit_wh": 0.0})
        super().__init__(config, ChargePoint(phases="auto"))
        self.t0_s, self.path, self.lead_s = t0_s, path, lead_s

    def _phases_due(self, now: float) -> tuple[int, str, bool] | None:
        k = int((self._last_reading_t + self.lead_s - self.t0_s) // STEP_S)
        if not 0 <= k < len(self.path) or abs(self.path[k]) == self.phases:
            return None
        return abs(self.path[k]), "the hindsight schedule", False


def _schedule(
    trace: Trace, max_starts: int, max_switches: int, battery_weight: float
) -> tuple[float, list[int], np.ndarray]:
    """The day's hindsight schedule: its first step's time (s), its per-step states and levels (A)."""
    car = SITE.car
    day0 = trace.start_s - trace.local_seconds_of_day(trace.start_s)
    t0, t1 = day0 + car.plug_in_s, day0 + car.plug_out_s
    seconds = np.arange(t0, t1)
    surplus = np.array([pv - house for pv, house in (trace.at(float(t)) for t in seconds)])
    values, levels = step_values(surplus, battery_weight)
    path = best_schedule(values, max_starts, max_switches, car.start_delay_s, car.phase_switch_pause_s)
    return t0, path, levels


def _commands(path: list[int], levels: np.ndarray) -> list[ChargerCommand]:
    """A schedule's per-step charger commands: its state's phases at that step's best level, or off."""
    return [
        ChargerCommand(float(levels[k, 0 if state == 1 else 1]), state)
        if state > 0
        else ChargerCommand(0, -state)
        for k, state in enumerate(path)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = day_parser(__doc__)
    parser.add_argument("--starts", type=int, default=3, help="starts a day (default 3)")
    parser.add_argument("--switches", type=int, default=5, help="phase switches a day (default 5)")
    parser.add_argument("--battery-weight", type=float, default=1.5)
    parser.add_argument(
        "--phases", action="store_true", help="also pvcharge with the schedule's phases (HindsightPhases)"
    )
    args = parser.parse_args(argv)
    control = control_of(args)
    ours: dict[str, list[DayScore]] = {c: [] for c in CLASSES}
    best: dict[str, list[DayScore]] = {c: [] for c in CLASSES}
    phased: dict[str, list[DayScore]] = {c: [] for c in CLASSES}
    start = time.process_time()
    n = 0
    try:
        for info, trace in days_of(args):
            n += 1
            t0, path, levels = _schedule(trace, args.starts, args.switches, args.battery_weight)
            best[info.day_class].append(replay(trace, Schedule(t0, _commands(path, levels))))
            ours[info.day_class].append(replay(trace, pvcharge_policy(**control)()))
            if args.phases:
                phased[info.day_class].append(replay(trace, HindsightPhases(t0, path, **control)))
    except DatasetError as exc:
        parser.error(str(exc))
    settings = f"settings {control}" if control else "default config"
    print(f"{n} Graz days; limit: {args.starts} starts, {args.switches} switches a day, 30-s steps\n")
    print(class_table(f"hindsight limit ({args.starts} starts, {args.switches} switches a day)", best))
    print()
    print(class_table(f"pvcharge, {settings}", ours))
    if args.phases:
        print()
        print(class_table("pvcharge with the hindsight schedule's phases", phased))
    print(f"\n{(time.process_time() - start) / max(1, n):.1f} s CPU per day")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
