"""pysenec 0.3.0, unchanged, against the SENEC emulator on 127.0.0.1: the emulator stays faithful to
what the community's client asks for and decodes.

pysenec hard-codes ``http://<host>/lala.cgi`` (reference meters.md §2.1 [S1]), so it cannot speak to
the HTTPS of current firmware; appliances with firmware before Aug 2023 serve plain HTTP (§2.1 [S3]),
and the emulator with ``tls=False`` serves what they do.  Its ``Senec.update()`` posts one request for
the sections ENERGY, STATISTIC, TEMPMEASURE, PV1, PWR_UNIT, PM1OBJ1 and PM1OBJ2 (pysenec
``read_senec_v21``); every value it decodes must equal the simulated site's (float32 precision).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from pysenec import Senec

from pvcharge.sim.senec import TEMPERATURES_C, SenecEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace


def approx(value: float) -> Any:
    """Equal within float32 precision (the fl_ encoding), or 1e-3 around 0."""
    return pytest.approx(value, rel=1e-6, abs=1e-3)


@pytest.fixture
def model() -> SiteModel:
    """The reference site two hours into daylight: PV 3.6 kW charging the battery with 3.4 kW, energy
    counted since dawn."""
    site = SiteModel(bundled_trace())
    site.advance_to(site.trace.daylight()[0] + 2 * 3600)
    return site


async def update(emulator: SenecEmulator) -> Senec:
    async with aiohttp.ClientSession() as session:
        senec = Senec(f"127.0.0.1:{emulator.port}", session)
        await senec.update()
    return senec


async def test_update_reads_every_section_equal_to_the_site(model: SiteModel) -> None:
    async with SenecEmulator(model, tls=False) as emulator:
        senec = await update(emulator)
    state, energy = model.state(), model.energy
    assert state.battery_power_w < -100 and state.pv_power_w > 0 and energy.pv_wh > 0  # a busy site

    assert senec.grid_state_power == approx(state.grid_power_w)  # + = import, as canonical
    assert senec.solar_generated_power == approx(state.pv_power_w)
    assert senec.battery_state_power == approx(-state.battery_power_w)  # + = charging
    assert senec.battery_charge_percent == approx(state.battery_soc_pct)
    assert senec.house_power == approx(state.pv_power_w + state.grid_power_w + state.battery_power_w)
    assert senec.system_state == "CHARGE"

    raw = senec.raw_status
    battery = raw["ENERGY"]
    assert battery["GUI_BAT_DATA_VOLTAGE"] * battery["GUI_BAT_DATA_CURRENT"] == approx(-state.battery_power_w)
    assert battery["GUI_BAT_DATA_OA_CHARGING"] == "VARIABLE_NOT_FOUND"  # as in pysenec's capture

    # STATISTIC: lifetime kWh that grow with the site's energy, and add up like the site's
    assert senec.solar_total_generated > energy.pv_wh / 1000
    assert senec.house_total_consumption == approx(
        senec.solar_total_generated
        + senec.grid_total_import
        - senec.grid_total_export
        + senec.battery_total_discharged
        - senec.battery_total_charged
    )
    assert (senec.battery_temp, senec.case_temp, senec.mcu_temp) == (
        TEMPERATURES_C["BATTERY_TEMP"],
        TEMPERATURES_C["CASE_TEMP"],
        TEMPERATURES_C["MCU_TEMP"],
    )
    assert raw["PV1"] == {"POWER_RATIO": 100}
    assert raw["PWR_UNIT"] == {f"POWER_L{n}": [0.0] * 6 for n in (1, 2, 3)}

    grid = raw["PM1OBJ1"]
    assert grid["P_TOTAL"] == approx(state.grid_power_w)
    assert sum(grid["P_AC"]) == approx(state.grid_power_w)
    assert [u * i for u, i in zip(grid["U_AC"], grid["I_AC"], strict=True)] == [
        approx(abs(p)) for p in grid["P_AC"]
    ]
    assert grid["FREQ"] == 50.0
    assert raw["PM1OBJ2"] == {
        "FREQ": 0.0,
        "U_AC": [0.0] * 3,
        "I_AC": [0.0] * 3,
        "P_AC": [0.0] * 3,
        "P_TOTAL": 0.0,
    }


async def test_statistic_follows_the_energy_the_site_counts(model: SiteModel) -> None:
    async with SenecEmulator(model, tls=False) as emulator:
        before = await update(emulator)
        start = model.energy.pv_wh, model.energy.grid_import_wh, model.energy.battery_charge_wh
        model.advance(3600.0)
        after = await update(emulator)
    e = model.energy
    assert after.solar_total_generated - before.solar_total_generated == pytest.approx(
        (e.pv_wh - start[0]) / 1000, abs=0.01
    )
    assert after.grid_total_import - before.grid_total_import == pytest.approx(
        (e.grid_import_wh - start[1]) / 1000, abs=0.01
    )
    assert after.battery_total_charged - before.battery_total_charged == pytest.approx(
        (e.battery_charge_wh - start[2]) / 1000, abs=0.01
    )
