"""Scoring plans on a recorded day (pvcharge.planning.score, benchmarks/plans.py)."""

from __future__ import annotations

import statistics

import pytest

from pvcharge.planning.planner import SLOT_S, ChargeLimits
from pvcharge.planning.score import noisy, score_day, slot_surplus
from pvcharge.sim.trace import bundled_trace

LIMITS = ChargeLimits(1380, 11040)


def window() -> tuple[float, float]:
    trace = bundled_trace()
    midnight = (trace.start_s + trace.utc_offset_s) // 86400 * 86400 - trace.utc_offset_s
    return midnight + 8 * 3600, midnight + 18 * 3600


def test_slot_surplus_is_the_mean_of_pv_minus_house() -> None:
    trace = bundled_trace()
    start, _ = window()
    t = int(start) + 4 * 3600
    surplus = slot_surplus(trace, t, t + SLOT_S)
    samples = [trace.at(t + k) for k in range(0, SLOT_S, 60)]
    assert surplus[t] == pytest.approx(statistics.mean(max(0.0, pv - house) for pv, house in samples))


def test_forecast_error_repeats_by_seed_and_is_roughly_unbiased() -> None:
    actual = {i * SLOT_S: 1000.0 for i in range(96)}
    assert noisy(actual, seed=3) == noisy(actual, seed=3) != noisy(actual, seed=4)
    means = [statistics.mean(noisy(actual, seed=s).values()) for s in range(200)]
    assert 900 < statistics.median(means) < 1100
    assert len({round(v, 6) for v in noisy(actual, seed=1).values()}) == 24  # one factor per hour


def test_a_plan_beyond_the_days_pv_is_met_and_bought_cheaper_than_last_moment() -> None:
    """30 kWh by 18:00 on the bundled day (29.4 kWh of PV surplus): all three meet it; knowing the
    future is cheapest; waiting for the last moment costs more than hindsight (its hours are dear)."""
    arrive, deadline = window()
    prices = {
        t: (0.40 if 16 <= (t - arrive) / 3600 + 8 < 18 else 0.30)
        for t in range(int(arrive), int(deadline), SLOT_S)
    }
    planner, hindsight, last = score_day(
        bundled_trace(),
        need_kwh=30,
        arrive_s=arrive,
        deadline_s=deadline,
        limits=LIMITS,
        prices=prices,
        seed=7,
    )
    assert planner.met and hindsight.met and last.met
    assert hindsight.cost <= planner.cost
    assert hindsight.cost < last.cost
    assert hindsight.grid_kwh < 3.0
