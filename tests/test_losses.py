"""benchmarks.losses: the per-state sums add up to the replay's own scores."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.losses import STATES, day_losses
from pvcharge.control import ChargePoint, ControlConfig, Controller
from pvcharge.sim.replay import replay
from pvcharge.sim.trace import load_trace

DATA = Path(__file__).resolve().parent.parent / "pvcharge" / "sim" / "data"


@pytest.mark.parametrize("control", [{}, {"phase_down_deficit_wh": 0, "up_hold_s": 0}])
def test_the_states_add_up_to_the_replays_capture_and_non_pv_share(control: dict[str, float]) -> None:
    trace = load_trace(next(iter(sorted(DATA.glob("*.csv")))))
    rows = day_losses(trace, control)
    score = replay(trace, Controller(ControlConfig(**control), ChargePoint(phases="auto")))
    oracle_wh, car_wh = rows["_oracle"][0], rows["_car"][0]
    assert oracle_wh == pytest.approx(score.oracle_kwh * 1000, rel=0.01)
    assert car_wh == pytest.approx(score.car_kwh * 1000, rel=0.01)
    lost_wh = sum(rows[k][0] for k in STATES if k in rows)
    nonpv_wh = sum(rows[k][1] for k in STATES if k in rows)
    assert 1 - lost_wh / oracle_wh == pytest.approx(score.capture, abs=0.005)
    non_pv = (score.battery_to_car_kwh + score.grid_to_car_kwh) / score.car_kwh
    assert nonpv_wh / car_wh == pytest.approx(non_pv, abs=0.002)
    assert set(rows) - {"_oracle", "_car"} <= set(STATES)
