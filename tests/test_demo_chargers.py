"""``pvcharge demo --charger easee|alphaess|ocpp``: the real daemon and cloud drivers against the Easee and
AlphaESS emulators, and the OCPP driver with the charge point emulator, on the demo's compressed clock.

The strict checks run the demo in-process over the midday hours at 360× real time: a cycle of 5 s is
14 ms of real time, which a loaded machine still keeps up with (at the 4000× of ``--seconds 10`` a
busy machine lets whole cycles slip by, and the cloud emulators' simulated-time rate limits and
timestamp windows then refuse requests that no real cloud would).  One command-line run checks the
option and the summary line as a user sees them.
"""

from __future__ import annotations

import asyncio
import io
import re
import sys

import pytest

from pvcharge.sim.demo import run_demo
from pvcharge.sim.demo_devices import DEMO_ALPHAESS_SECRET, DEMO_EASEE_PASSWORD
from pvcharge.sim.trace import bundled_trace


@pytest.mark.parametrize(
    ("charger", "meter", "write"),
    [
        ("easee", "huawei", "set_dynamic_charger_current"),
        ("alphaess", "alphaess", "remoteControlEvCharger"),  # one emulator, one account
        ("alphaess", "senec", "remoteControlEvCharger"),  # the wallbox's own emulator
    ],
)
async def test_the_demo_charges_from_pv_through_the_cloud_charger(
    charger: str, meter: str, write: str, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = bundled_trace()
    start_s = trace.start_s + 10.5 * 3600
    out = io.StringIO()
    result = await run_demo(
        trace, speed=360, start_s=start_s, end_s=start_s + 1.5 * 3600, out=out, meter=meter, charger=charger
    )
    energy, traffic = result.energy, result.traffic
    assert traffic is not None
    # 1.5 h of midday sun: an hour and more of charging, almost all of it from PV
    assert energy.car_wh > 3000, energy
    assert energy.pv_to_car_wh > 0.95 * energy.car_wh, energy
    assert energy.grid_to_car_wh < 0.02 * energy.car_wh, energy
    # the cloud emulator took the driver's writes (a start, at least) and refused nothing: no HTTP 429
    # or 403 (Easee), no 6053 too fast (AlphaESS), nor 401, 6006 (timestamp), 6008 (set failed)
    assert traffic.writes[write] >= 1, traffic.line()
    assert not traffic.refused, traffic.line()
    assert result.stats.meter_failures == 0 and result.stats.charger_failures == 0
    # the emulators' throwaway credentials are still credentials: never printed or logged
    printed = out.getvalue() + "".join(capsys.readouterr())
    assert DEMO_EASEE_PASSWORD not in printed and DEMO_ALPHAESS_SECRET not in printed


async def test_the_demo_command_names_the_cloud_and_what_it_answered() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pvcharge",
        "demo",
        "--charger",
        "alphaess",
        "--meter",
        "alphaess",
        "--seconds",
        "5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    raw_out, raw_err = await asyncio.wait_for(proc.communicate(), 90)
    out, err = raw_out.decode(), raw_err.decode()
    assert proc.returncode == 0, err
    assert "AlphaESS Open API" in out and "one account" in out  # the header names what is emulated
    assert re.search(r"^Summary: serf_east_2022-03-19\.csv", out, re.MULTILINE), out
    assert re.search(r"^\s+AlphaESS cloud\s+\d+ requests, writes: .*; refused: ", out, re.MULTILINE), out
    assert DEMO_ALPHAESS_SECRET not in out + err


async def test_the_demo_charges_from_pv_through_ocpp() -> None:
    """``--charger ocpp``: the charge point emulator connects to the driver's central system, takes its
    profiles and reports its meter; the summary's traffic is what the charge point sent and accepted."""
    from pvcharge.sim.demo import summary

    trace = bundled_trace()
    start_s = trace.start_s + 10.5 * 3600
    out = io.StringIO()
    result = await run_demo(
        trace, speed=360, start_s=start_s, end_s=start_s + 1.5 * 3600, out=out, charger="ocpp"
    )
    energy, traffic = result.energy, result.traffic
    assert energy.car_wh > 3000, energy
    assert energy.pv_to_car_wh > 0.95 * energy.car_wh, energy
    assert energy.grid_to_car_wh < 0.02 * energy.car_wh, energy
    assert traffic is not None and traffic.name == "OCPP charge point"
    assert traffic.sent["BootNotification"] == 1 and traffic.sent["MeterValues"] > 100, traffic.line()
    assert traffic.accepted["SetChargingProfile"] >= 2 and not traffic.refused, traffic.line()
    assert result.stats.meter_failures == 0
    assert re.search(
        r"^\s+OCPP charge point\s+1 connection\(s\); sent .*MeterValues \d+", summary(result, trace), re.M
    )
