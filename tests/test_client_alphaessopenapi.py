"""alphaessopenapi 0.0.21 (the community's AlphaESS Open API client, import name ``alphaess``), unchanged,
against the AlphaESS emulator on 127.0.0.1.

How it reaches the emulator: the library builds every URL at call time from its module constant
``alphaess.alphaess.BASEURL`` (``f"{BASEURL}/getEssList"`` in each method) and takes no base URL, so the
tests set that one constant to the emulator's base URL with ``monkeypatch`` (restored after each test).
That is the least invasive way: no method, session or request of the library is touched, it signs with
its own ``time.time()`` and sends its own headers; the emulator runs on the real clock to check them.

What the issue found (issue 12): the emulator answered the library's second call in a row 6053 (one GET
per 10 s, far stricter than the cloud, reference meters.md §3.4), and ``getdata()`` died on a 404 from
``getSumDataForCustomer``, which the emulator did not serve.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import alphaess.alphaess as library
import pytest
from alphaess.alphaess import AlphaESSApiError
from alphaess.alphaess import alphaess as AlphaEss  # the class is lower-case

from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace

APP_ID = "alpha3f1c0e2b"
APP_SECRET = "b5d0c7e4a1f94e2c"  # the emulator's credentials: test values
SYS_SN = "AL2002321010043"
EV_SN = "EV1102321010043"
#: what ``getdata()`` asks, in its order (alphaess.py ``getdata``; meters.md §3.5)
GETDATA_PATHS = [
    "/api/getEssList",
    "/api/getSumDataForCustomer",
    "/api/getOneDateEnergyBySn",
    "/api/getLastPowerData",
    "/api/getChargeConfigInfo",
    "/api/getDisChargeConfigInfo",
]


@pytest.fixture
def site() -> SiteModel:
    trace = bundled_trace()
    model = SiteModel(trace, t_s=trace.start_s + 10 * 3600)
    model.advance(2 * 3600)  # two hours of the day: energy totals that are not 0
    return model


@pytest.fixture
async def emulator(site: SiteModel, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AlphaEssEmulator]:
    # the default account: 150 requests a minute (a 2026 stress test saw more pass); the real clock
    async with AlphaEssEmulator(
        site, app_id=APP_ID, app_secret=APP_SECRET, sys_sn=SYS_SN, evcharger_sn=EV_SN, clock=time.time
    ) as emu:
        monkeypatch.setattr(library, "BASEURL", emu.url)
        yield emu


@pytest.fixture
async def client(emulator: AlphaEssEmulator) -> AsyncIterator[AlphaEss]:
    api = AlphaEss(APP_ID, APP_SECRET, raise_on_error=True)
    yield api
    await api.close()


def paths(emulator: AlphaEssEmulator) -> list[str]:
    return [r.path.split("?")[0] for r in emulator.received]


async def test_getdata_gets_every_part_consistent_with_the_site(
    client: AlphaEss, emulator: AlphaEssEmulator, site: SiteModel
) -> None:
    (unit,) = await client.getdata()
    assert paths(emulator) == GETDATA_PATHS and emulator.too_fast == 0
    assert unit["sysSn"] == SYS_SN and unit["cobat"] == 10.0
    state, tally = site.state(), site.energy
    power = unit["LastPower"]
    assert (power["ppv"], power["pgrid"], power["pbat"]) == (
        round(state.pv_power_w),
        round(state.grid_power_w),
        round(state.battery_power_w),
    )
    assert power["soc"] == round(state.battery_soc_pct, 1) == unit["surplusCobat"] * 10
    total = unit["SumData"]
    assert total["epvtoday"] == round(tally.pv_wh / 1000, 2) > 1  # kWh
    assert (total["einput"], total["eoutput"]) == (
        round(tally.grid_import_wh / 1000, 2),
        round(tally.grid_export_wh / 1000, 2),
    )
    assert total["eload"] == pytest.approx(
        total["epvtoday"] + total["einput"] - total["eoutput"] + total["edischarge"] - total["echarge"],
        abs=0.05,
    )
    day = unit["OneDateEnergy"]
    assert day["theDate"] == time.strftime("%Y-%m-%d") and day["epv"] == total["epvtoday"]
    assert (day["eInput"], day["eOutput"], day["eCharge"]) == (
        total["einput"],
        total["eoutput"],
        total["echarge"],
    )
    assert unit["ChargeConfig"] == {
        "gridCharge": 0,
        "timeChaf1": "00:00",
        "timeChae1": "00:00",
        "timeChaf2": "00:00",
        "timeChae2": "00:00",
        "batHighCap": 100,
    }
    assert unit["DisChargeConfig"]["ctrDis"] == 0 and unit["DisChargeConfig"]["batUseCap"] == 10


async def test_getdata_with_the_wallbox_the_day_series_and_the_schedule(
    client: AlphaEss, emulator: AlphaEssEmulator, site: SiteModel
) -> None:
    (unit,) = await client.getdata(get_power=True, get_ev=True, get_timecharge=True)
    assert unit["EVData"] == [{"evchargerSn": EV_SN, "evchargerModel": "SMILE-EVCT11"}]
    assert unit["EVStatus"] == {"evchargerStatus": 2}  # plugged in (noon), not started
    assert unit["EVCurrent"] == {"currentsetting": 16}
    (sample,) = unit["OneDayPower"]
    fields = {"sysSn", "uploadTime", "ppv", "load", "cbat", "feedIn", "gridCharge", "pchargingPile"}
    assert set(sample) == fields  # the live names ([A2] docs/API.md), not the portal's cobat/pChargingPile
    assert sample["cbat"] == unit["LastPower"]["soc"]
    assert unit["TimeCharge"] is None  # 6017, no operation permission: getdata leaves the key empty
    assert emulator.too_fast == 0 and len(emulator.received) == len(GETDATA_PATHS) + 5


async def test_single_calls_in_a_row_and_a_start(
    client: AlphaEss, emulator: AlphaEssEmulator, site: SiteModel
) -> None:
    assert await client.authenticate() is True
    assert (await client.getLastPowerData(SYS_SN))["pev"] == 0
    assert await client.getEvChargerStatusBySn(SYS_SN, EV_SN) == {"evchargerStatus": 2}
    assert await client.remoteControlEvCharger(SYS_SN, EV_SN, 1) is None  # data null: accepted
    assert site.state().offered_current_a == 16
    assert await client.getEvChargerStatusBySn(SYS_SN, EV_SN) == {"evchargerStatus": 5}
    with pytest.raises(AlphaESSApiError) as bad:
        await client.getOneDateEnergyBySn(SYS_SN, "yesterday")
    assert bad.value.code == 6001 and "queryDate" in bad.value.expMsg
    assert emulator.too_fast == 0


async def test_a_wrong_secret_is_the_librarys_auth_error(emulator: AlphaEssEmulator) -> None:
    strict = AlphaEss(APP_ID, "guess", raise_on_error=True)
    with pytest.raises(AlphaESSApiError) as err:
        await strict.getESSList()
    assert (err.value.code, err.value.description) == (6007, "Sign verification error")
    await strict.close()
    lenient = AlphaEss(APP_ID, "guess")  # the library's default: logged, None, authenticate() False
    assert await lenient.getESSList() is None
    assert await lenient.authenticate() is False
    assert await lenient.getdata() == []  # getESSList refused: nothing else asked
    await lenient.close()
    assert paths(emulator) == ["/api/getEssList"] * 4


async def test_too_fast_is_the_librarys_6053(client: AlphaEss, emulator: AlphaEssEmulator) -> None:
    emulator.requests_per_window, emulator.window_s = 1, 10.0  # one request per 10 s
    await client.getESSList()
    with pytest.raises(AlphaESSApiError) as err:
        await client.getESSList()
    assert err.value.code == 6053 and err.value.msg == "The maximum number of requests has been reached"
