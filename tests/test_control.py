"""Scenario tests of the v1 control core with hand-made readings and a fake clock."""

from __future__ import annotations

import pytest

from pvcharge.control import ChargePoint, ControlConfig, Controller, SiteConfig
from pvcharge.readings import ChargerReading, SiteReading
from pvcharge.settings import SettingError


def site(
    t: float, grid: float, pv: float = 5000.0, battery: float = 0.0, soc: float | None = 50.0
) -> SiteReading:
    return SiteReading(
        grid_power_w=grid, pv_power_w=pv, battery_power_w=battery, battery_soc_pct=soc, timestamp_s=t
    )


def car(t: float, power: float = 0.0, connected: bool = True) -> ChargerReading:
    return ChargerReading(
        connected=connected,
        charging=power > 0,
        power_w=power,
        current_a=0.0,
        phases=3 if power else 0,
        timestamp_s=t,
    )


def make(**control: float | str) -> Controller:
    return Controller(
        ControlConfig(**control),
        ChargePoint(min_current_a=6, max_current_a=16, phases=3),
        SiteConfig(voltage_v=230),
    )


def test_available_is_car_plus_export_plus_battery_charging_minus_target() -> None:
    ctl = make(start_delay_s=0, grid_target_w=100)
    # car draws 4140 W, site exports 1000 W, battery charges 500 W: 4140 + 1000 + 500 - 100 = 5540 W
    d = ctl.step(0.0, site(0.0, grid=-1000, battery=-500), car(0.0, power=4140))
    assert d.available_w == pytest.approx(5540)
    assert d.command.current_a == 8  # floor(5540 / 690) = 8 A
    assert d.command.phases == 3


def test_battery_discharge_is_subtracted_so_it_never_feeds_the_car() -> None:
    ctl = make(start_delay_s=0)
    # a balancing battery covers the car: grid 0, battery discharging 4140 W -> no surplus at all
    d = ctl.step(0.0, site(0.0, grid=0, battery=4140), car(0.0, power=4140))
    assert d.available_w == pytest.approx(0)


def test_start_only_after_surplus_held_for_start_delay() -> None:
    ctl = make(start_delay_s=60)
    t = 0.0
    while t < 60:
        d = ctl.step(t, site(t, grid=-5000), car(t))
        assert d.command.current_a == 0, f"started early at t={t}"
        t += 5
    d = ctl.step(60.0, site(60.0, grid=-5000), car(60.0))
    assert d.command.current_a == 7  # floor(5000 / 690)
    assert d.reason.startswith("start")


def test_a_dip_restarts_the_start_timer() -> None:
    ctl = make(start_delay_s=60)
    ctl.step(0.0, site(0.0, grid=-5000), car(0.0))
    ctl.step(40.0, site(40.0, grid=-1000), car(40.0))  # below 4140 W min power
    d = ctl.step(70.0, site(70.0, grid=-5000), car(70.0))
    assert d.command.current_a == 0
    d = ctl.step(130.0, site(130.0, grid=-5000), car(130.0))
    assert d.command.current_a > 0


def test_stop_only_after_shortfall_held_for_stop_delay_and_holds_min_meanwhile() -> None:
    ctl = make(start_delay_s=0, stop_delay_s=180)
    assert ctl.step(0.0, site(0.0, grid=-6000), car(0.0)).command.current_a == 8
    # a cloud: the car (4140 W at 6 A) now imports 2000 W
    for t in range(5, 180, 5):
        d = ctl.step(float(t), site(float(t), grid=2000), car(float(t), power=4140))
        assert d.command.current_a == 6, f"t={t}: {d.reason}"
    d = ctl.step(185.0, site(185.0, grid=2000), car(185.0, power=4140))
    assert d.command.current_a == 0
    assert d.reason.startswith("stop")


def test_current_clamped_to_max() -> None:
    ctl = make(start_delay_s=0)
    d = ctl.step(0.0, site(0.0, grid=-30000, pv=30000), car(0.0))
    assert d.command.current_a == 16


def test_stale_meter_pauses_at_once() -> None:
    ctl = make(start_delay_s=0, max_age_s=30)
    assert ctl.step(0.0, site(0.0, grid=-6000), car(0.0)).command.current_a > 0
    old = site(0.0, grid=-6000)
    assert ctl.step(30.0, old, car(30.0, power=5520)).command.current_a > 0  # exactly max age: still fresh
    d = ctl.step(31.0, old, car(31.0, power=5520))
    assert d.command.current_a == 0
    assert "stale" in d.reason


def test_no_meter_reading_pauses() -> None:
    d = make().step(0.0, None, car(0.0))
    assert d.command.current_a == 0
    assert "no meter reading" in d.reason


def test_no_vehicle_pauses_but_keeps_surplus_timer() -> None:
    ctl = make(start_delay_s=60)
    assert ctl.step(0.0, site(0.0, grid=-5000), car(0.0, connected=False)).command.current_a == 0
    assert ctl.step(65.0, site(65.0, grid=-5000), car(65.0, connected=False)).command.current_a == 0
    # plugged in after the surplus has already held for the start delay: starts at once
    assert ctl.step(70.0, site(70.0, grid=-5000), car(70.0)).command.current_a == 7


def test_off_never_charges_and_fast_charges_max_without_meter() -> None:
    ctl = make(mode="off", start_delay_s=0)
    assert ctl.step(0.0, site(0.0, grid=-20000, pv=20000), car(0.0)).command.current_a == 0
    ctl.set_mode("fast")
    d = ctl.step(1.0, None, car(1.0))
    assert (d.command.current_a, d.command.phases) == (16, 3)


def test_charger_missing_counts_car_power_as_zero() -> None:
    ctl = make(start_delay_s=0)
    d = ctl.step(0.0, site(0.0, grid=-5000), None)
    assert d.available_w == pytest.approx(5000)


def test_single_phase_charge_point() -> None:
    ctl = Controller(ControlConfig(start_delay_s=0), ChargePoint(phases=1, max_current_a=16))
    d = ctl.step(0.0, site(0.0, grid=-2000), car(0.0))
    assert (d.command.current_a, d.command.phases) == (8, 1)  # floor(2000 / 230)


def test_settings_cross_checks_name_the_key() -> None:
    with pytest.raises(SettingError) as err:
        ChargePoint(min_current_a=10, max_current_a=8)
    assert err.value.key == "min_current_a"
    with pytest.raises(SettingError) as err:
        ControlConfig(interval_s=10, max_age_s=5)
    assert err.value.key == "max_age_s"
