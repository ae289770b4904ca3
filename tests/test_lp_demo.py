"""``pvcharge demo --loadpoints 2``: the real daemon drives two WARP emulators on one site model."""

from __future__ import annotations

import io
import re

import pytest

from pvcharge.sim.lpdemo import loadpoints_summary, run_loadpoints_demo
from pvcharge.sim.trace import bundled_trace


@pytest.mark.timeout(300)
async def test_two_loadpoints_demo_charges_both_cars_and_reports_a_line_per_loadpoint() -> None:
    """12:00–14:00 of the bundled day: carport (priority 1) charges until it leaves at 13:00, then garage
    takes the surplus (about 3.5 kWh each)."""
    trace = bundled_trace()
    noon = trace.start_s + 12 * 3600  # the trace starts at local midnight
    result = await run_loadpoints_demo(
        trace, speed=600, start_s=noon, end_s=noon + 2 * 3600, out=io.StringIO()
    )
    text = loadpoints_summary(result, trace)
    lines = {
        m[1]: m for m in re.finditer(r"loadpoint (\w+) +([\d.]+) kWh charged, PV share +([\d.]+) %", text)
    }
    assert set(lines) == {"carport", "garage"}, text
    assert all(float(m[2]) > 0 and 0 < float(m[3]) <= 100 for m in lines.values()), text
    assert result.fuse_violations == 0 and "fuse violations  0" in text
    assert result.demo.stats.cycles >= 0.97 * result.demo.cycles_due  # the clock waited for the daemon
    assert result.demo.stats.meter_failures == 0 and result.demo.stats.charger_failures == 0
    assert [lp.name for lp in result.loadpoints] == ["carport", "garage"]
    assert all(lp.car_wh > 1000 for lp in result.loadpoints)  # an hour of surplus each, at least 1 kWh


def test_the_demo_command_takes_loadpoints_2_with_the_warp_only(capsys: pytest.CaptureFixture[str]) -> None:
    from pvcharge.cli import build_parser

    args = build_parser().parse_args(["demo", "--loadpoints", "2", "--charger", "easee", "--no-record"])
    assert args.loadpoints == 2
    assert args.func(args) == 2
    assert "two WARPs" in capsys.readouterr().out


def test_the_demo_command_refuses_loadpoints_2_with_a_plan(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--plan`` with ``--loadpoints 2`` is refused, not run as the one-loadpoint night demo."""
    from pvcharge import cli_sim
    from pvcharge.cli import build_parser

    monkeypatch.setattr(cli_sim, "_demo_plan", lambda *_: pytest.fail("ran the plan demo"))
    args = build_parser().parse_args(
        ["demo", "--loadpoints", "2", "--plan", "20 kWh by 07:00", "--no-record"]
    )
    assert args.func(args) == 2
    assert "two WARPs" in capsys.readouterr().out
