"""Property tests of the control core over arbitrary reading sequences (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pvcharge.control import ChargePoint, ControlConfig, Controller
from pvcharge.readings import ChargerReading, SiteReading

power = st.floats(min_value=-30000, max_value=30000, allow_nan=False)
step = st.tuples(
    st.floats(min_value=0.5, max_value=60),  # seconds since the previous cycle
    power,  # grid
    st.floats(min_value=0, max_value=15000),  # pv
    st.floats(min_value=-5000, max_value=5000),  # battery
    st.floats(min_value=0, max_value=22000),  # car power
    st.booleans(),  # connected
    st.floats(min_value=0, max_value=120),  # meter reading age
)


def run(ctl: Controller, steps: list[tuple[float, float, float, float, float, bool, float]]):
    t = 0.0
    for dt, grid, pv, battery, car_w, connected, age in steps:
        t += dt
        site = SiteReading(grid, pv, battery, 50.0, t - age)
        charger = ChargerReading(connected, car_w > 0, car_w, 0.0, 3 if car_w else 0, t)
        yield age, ctl.step(t, site, charger)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(step, max_size=60), st.sampled_from(["pv", "fast"]), st.integers(6, 32), st.sampled_from([1, 3])
)
def test_command_never_exceeds_max_current(steps, mode, max_a, phases) -> None:
    ctl = Controller(ControlConfig(mode=mode), ChargePoint(max_current_a=max_a, phases=phases))
    for _, d in run(ctl, steps):
        assert d.command.current_a <= max_a
        assert d.command.current_a == 0 or d.command.current_a >= 6
        assert d.command.phases == phases


@settings(max_examples=100, deadline=None)
@given(st.lists(step, max_size=60))
def test_off_never_charges(steps) -> None:
    ctl = Controller(ControlConfig(mode="off"), ChargePoint())
    assert all(d.command.current_a == 0 for _, d in run(ctl, steps))


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=60))
def test_stale_meter_never_charges_in_pv(steps) -> None:
    ctl = Controller(ControlConfig(mode="pv", start_delay_s=0, max_age_s=30), ChargePoint())
    for age, d in run(ctl, steps):
        if age > 30:
            assert d.command.current_a == 0, d.reason
