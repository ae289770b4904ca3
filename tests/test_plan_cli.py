"""``pvcharge plan`` as a user runs it: a subprocess against the aWATTar and Open-Meteo emulators."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from datetime import datetime
from pathlib import Path

from pvcharge.sim.dayahead import AwattarEmulator, DayAheadMarket
from pvcharge.sim.solarforecast import OpenMeteoEmulator, Sky

NOW = "2026-12-07T18:00+00:00"
NOW_S = datetime.fromisoformat(NOW).timestamp()


async def pvcharge_plan(config: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pvcharge",
        "plan",
        "--config",
        str(config),
        "--now",
        NOW,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TZ": "UTC"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_plan_picks_the_cheap_night_hours_of_the_day_ahead_curve(tmp_path: Path) -> None:
    market = DayAheadMarket()
    async with (
        AwattarEmulator(market, clock=lambda: NOW_S) as awattar,
        OpenMeteoEmulator(Sky(), clock=lambda: NOW_S) as open_meteo,
    ):
        config = tmp_path / "config.yaml"
        config.write_text(
            "meter: {type: huawei, host: 127.0.0.1}\n"
            "charger: {type: warp, url: 'http://127.0.0.1', phases: 3}\n"
            f"tariff: {{source: awattar, url: '{awattar.url}', grid_price_per_kwh: 0.4,"
            " charges_per_kwh: 0.18, vat_pct: 19}\n"
            f"forecast: {{source: open-meteo, url: '{open_meteo.url}',"
            " arrays: [{latitude: 48, longitude: 11, kwp: 8}]}\n"
            'plans: [{deadline: "07:00", energy_kwh: 20, timezone: UTC}]\n'
        )
        code, out = await pvcharge_plan(config)
        assert len(awattar.received) == 1 and len(open_meteo.received) == 1
        market.published_until_s = NOW_S + 6 * 3600  # tomorrow's prices not out yet
        late_code, late_out = await pvcharge_plan(config, "--kwh", "90", "--by", "01:00")
    assert code == 0, out
    match = re.match(r"plan 20 kWh by 07:00: met \(.*\); from the grid: (\d\d):00–(\d\d):(\d\d) at ", out)
    assert match, out
    assert 1 <= int(match[1]) <= 3 and int(match[2]) <= 5, out  # the curve's trough is at 03:00 UTC
    assert "note:" not in out  # prices and forecast both there
    assert late_code == 1 and "NOT met" in late_out and "latest start was" in late_out, late_out
    assert "note: prices missing for 4 slot(s): assuming 0.4/kWh there" in late_out, late_out
