"""Property tests of the control core over arbitrary reading sequences (hypothesis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pvcharge.control import ChargePoint, ControlConfig, Controller, Decision
from pvcharge.readings import ChargerReading, SiteReading

Step = tuple[float, float, float, float, float, bool, float]

step = st.tuples(
    st.floats(min_value=0.5, max_value=60),  # seconds since the previous cycle
    st.floats(min_value=-30000, max_value=30000),  # grid
    st.floats(min_value=0, max_value=15000),  # pv
    st.floats(min_value=-5000, max_value=5000),  # battery
    st.floats(min_value=0, max_value=22000),  # car power
    st.booleans(),  # connected
    st.floats(min_value=0, max_value=120),  # meter reading age
)
# fresh readings, car plugged in, a surplus that swings hard: for the timing properties
fresh_step = st.tuples(
    st.sampled_from([5.0, 5.0, 5.0, 10.0, 60.0]),
    st.floats(min_value=-12000, max_value=0),  # grid: exporting or balanced
    st.just(12000.0),
    st.floats(min_value=-5000, max_value=5000),
    st.floats(min_value=0, max_value=11040),
    st.just(True),
    st.just(0.0),
)


def run(ctl: Controller, steps: list[Step]) -> Iterator[tuple[float, float, Decision]]:
    t = 0.0
    for dt, grid, pv, battery, car_w, connected, age in steps:
        t += dt
        site = SiteReading(grid, pv, battery, 50.0, t - age)
        charger = ChargerReading(connected, car_w > 0, car_w, 0.0, 3 if car_w else 0, t)
        yield t, age, ctl.step(t, site, charger)


modes = st.sampled_from(["pv", "minpv", "fast"])


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=80), modes, st.integers(6, 32), st.sampled_from([1, 3, "auto"]))
def test_command_stays_within_the_charge_point(steps: list[Step], mode: Any, max_a: int, phases: Any) -> None:
    ctl = Controller(ControlConfig(mode=mode), ChargePoint(max_current_a=max_a, phases=phases))
    for _, _, d in run(ctl, steps):
        assert d.command.current_a <= max_a
        assert d.command.current_a == 0 or d.command.current_a >= 6
        assert d.command.current_a == int(d.command.current_a)  # whole amps
        assert d.command.phases == phases if phases != "auto" else d.command.phases in (1, 3)


@settings(max_examples=100, deadline=None)
@given(st.lists(step, max_size=60))
def test_off_never_charges(steps: list[Step]) -> None:
    ctl = Controller(ControlConfig(mode="off"), ChargePoint(phases="auto"))
    assert all(d.command.current_a == 0 for _, _, d in run(ctl, steps))


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=80), st.sampled_from(["pause", "min_current"]))
def test_stale_meter_never_charges_in_pv(steps: list[Step], safe_state: Any) -> None:
    ctl = Controller(
        ControlConfig(mode="pv", cloud_filter="off", max_age_s=30, safe_state=safe_state), ChargePoint()
    )
    for _, age, d in run(ctl, steps):
        if age > 30:
            assert d.command.current_a == 0, d.reason


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=120), st.integers(1, 4), st.sampled_from([0.0, 300.0, 900.0]), modes)
def test_phase_switches_respect_interval_and_hourly_cap(
    steps: list[Step], cap: int, interval_s: float, mode: Any
) -> None:
    ctl = Controller(
        ControlConfig(
            mode=mode,
            cloud_filter="off",
            phase_window_s=60,
            phase_switch_gain_wh=0,
            phase_switches_per_hour=cap,
            phase_switch_interval_s=interval_s,
        ),
        ChargePoint(phases="auto"),
    )
    switches: list[float] = []
    last = None
    for t, _, d in run(ctl, steps):
        if last is not None and d.command.phases != last:
            switches.append(t)
        last = d.command.phases
    for i, t in enumerate(switches):
        assert sum(1 for u in switches if t - 3600 < u <= t) <= cap
        if i:
            assert t - switches[i - 1] >= interval_s


@settings(max_examples=200, deadline=None)
@given(
    st.lists(fresh_step, max_size=200), st.sampled_from([0.0, 300.0, 600.0]), st.sampled_from([0.0, 300.0])
)
def test_min_on_and_off_times_hold_while_data_is_fresh(
    steps: list[Step], min_on: float, min_off: float
) -> None:
    """With fresh readings, the car plugged in and no grid import, a start is never followed by a stop
    within min_on_s, nor a stop by a start within min_off_s."""
    ctl = Controller(
        ControlConfig(cloud_filter="off", min_on_s=min_on, min_off_s=min_off, max_age_s=120), ChargePoint()
    )
    last_change: tuple[float, bool] | None = None  # from the first start on (the car starts paused)
    for t, _, d in run(ctl, steps):
        on = d.command.current_a > 0
        if last_change is None:
            if on:
                last_change = (t, on)
            continue
        since, was_on = last_change
        if on != was_on:
            assert t - since >= (min_on if was_on else min_off), d.reason
            last_change = (t, on)
