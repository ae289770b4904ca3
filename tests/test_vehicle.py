"""Vehicle profiles (pvcharge.control.vehicle): each knob against the same scenario without it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvcharge.control import ChargePoint, ControlConfig, Controller, Decision, Vehicle
from pvcharge.readings import ChargerReading, SiteReading

V = 230.0


def drive(
    surplus: Callable[[float], float],
    until_s: float,
    vehicle: Vehicle | None = None,
    phases: Any = "auto",
    stale_from_s: float = float("inf"),
    **control: Any,
) -> list[tuple[float, Decision]]:
    """A closed loop without a battery: the car draws what it is offered on the offered phases
    (``grid = car − surplus``), a cycle every 5 s; from ``stale_from_s`` the meter reading stays old."""
    control.setdefault("deadzone_w", 0.0)
    ctl = Controller(ControlConfig(**control), ChargePoint(phases=phases), vehicle=vehicle)
    one_phase_car = vehicle is not None and vehicle.phases == 1
    t, car_w, car_phases, log = 0.0, 0.0, 0, []
    while t < until_s:
        t += 5.0
        stamp = t if t < stale_from_s else stale_from_s
        site = SiteReading(car_w - surplus(stamp), max(surplus(stamp), 0.0), 0.0, None, stamp)
        d = ctl.step(t, site, ChargerReading(True, car_w > 0, car_w, 0.0, car_phases, t))
        car_phases = (1 if one_phase_car else d.command.phases) if d.command.current_a > 0 else 0
        car_w = d.command.current_a * car_phases * V
        log.append((t, d))
    return log


def last(log: list[tuple[float, Decision]]) -> tuple[float, int]:
    command = log[-1][1].command
    return command.current_a, command.phases


def test_min_current_3p_keeps_a_zoe_on_one_phase_below_8_a() -> None:
    """5 kW: 7 A on 3 phases for most cars; a Zoe needs 8 A (5520 W) there, so 1 phase at 16 A."""
    assert last(drive(lambda t: 5000.0, 1800)) == (7.0, 3)
    assert last(drive(lambda t: 5000.0, 1800, Vehicle(min_current_3p_a=8))) == (16.0, 1)


def test_min_current_3p_is_the_floor_on_a_three_phase_charge_point() -> None:
    log = drive(lambda t: 4500.0, 1800, Vehicle(min_current_3p_a=8), phases=3)
    assert {d.command.current_a for _, d in log} == {0.0}  # 4500 W < 8 A × 3 × 230 V: never starts
    log = drive(lambda t: 6000.0, 1800, Vehicle(min_current_3p_a=8), phases=3)
    assert last(log) == (8.0, 3)


def test_vehicle_phases_narrow_an_auto_charge_point() -> None:
    assert last(drive(lambda t: 9000.0, 1800))[1] == 3
    assert last(drive(lambda t: 9000.0, 1800, Vehicle(phases=1))) == (16.0, 1)


def test_a_one_phase_vehicle_on_a_three_phase_charge_point_is_computed_on_one_phase() -> None:
    """3000 W on a fixed 3-phase charge point: a 3-phase car never starts (needs 4140 W); a 1-phase car
    draws on one phase, so 13 A fit."""
    assert {d.command.current_a for _, d in drive(lambda t: 3000.0, 1800, phases=3)} == {0.0}
    assert last(drive(lambda t: 3000.0, 1800, Vehicle(phases=1), phases=3)) == (13.0, 3)


def test_never_stop_holds_min_current_when_the_surplus_goes() -> None:
    def sunny_then_dark(t: float) -> float:
        return 5000.0 if t < 1800 else 0.0

    assert last(drive(sunny_then_dark, 5400, phases=1)) == (0.0, 1)
    assert last(drive(sunny_then_dark, 5400, Vehicle(never_stop=True), phases=1)) == (6.0, 1)


def test_never_stop_still_pauses_on_stale_meter_data() -> None:
    log = drive(lambda t: 5000.0, 3600, Vehicle(never_stop=True), phases=1, stale_from_s=1800)
    assert last(log) == (0.0, 1)
    assert "stale" in log[-1][1].reason


def test_no_phase_switch_keeps_the_phases_of_the_session() -> None:
    """8 kW then 2.5 kW: auto switches the charging car down to 1 phase; with no_phase_switch it stays
    on 3 phases (at min current, then paused for lack of surplus) and starts again on 1 phase."""

    def strong_then_weak(t: float) -> float:
        return 8000.0 if t < 3600 else 2500.0

    log = drive(strong_then_weak, 7200, cloud_filter=60)
    assert any(d.command.phases == 1 and d.command.current_a > 0 for t, d in log if t > 3600)
    assert all(d.command.current_a > 0 for t, d in log if 3600 < t < 4200)  # switched, not paused
    log = drive(strong_then_weak, 7200, Vehicle(no_phase_switch=True), cloud_filter=60)
    during = [d.command for t, d in log if 3600 < t < 3900]  # before min_off_s ends
    assert all(c.phases == 3 for c in during if c.current_a > 0)
    assert 0.0 in {c.current_a for c in during}  # paused rather than switched while charging
    assert last(log) == (10.0, 1)  # the next session chose 1 phase at its start


def test_no_phase_switch_keeps_one_phase_when_the_surplus_grows_during_the_charge() -> None:
    def weak_then_strong(t: float) -> float:
        return 3000.0 if t < 1800 else 9000.0

    log = drive(weak_then_strong, 5400)
    assert log[-1][1].command.phases == 3  # the evidence for 3 phases switched the charging car
    log = drive(weak_then_strong, 5400, Vehicle(no_phase_switch=True))
    assert {d.command.phases for t, d in log if d.command.current_a > 0} == {1}
    assert last(log) == (16.0, 1)


def test_no_phase_switch_in_fast_mode_waits_for_a_pause() -> None:
    ctl = Controller(
        ControlConfig(mode="pv"), ChargePoint(phases="auto"), vehicle=Vehicle(no_phase_switch=True)
    )
    assert ctl.phases == 1
    ctl.set_mode("fast")
    site = SiteReading(0.0, 0.0, 0.0, None, 10.0)
    charging = ChargerReading(True, True, 3680.0, 16.0, 1, 10.0)
    assert ctl.step(10.0, site, charging).command.phases == 1
    paused = ChargerReading(True, False, 0.0, 0.0, 0, 15.0)
    assert ctl.step(15.0, SiteReading(0.0, 0.0, 0.0, None, 15.0), paused).command.phases == 3
