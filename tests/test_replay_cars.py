"""The replay with several cars (pvcharge.sim.replay.replay_cars)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from pvcharge.control import (
    ChargePoint,
    Circuit,
    ControlConfig,
    Controller,
    Decision,
    Loadpoint,
    SiteController,
)
from pvcharge.control.config import SiteConfig
from pvcharge.readings import ChargerCommand, ChargerReading, SiteReading
from pvcharge.sim.replay import replay, replay_cars
from pvcharge.sim.site import CarParams
from pvcharge.sim.trace import bundled_trace

AUTO = ChargePoint(phases="auto")
SHORT = CarParams(plug_in_s=11 * 3600, plug_out_s=15 * 3600)


def test_one_car_replays_as_in_the_one_car_replay() -> None:
    trace = bundled_trace()
    one = replay(trace, Controller(ControlConfig(), AUTO))
    site = replay_cars(
        trace, SiteController(ControlConfig(), SiteConfig(), [Loadpoint("main", AUTO)]), {"main": CarParams()}
    )
    car = site.cars["main"]
    assert (car.car_kwh, car.starts, car.phase_switches, car.charger_writes) == (
        pytest.approx(one.car_kwh, abs=1e-6),
        one.starts,
        one.phase_switches,
        one.charger_writes,
    )
    assert car.pv_to_car_kwh == pytest.approx(one.pv_to_car_kwh, abs=1e-6)
    assert site.oracle_kwh == pytest.approx(one.oracle_kwh, abs=1e-6)


def test_two_cars_share_the_day_within_the_fuse_and_a_circuit() -> None:
    sc = SiteController(
        ControlConfig(),
        SiteConfig(max_grid_current_a=25, circuits=(Circuit("garage", 16, ("b",)),)),
        [Loadpoint("a", AUTO), Loadpoint("b", AUTO)],
    )
    score = replay_cars(bundled_trace(), sc, {"a": CarParams(), "b": SHORT})
    assert score.cars["a"].car_kwh > 1 and score.cars["b"].car_kwh > 1
    assert score.fuse_violations == 0 and score.circuit_violations == 0
    assert 0 < score.capture <= 1
    assert score.pv_to_car_kwh == pytest.approx(sum(c.pv_to_car_kwh for c in score.cars.values()))


class _Reckless(SiteController):
    """Both cars at 16 A on 3 phases, whatever the limits say."""

    def step(
        self, now: float, site: SiteReading | None, chargers: Mapping[str, ChargerReading | None]
    ) -> dict[str, Decision]:
        return {n: Decision(ChargerCommand(16.0, 3), "reckless", "fast") for n in self.controllers}


def test_violations_are_counted_each_second() -> None:
    sc = _Reckless(
        ControlConfig(),
        SiteConfig(max_grid_current_a=25, circuits=(Circuit("garage", 20, ("a", "b")),)),
        [Loadpoint("a", AUTO), Loadpoint("b", AUTO)],
    )
    trace = bundled_trace()
    score = replay_cars(trace, sc, {"a": CarParams(), "b": SHORT})
    seconds = trace.end_s - trace.start_s
    assert score.circuit_violations == pytest.approx(seconds, abs=10)  # 32 A > 20 A all day
    assert score.fuse_violations > 20 * 3600  # 32 A > 25 A but while PV covers the difference
    assert score.overload_s > 3600  # drawn: only while both cars are plugged in and not full
