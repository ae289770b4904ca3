"""``pvcharge demo --plan``: the real daemon, its plan service and the planner across a night against
the meter, charger, aWATTar and Open-Meteo emulators on a simulated clock (pvcharge.sim.plandemo).
Counted, not timed: the simulated clock waits for the daemon when the machine is slow."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from pvcharge.sim.demo import trace_tz
from pvcharge.sim.plandemo import night_trace, plan_line, run_plan_demo
from pvcharge.sim.trace import bundled_trace


def test_the_night_is_the_trace_evening_then_its_own_morning() -> None:
    trace = bundled_trace()
    night = night_trace(trace)
    assert night.t_s[0] == trace.start_s + 18 * 3600 and night.end_s == trace.start_s + 36 * 3600
    assert all(b > a for a, b in zip(night.t_s, night.t_s[1:], strict=False))
    assert max(night.pv_power_w[: 6 * 60]) == 0  # no PV in the evening
    i = night.t_s.index(trace.start_s + 86400 + 9 * 3600)  # the morning's PV is the trace's own
    assert night.pv_power_w[i] == trace.pv_power_w[9 * 60] > 0
    assert abs(night.house_power_w[i] - trace.house_power_w[9 * 60]) <= 3  # (the dither)


async def test_the_plan_is_met_from_the_cheapest_grid_slots_it_planned() -> None:
    trace = bundled_trace()
    out = io.StringIO()
    result, run, _ = await run_plan_demo(trace, "20 kWh by 07:00", seconds=5, out=out, start_h=23, api=None)
    assert result.stats.cycles >= 0.97 * result.cycles_due  # the clock waited for the daemon
    # met, and no more: the service stops grid charging once the target is there (not at the slot's end)
    assert run.reached_s() is not None and run.reached_s() <= run.deadline_s  # type: ignore[operator]
    assert 20.0 <= run.charged_kwh(run.deadline_s) < 20.3
    # grid charging only in slots a plan chose, and energy only there
    executed = run.grid_slots
    assert executed and set(executed) <= run.planned_slots
    outside_wh = sum(
        (b[1] - a[1]) for a, b in zip(run.cycles, run.cycles[1:], strict=False) if not a[2] and not b[2]
    )
    assert outside_wh < 50, outside_wh
    # among the cheapest of the night: as many slots as were needed, none dearer than the n-th cheapest
    night = sorted(run.night_prices().values())
    assert len(night) >= 4 * 7
    assert max(run.prices[s] for s in executed) <= night[len(executed) - 1] + 1e-9
    assert 7 <= len(executed) <= 8  # 20 kWh at 11.04 kW: 1.8 h
    line = plan_line(run, trace_tz(trace))
    assert re.fullmatch(
        r"plan 20 kWh by 07:00: met \(20\.[0-2] kWh by 07:00, 20 kWh at 0[2-6]:\d\d\); from the grid: "
        r"\d\d:\d\d–\d\d:\d\d at [\d.]+(–[\d.]+)? ct/kWh \(cheapest of the night: [\d.]+\)",
        line,
    ), line


def test_the_command_line_says_it_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pvcharge", "demo", "--plan", "lots by tomorrow"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "demo --plan: expected" in done.stderr
