"""``pvcharge demo --charger easee|alphaess``: the real daemon and cloud drivers against the Easee and
AlphaESS emulators on the demo's compressed clock, run as a user runs it."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from pvcharge.sim.demo import DEMO_ALPHAESS_SECRET, DEMO_EASEE_PASSWORD


async def pvcharge(*args: str, limit_s: float) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pvcharge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _kwh(out: str, label: str) -> float:
    found = re.search(rf"^\s+{label}\s+([\d.]+) kWh", out, re.MULTILINE)
    assert found, out
    return float(found.group(1))


def _share_pct(out: str, label: str) -> float:
    found = re.search(rf"^\s+{label}\s+[\d.]+ kWh \(\s*([\d.]+) %\)", out, re.MULTILINE)
    assert found, out
    return float(found.group(1))


@pytest.mark.parametrize(
    ("charger", "meter", "cloud", "write"),
    [
        ("easee", "huawei", "Easee cloud", "set_dynamic_charger_current"),
        ("alphaess", "alphaess", "AlphaESS cloud", "remoteControlEvCharger"),  # one emulator, one account
        ("alphaess", "senec", "AlphaESS cloud", "remoteControlEvCharger"),  # the wallbox's own emulator
    ],
)
async def test_the_demo_charges_from_pv_through_the_cloud_charger(
    charger: str, meter: str, cloud: str, write: str
) -> None:
    code, out, err = await pvcharge(
        "demo", "--charger", charger, "--meter", meter, "--seconds", "10", limit_s=60
    )
    assert code == 0, err
    assert "Summary: serf_east_2022-03-19.csv" in out
    car = _kwh(out, "car charged")
    assert car > 5  # the WARP demo charges ~27 kWh; an on/off 3.7-kW wallbox ~20
    assert _share_pct(out, "from PV") > 90
    assert _kwh(out, "from grid") < 0.05 * car
    # the cloud emulator accepted the driver's writes and refused nothing: no HTTP 429 or 403 (Easee),
    # no 6053 too fast (AlphaESS), nor anything else (401 expired token, 6006 timestamp, 6008 set failed)
    traffic = re.search(rf"^\s+{cloud}\s+(\d+) requests, writes: (.*); refused: (.*)$", out, re.MULTILINE)
    assert traffic, out
    writes = dict(re.findall(r"(\w+) (\d+)", traffic.group(2)))
    assert int(writes.get(write, 0)) >= 2, traffic.group(0)  # e.g. a start and the stop at the end
    assert traffic.group(3) == "none", traffic.group(0)
    assert "charger failures 0" in out and "meter failures 0" in out
    # the emulators' throwaway credentials are still credentials: never printed or logged
    assert DEMO_EASEE_PASSWORD not in out + err
    assert DEMO_ALPHAESS_SECRET not in out + err
