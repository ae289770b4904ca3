"""pyTibber 0.39.1, unchanged, against the Tibber emulator on 127.0.0.1: the emulator answers what the
community's client asks for (its INFO query, then UPDATE_INFO_PRICE with ``priceInfo(resolution:
QUARTER_HOURLY)`` for the home), and the prices it decodes equal the emulator's market.

pyTibber hard-codes the endpoint (``tibber.const.API_ENDPOINT``, imported into ``tibber``): the test
points that name at the emulator and changes nothing else. It posts its query form-encoded.
"""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import pytest
import tibber
from sitestub import FakeClock

from pvcharge.sim.dayahead import DayAheadMarket
from pvcharge.sim.tibber import CHARGES_EUR_PER_KWH, DEMO_TOKEN, HOME_ID, VAT, TibberEmulator

#: 19:00 in Berlin: today's and tomorrow's prices are out
NOW_S = datetime(2026, 12, 7, 18, 0, tzinfo=UTC).timestamp()


async def test_pytibber_reads_homes_and_quarter_hour_prices(monkeypatch: pytest.MonkeyPatch) -> None:
    market = DayAheadMarket()
    async with TibberEmulator(market, clock=FakeClock(NOW_S)) as emulator:
        monkeypatch.setattr(tibber, "API_ENDPOINT", emulator.url)
        async with aiohttp.ClientSession(headers={"User-Agent": "pvcharge-test"}) as session:
            connection = tibber.Tibber(DEMO_TOKEN, websession=session)
            await connection.update_info()
            assert connection.get_home_ids() == [HOME_ID]
            home = connection.get_homes()[0]
            await home.update_info_and_price_info()
    assert len(emulator.queries) == 2 and "QUARTER_HOURLY" in emulator.queries[1]
    assert len(home.price_total) == 2 * 96  # today and tomorrow, 15 min each
    for starts_at, total in home.price_total.items():
        slot_s = int(datetime.fromisoformat(starts_at).timestamp())
        price = market.price(slot_s)
        assert price is not None
        assert total == pytest.approx((price / 1000 + CHARGES_EUR_PER_KWH) * (1 + VAT), abs=1e-4)
    assert home.currency == "EUR"


@pytest.mark.parametrize("status", [200, 400])
async def test_pytibber_sees_a_refused_token(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    async with TibberEmulator(DayAheadMarket(), clock=FakeClock(NOW_S)) as emulator:
        emulator.refusal_status = status
        monkeypatch.setattr(tibber, "API_ENDPOINT", emulator.url)
        async with aiohttp.ClientSession(headers={"User-Agent": "pvcharge-test"}) as session:
            connection = tibber.Tibber("not-the-token", websession=session)
            with pytest.raises(tibber.InvalidLoginError):
                await connection.update_info()
