"""The charge planner (pvcharge.planning.planner): scenarios with known best answers."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pvcharge.control.config import ChargePoint
from pvcharge.planning.planner import (
    SLOT_S,
    ChargeLimits,
    Plan,
    energy_to_add_kwh,
    next_deadline,
    plan_charge,
    slot_start,
)

BERLIN = ZoneInfo("Europe/Berlin")
#: 6–16 A on 3 phases at 230 V: 4140–11040 W
LIMITS = ChargeLimits.of(ChargePoint(min_current_a=6, max_current_a=16, phases=3), 230.0)


def at(day: int, hh: int, mm: int = 0) -> float:
    """Unix s of 2026-12-<day> hh:mm in Berlin."""
    return datetime(2026, 12, day, hh, mm, tzinfo=BERLIN).timestamp()


def hourly(start_s: float, end_s: float, value: float) -> dict[int, float]:
    return {t: value for t in range(slot_start(start_s), int(end_s), SLOT_S)}


def clock(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, BERLIN).strftime("%H:%M")


def make_plan(need_kwh: float, now_s: float, deadline_s: float, **options: Any) -> Plan:
    """:func:`plan_charge` with LIMITS, no forecast, no prices and a flat 0.30 unless given."""
    settings: dict[str, Any] = {
        "limits": LIMITS,
        "surplus_w": None,
        "prices_per_kwh": None,
        "fallback_price_per_kwh": 0.30,
        **options,
    }
    return plan_charge(need_kwh=need_kwh, deadline_s=deadline_s, now_s=now_s, **settings)


def test_limits_from_charge_point() -> None:
    assert LIMITS.min_power_w == pytest.approx(4140)
    assert LIMITS.max_power_w == pytest.approx(11040)
    auto = ChargeLimits.of(ChargePoint(min_current_a=6, max_current_a=16, phases="auto"), 230.0)
    assert auto.min_power_w == pytest.approx(1380)
    assert auto.max_power_w == pytest.approx(11040)


def test_night_charge_picks_the_cheapest_hours() -> None:
    """20 kWh from 18:00 to 07:00, no PV: the two cheapest hours (02:00–04:00) hold 22.08 kWh, so the
    plan uses them and nothing else; its last slot runs at the minimum power (4.14 kW for 15 min), a
    little more than the 0.68 kWh still missing."""
    now, deadline = at(7, 18), at(8, 7)
    prices = hourly(now, deadline, 0.30)
    prices.update(hourly(at(8, 2), at(8, 4), 0.18))
    prices.update(hourly(at(8, 4), at(8, 5), 0.22))
    plan = make_plan(20, now, deadline, surplus_w=hourly(now, deadline, 0.0), prices_per_kwh=prices)
    assert plan.met and plan.notes == ()
    grid = plan.grid_slots
    assert clock(grid[0].start_s) == "02:00" and clock(grid[-1].end_s) == "04:00"
    assert all(slot.price_per_kwh == 0.18 for slot in grid)
    assert plan.grid_kwh == pytest.approx(7 * 2.76 + 1.035)
    assert plan.cost == pytest.approx(plan.grid_kwh * 0.18)
    assert sorted(round(slot.power_w) for slot in grid) == [4140] + [11040] * 7
    assert plan.power_at(at(8, 2, 30)) == pytest.approx(11040)
    assert plan.power_at(at(8, 1, 59)) == 0


def test_needing_more_than_the_cheapest_hours_takes_the_next_cheapest() -> None:
    now, deadline = at(7, 18), at(8, 7)
    prices = hourly(now, deadline, 0.30)
    prices.update(hourly(at(8, 2), at(8, 4), 0.18))
    prices.update(hourly(at(8, 4), at(8, 5), 0.22))
    plan = make_plan(30, now, deadline, prices_per_kwh=prices)
    assert plan.met
    assert {slot.price_per_kwh for slot in plan.grid_slots} == {0.18, 0.22}
    assert plan.cost == pytest.approx(22.08 * 0.18 + (30 - 22.08) * 0.22)


def test_sunny_day_needs_no_grid() -> None:
    """15 kWh by 18:00 with 6 kW surplus 10:00–15:00: 0.8 × 6 kW × 5 h = 24 kWh from PV."""
    now, deadline = at(7, 8), at(7, 18)
    surplus = hourly(now, deadline, 0.0)
    surplus.update(hourly(at(7, 10), at(7, 15), 6000.0))
    plan = make_plan(
        15, now, deadline, surplus_w=surplus, prices_per_kwh=hourly(now, deadline, 0.10), feed_in_per_kwh=0.08
    )
    assert plan.met and plan.grid_slots == ()
    assert plan.pv_kwh == pytest.approx(24)
    assert plan.cost == pytest.approx(24 * 0.08)


def test_pv_is_counted_with_the_safety_margin_and_grid_tops_up() -> None:
    """6.25 kW surplus for 2 h counts as 10 kWh (pv_factor 0.8: 5 kW); 14 kWh need 4 kWh from the
    grid, in the cheapest hour, one with PV running (its unit cost is the grid price)."""
    now, deadline = at(7, 10), at(7, 14)
    surplus = hourly(now, deadline, 0.0)
    surplus.update(hourly(at(7, 11), at(7, 13), 6250.0))
    prices = hourly(now, deadline, 0.30)
    prices.update(hourly(at(7, 12), at(7, 13), 0.10))
    plan = make_plan(14, now, deadline, surplus_w=surplus, prices_per_kwh=prices)
    assert plan.met
    assert plan.grid_kwh == pytest.approx(4)
    assert plan.pv_kwh == pytest.approx(10)
    assert all(clock(slot.start_s)[:2] == "12" for slot in plan.grid_slots)


def test_weak_surplus_makes_a_slot_cheaper_to_fill() -> None:
    """Same price everywhere; one slot has 3 kW surplus (below the 4.14 kW minimum, so no PV charging),
    which covers part of a full-power draw at the feed-in price: that slot is filled first."""
    now, deadline = at(7, 9), at(7, 12)
    surplus = hourly(now, deadline, 0.0)
    surplus[slot_start(at(7, 9, 15))] = 3750.0  # 3 kW after the margin
    plan = make_plan(
        0.5,
        now,
        deadline,
        surplus_w=surplus,
        prices_per_kwh=hourly(now, deadline, 0.30),
        feed_in_per_kwh=0.08,
    )
    assert [clock(slot.start_s) for slot in plan.grid_slots] == ["09:15"]
    only = plan.grid_slots[0]
    assert only.pv_kwh == pytest.approx(0.75)
    assert only.pv_kwh + only.grid_kwh == pytest.approx(1.035)  # min power 4.14 kW for 15 min: overshoot


def test_impossible_target_is_flagged_with_full_power_from_now() -> None:
    now, deadline = at(7, 5), at(7, 7)
    plan = make_plan(30, now, deadline)
    assert not plan.met
    assert plan.expected_kwh == pytest.approx(22.08)
    assert plan.shortfall_kwh == pytest.approx(30 - 22.08)
    assert all(slot.power_w == pytest.approx(11040) for slot in plan.slots)
    assert plan.latest_start_s < now
    assert plan.latest_start_s == pytest.approx(deadline - 30 / 11.04 * 3600)


def test_latest_start_when_feasible() -> None:
    plan = make_plan(11.04, at(7, 22), at(8, 7))
    assert plan.met and clock(plan.latest_start_s) == "06:00"
    # a flat price: the latest hour is chosen (decide as late as possible)
    assert clock(plan.grid_slots[0].start_s) == "06:00"


def test_deadline_across_midnight() -> None:
    """Planned at 22:10 for 07:00: the deadline is tomorrow; the cheapest hour is at 00:00–01:00 and
    the first slot is cut at now."""
    now = at(7, 22, 10)
    deadline = next_deadline(now, time(7, 0), BERLIN)
    assert deadline == at(8, 7)
    prices = hourly(now, deadline, 0.30)
    prices.update(hourly(at(8, 0), at(8, 1), 0.05))
    plan = make_plan(11.04, now, deadline, prices_per_kwh=prices)
    assert plan.slots[0].start_s == now and clock(plan.slots[0].end_s) == "22:15"
    assert plan.slots[-1].end_s == deadline
    assert [clock(slot.start_s) for slot in plan.grid_slots] == ["00:00", "00:15", "00:30", "00:45"]
    assert plan.cost == pytest.approx(11.04 * 0.05)


def test_dead_forecast_assumes_no_pv() -> None:
    """No forecast: the same sunny day is planned from the grid alone, and the plan says why."""
    now, deadline = at(7, 8), at(7, 18)
    plan = make_plan(15, now, deadline, prices_per_kwh=hourly(now, deadline, 0.10))
    assert plan.met and plan.pv_kwh == 0 and plan.grid_kwh == pytest.approx(15)
    assert plan.notes == ("no solar forecast: assuming no PV",)


def test_dead_tariff_uses_the_flat_price() -> None:
    now, deadline = at(7, 18), at(8, 7)
    plan = make_plan(5, now, deadline, surplus_w=hourly(now, deadline, 0.0), fallback_price_per_kwh=0.31)
    assert plan.met and plan.cost == pytest.approx(5 * 0.31)
    assert {slot.price_per_kwh for slot in plan.slots} == {0.31}
    assert plan.notes == ("no prices: assuming a flat 0.31/kWh",)


def test_prices_missing_for_tomorrow_fall_back_per_slot() -> None:
    """Day-ahead prices end at midnight until ~13:00: the night after is planned at the flat price,
    so a cheap known hour before midnight wins over unknown ones."""
    now, deadline = at(7, 18), at(8, 7)
    prices = hourly(now, at(8, 0), 0.35)
    prices.update(hourly(at(7, 23), at(8, 0), 0.20))
    plan = make_plan(11.04, now, deadline, surplus_w=hourly(now, deadline, 0.0), prices_per_kwh=prices)
    assert [clock(slot.start_s) for slot in plan.grid_slots] == ["23:00", "23:15", "23:30", "23:45"]
    assert plan.notes == ("prices missing for 28 slot(s): assuming 0.3/kWh there",)


def test_nothing_needed_means_no_grid() -> None:
    plan = make_plan(0, at(7, 18), at(8, 7))
    assert plan.met and plan.grid_slots == () and plan.cost == 0


def test_energy_to_add_and_bad_input() -> None:
    assert energy_to_add_kwh(80, 30, 60) == pytest.approx(30)
    assert energy_to_add_kwh(50, 70, 60) == 0
    with pytest.raises(ValueError, match="soc_pct"):
        energy_to_add_kwh(80, 130, 60)
    with pytest.raises(ValueError, match="need_kwh"):
        plan_charge(
            need_kwh=-1,
            deadline_s=1.0,
            now_s=0.0,
            limits=LIMITS,
            surplus_w=None,
            prices_per_kwh=None,
            fallback_price_per_kwh=0.3,
        )


def test_next_deadline_by_weekday_and_dst() -> None:
    friday_evening = at(11, 20)  # 2026-12-11 is a Friday
    assert next_deadline(friday_evening, time(7, 0), BERLIN, ["mon"]) == at(14, 7)
    # across the spring DST change (2027-03-28, 02:00 → 03:00): 07:00 local is 05:00 UTC
    sat = datetime(2027, 3, 27, 22, 0, tzinfo=BERLIN).timestamp()
    assert datetime.fromtimestamp(next_deadline(sat, time(7, 0), BERLIN), UTC).hour == 5
    with pytest.raises(ValueError, match="weekdays"):
        next_deadline(sat, time(7, 0), BERLIN, ["monday"])
