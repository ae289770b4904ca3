"""The Graz development set's builder (benchmarks.graz) on small synthetic input: no download, no pvlib."""

from __future__ import annotations

import csv
from datetime import date

import numpy as np
import pytest
from test_control import Sim, switches

from benchmarks.baselines import WarpPolicy
from benchmarks.graz import (
    DAY_LIST,
    HOUSE_FILES,
    classify,
    downscale,
    longest_flat_run,
    read_day_list,
    trace_1s,
    variability,
)
from benchmarks.limit import HindsightPhases, best_schedule, step_values
from pvcharge.readings import ChargerReading, SiteReading


def test_classify_follows_the_documented_rule() -> None:
    assert classify(0.95, 1.5) == "clear"
    assert classify(0.95, 6.0) == "mixed"  # clear-sky level but too restless for clear
    assert classify(0.6, 4.0) == "mixed"
    assert classify(0.8, 8.0) == "variable"
    assert classify(0.3, 20.0) == "overcast"  # little surplus, however restless
    assert classify(0.35, 2.0) == "mixed"


def test_variability_of_a_clear_and_a_broken_day() -> None:
    clear = 800 * np.sin(np.linspace(0.2, np.pi - 0.2, 600))
    kt, vi = variability(clear, clear)
    assert (kt, vi) == (pytest.approx(1.0), pytest.approx(1.0))
    broken = clear * np.where(np.arange(600) % 6 < 3, 1.0, 0.3)  # clouds every 3 minutes
    kt, vi = variability(broken, clear)
    assert kt == pytest.approx(0.65, abs=0.01)
    assert vi > 8
    assert classify(kt, vi) == "variable"


def test_longest_flat_run_finds_a_gap_filled_stretch() -> None:
    values = np.array([1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 4.0, 4.0, np.nan, np.nan])
    assert longest_flat_run(values) == 4
    assert longest_flat_run(np.array([])) == 0
    assert longest_flat_run(np.array([np.nan, np.nan, np.nan])) == 1  # NaN is never equal


def test_downscale_keeps_every_minute_mean_and_the_bounds() -> None:
    minutes = np.array([0.0, 0.0, 500.0, 6000.0, 9800.0, 10000.0, 2000.0, 7000.0, 300.0, 0.0])
    fine = downscale(minutes, seed=1)
    assert fine.shape == (600,)
    assert fine.reshape(10, 60).mean(axis=1) == pytest.approx(minutes, abs=1e-6)
    assert fine.min() >= 0.0 and fine.max() <= 10000.0
    # made-up structure inside a changing minute, none where nothing changes
    assert np.ptp(fine[180:240]) > 100
    assert np.ptp(fine[0:60]) == 0.0
    # deterministic by seed, different with another
    assert np.array_equal(fine, downscale(minutes, seed=1))
    assert not np.array_equal(fine, downscale(minutes, seed=2))


def test_trace_1s_holds_the_house_load_and_downscales_pv() -> None:
    pv = np.array([1000.0, 3000.0, 2000.0])
    house = np.array([400.0, 500.0, 600.0])
    trace = trace_1s("t.csv", 1_500_000_000.0, 7200, pv, house, seed=3)
    assert trace.step_s == 1.0 and len(trace.t_s) == 180 and trace.end_s == 1_500_000_180.0
    assert trace.at(1_500_000_061.0)[1] == 500.0
    assert sum(trace.pv_power_w[60:120]) / 60 == pytest.approx(3000.0, abs=0.1)


def test_the_committed_day_list_is_consistent() -> None:
    days = read_day_list(DAY_LIST)
    assert [d.day for d in days] == sorted(d.day for d in days)
    assert days[0].day == date(2017, 4, 1) and days[-1].day == date(2017, 9, 30) and len(days) == 183
    for d in days:
        near_a_bound = any(abs(d.vi - b) < 0.006 for b in (5, 8)) or any(
            abs(d.kt - b) < 6e-5 for b in (0.35, 0.7)
        )
        assert d.day_class == classify(d.kt, d.vi) or near_a_bound
        assert d.kept == (d.why == "")
    kept = [d for d in days if d.kept]
    assert sum(d.day_class == "variable" for d in kept) >= 60


def test_house_files_cover_the_replayed_hours() -> None:
    for path in HOUSE_FILES.values():
        with path.open(encoding="utf-8") as f:
            minutes = {int(r["minute"]) for r in csv.DictReader(f)}
        assert set(range(5 * 60, 21 * 60)) <= minutes


def site(t: float, grid_w: float, battery_w: float = 0.0) -> SiteReading:
    return SiteReading(
        grid_power_w=grid_w, pv_power_w=5000.0, battery_power_w=battery_w, battery_soc_pct=50, timestamp_s=t
    )


def car(t: float, power_w: float) -> ChargerReading:
    return ChargerReading(
        connected=True, charging=power_w > 0, power_w=power_w, current_a=0, phases=0, timestamp_s=t
    )


def test_warp_policy_starts_on_the_window_minimum_and_keeps_its_hysteresis() -> None:
    warp = WarpPolicy()
    # 5 kW export for 4 minutes: the window minimum covers 3 × 6 A -> start on 3 phases
    decision = None
    for t in range(0, 230, 10):
        decision = warp.step(float(t), site(t, -5000.0), car(t, 0.0))
        assert decision.command.current_a == 0
    decision = warp.step(230.0, site(230, -5000.0), car(230, 0.0))
    assert decision.command.phases == 3 and decision.command.current_a == 7  # 5000 W / 690 V
    # then the surplus vanishes: no stop before the window maximum fell below 1380 W
    # and 210 s passed since the start
    for t in range(250, 480, 10):
        decision = warp.step(float(t), site(t, 4000.0), car(t, 4140.0))
        assert decision.command.current_a >= 6
    decision = warp.step(490.0, site(490, 4000.0), car(490, 4140.0))
    assert decision.command.current_a == 0


def test_limit_step_values_take_the_best_whole_amp_level_per_phase_count() -> None:
    surplus = np.concatenate([np.full(30, 2000.0), np.full(30, 5000.0)])
    values, levels = step_values(surplus, battery_weight=1.5)
    # 1p: 9 A (2070 W) scores 2000 - 1.5 x 70 W, more than 8 A's 1840 W
    assert levels[0, 0] == 9 and values[0, 0] == pytest.approx((2000 - 1.5 * 70) * 30 / 3600)
    assert levels[0, 1] == 6 and values[0, 1] < 0  # 3p draws 4140 W on 2000 W: the battery pays
    assert levels[1, 1] == 7 and values[1, 1] == pytest.approx(7 * 690 * 30 / 3600)


def test_limit_schedule_keeps_to_its_budget_of_starts_and_switches() -> None:
    # step values (Wh) for 1p and 3p: a 3p stretch between two 1p stretches
    values = np.array([[10.0, -5.0]] * 4 + [[10.0, 40.0]] * 4 + [[10.0, -5.0]] * 4)
    # the switch's 30-s pause is spent in the cheaper 1p step before the 3p stretch
    assert best_schedule(values, 1, 3) == [1] * 3 + [3] * 5 + [1] * 4
    # one switch: the charger starts on 3p, so 1p first would use it up
    assert best_schedule(values, 1, 1) == [-3] * 3 + [3] * 5 + [1] * 4
    assert best_schedule(values, 1, 0) == [-3] * 3 + [3] * 5 + [-3] * 4  # on 3p only
    assert best_schedule(values, 0, 3) == [-3] * 12  # no start: off, and not switched for nothing


def test_hindsight_phases_switch_when_the_schedule_does_and_only_then() -> None:
    """The diagnostic of ``benchmarks.limit --phases``: at 9000 W pvcharge alone stays on 3 phases; with
    the schedule's phases it goes to 1 phase for the schedule's 1-phase steps (1200-2400 s, taken 6 s
    ahead of the latest reading) and back, with no switch interval, and its current is its own."""
    path = [3] * 40 + [1] * 40 + [3] * 40  # 30-s steps from t = 0
    log = Sim(HindsightPhases(0.0, path), lambda t: 9000.0, battery=True).run(3600)
    # the start at 150 s picks 3p itself (the surplus covered a 3-phase start)
    assert [(t, d.command.phases) for t, d in switches(log)] == [(150.0, 3), (1195.0, 1), (2395.0, 3)]
    assert {d.command.current_a for t, d in log if 1300 <= t < 2300} == {16.0}  # 1p: all it can take
    assert {d.command.current_a for t, d in log if t >= 2500} == {13.0}  # 3p: 13 A = 8970 W
