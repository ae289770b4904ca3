"""pyeasee 0.8.21, the community's Easee client (Home Assistant's easee_hass), unchanged against the Easee
emulator: what it sends in ordinary use must get the answers the cloud gives, so the emulator stays
faithful where pvcharge's own driver does not look.

pyeasee has no base-URL parameter: its ``Easee`` object keeps the host in the plain attribute ``base``
(``"https://api.easee.com"``, read by ``base_uri()`` and every request), which the tests set to the
emulator's ``http://127.0.0.1:<port>`` right after construction; nothing else of pyeasee is touched.
SignalR is not used (the emulator has none).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from pyeasee import Easee
from pyeasee.exceptions import BadRequestException
from sitestub import FakeClock

from pvcharge.sim.easee import EaseeEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace

USER, PASSWORD, CHARGER = "demo@example.com", "demo-password", "EH000001"
NOON_S = 12 * 3600  # the bundled day's car is plugged in 08:00–18:00 local

# pyeasee's raise_for_status builds aiohttp.ClientResponseError(code=…), deprecated in aiohttp 3.x
pytestmark = pytest.mark.filterwarnings("ignore:code argument is deprecated:DeprecationWarning")


@pytest.fixture
def site() -> SiteModel:
    clock = FakeClock(bundled_trace().start_s + NOON_S)
    return SiteModel(bundled_trace(), t_s=clock.t_s, clock=clock)


@pytest.fixture
async def emulator(site: SiteModel) -> AsyncIterator[EaseeEmulator]:
    async with EaseeEmulator(site) as emu:  # the real clock: pyeasee times its token by datetime.now()
        yield emu


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def pointed_at(emulator: EaseeEmulator, session: aiohttp.ClientSession, password: str = PASSWORD) -> Easee:
    easee = Easee(USER, password, session=session)
    easee.base = emulator.url
    return easee


async def test_pyeasee_finds_the_charger_its_site_and_circuit_and_reads_them(
    emulator: EaseeEmulator, session: aiohttp.ClientSession
) -> None:
    easee = pointed_at(emulator, session)
    chargers = await easee.get_chargers()
    assert [c.id for c in chargers] == [CHARGER]
    charger = chargers[0]
    assert (charger.name, charger.product_code, charger.level_of_access) == (CHARGER, 1, 1)

    observations = await charger.get_observations(109, 120, 114, 48, 999)
    values = {o["id"]: o["value"] for o in observations["observations"]}
    assert values == {109: 6, 120: 0.0, 114: 32.0, 48: 32.0}  # a car plugged in, not drawing yet; 999 unknown

    config = await charger.get_config()
    assert (config["phaseMode"], config["localNodeType"]) == ("Auto", "Master")
    assert config["maxChargerCurrent"] == 32 and config["isEnabled"] is True

    charger_site = await (await easee.get(f"/api/chargers/{CHARGER}/site")).json()
    assert charger_site["id"] == emulator.site_id

    sites = await easee.get_sites()
    assert [s.id for s in sites] == [emulator.site_id]
    circuits = sites[0].get_circuits()
    assert [c.id for c in circuits] == [emulator.circuit_id]
    assert [c.id for c in circuits[0].get_chargers()] == [CHARGER]
    assert sites[0]["address"]["street"] and sites[0]["ratedCurrent"] > 0  # what pyeasee's summary prints

    products = await easee.get_account_products()
    assert [c["id"] for c in products[0]["circuits"]] == [emulator.circuit_id]

    state = await easee.get_site_state(str(emulator.site_id))
    charger_state = state.get_charger_state(CHARGER)
    assert charger_state["chargerOpMode"] == "READY_TO_CHARGE"
    assert state.get_charger_config(CHARGER)["phaseMode"] == "Auto"
    assert emulator.count_429 == 0


async def test_pyeasee_sets_currents_pauses_and_resumes(
    emulator: EaseeEmulator, site: SiteModel, session: aiohttp.ClientSession
) -> None:
    easee = pointed_at(emulator, session)
    (charger,) = await easee.get_chargers()

    await charger.set_dynamic_charger_current(10)
    assert emulator.dynamic_charger_a == 10 and site.state().offered_current_a == 10
    await charger.pause()
    assert emulator.dynamic_charger_a == 0 and site.state().offered_current_a == 0
    await charger.resume()  # resets the dynamic charger current to the maximum, as the charger does
    assert emulator.dynamic_charger_a == 32 and site.state().offered_current_a == 32

    await charger.set_max_charger_current(16)  # POST /settings {"maxChargerCurrent": 16}
    assert site.state().offered_current_a == 16
    assert (await charger.get_config())["maxChargerCurrent"] == 16
    await charger.phaseMode(2)  # unchanged: 200
    await charger.enable_idle_current(True)
    assert (await charger.get_config())["enableIdleCurrent"] is True

    (site_record,) = await easee.get_sites()
    (circuit,) = site_record.get_circuits()
    await circuit.set_dynamic_current(12.7, 0, 0)  # floored; P2 = P3 = 0: one phase [EV]
    assert emulator.circuit_a == (12, 0, 0)
    assert (site.state().offered_current_a, site.state().offered_phases) == (12, 1)
    (circuit_charger,) = circuit.get_chargers()
    await circuit_charger.set_dynamic_charger_circuit_current(8)  # pyeasee fills P2, P3 with P1
    assert emulator.circuit_a == (8, 8, 8)
    reply = await easee.get(f"/api/sites/{emulator.site_id}/circuits/{emulator.circuit_id}/dynamicCurrent")
    assert await reply.json() == {"phase1": 8, "phase2": 8, "phase3": 8}
    assert emulator.count_429 == 0


async def test_a_wrong_password_gets_pyeasees_error_for_the_clouds_400(
    emulator: EaseeEmulator, session: aiohttp.ClientSession
) -> None:
    easee = pointed_at(emulator, session, password="not-" + PASSWORD)
    with pytest.raises(BadRequestException) as err:
        await easee.get_chargers()
    assert str(err.value) == "Invalid username or password"
    assert [(p, s) for _, _, p, s in emulator.request_log] == [("/api/accounts/login", 400)]
