"""Tibber prices (pvcharge.planning.tibber) against the Tibber emulator (pvcharge.sim.tibber): the real
answer shapes, a refused token, 429, timeouts, tomorrow before publication, the config and the cache."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from sitestub import FakeClock

from pvcharge.config import parse_config, secret_values, to_dict
from pvcharge.errors import ConfigError, DeviceProtocolError, DeviceUnavailable, RateLimited
from pvcharge.planning.planner import SLOT_S, slot_start
from pvcharge.planning.source import JsonGetter
from pvcharge.planning.sources import tariff_source
from pvcharge.planning.tibber import TibberTariff, parse_tibber
from pvcharge.settings import Secret
from pvcharge.sim.dayahead import DayAheadMarket
from pvcharge.sim.faults import Fault
from pvcharge.sim.tibber import CHARGES_EUR_PER_KWH, DEMO_TOKEN, HOME_ID, VAT, TibberEmulator

#: 2026-12-07 18:00 UTC = 19:00 in Berlin: tomorrow's prices are out
EVENING_S = datetime(2026, 12, 7, 18, 0, tzinfo=UTC).timestamp()
#: 2026-12-07 00:00 in Berlin (23:00 UTC the day before)
MIDNIGHT_S = datetime(2026, 12, 6, 23, 0, tzinfo=UTC).timestamp()
MINIMAL = """
meter: {type: huawei, host: 192.0.2.10}
charger: {type: warp, url: "http://192.0.2.20"}
"""


def customer_price(market: DayAheadMarket, slot_s: int) -> float:
    price = market.price(slot_s)
    assert price is not None
    return (price / 1000 + CHARGES_EUR_PER_KWH) * (1 + VAT)


@pytest.fixture
def market() -> DayAheadMarket:
    return DayAheadMarket()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(EVENING_S)


@pytest.fixture
async def tibber(market: DayAheadMarket, clock: FakeClock) -> AsyncIterator[TibberEmulator]:
    async with TibberEmulator(market, clock=clock) as emulator:
        yield emulator


def tariff(emulator: TibberEmulator, token: str = DEMO_TOKEN, **options: object) -> TibberTariff:
    getter = JsonGetter("tariff tibber", clock=lambda: EVENING_S, timeout_s=0.5, retries=0, backoff_s=0.01)
    return TibberTariff(getter, Secret(token), url=emulator.url, **options)  # type: ignore[arg-type]


async def test_quarter_hour_prices_of_today_and_tomorrow(
    tibber: TibberEmulator, market: DayAheadMarket
) -> None:
    source = tariff(tibber)
    prices = await source.fetch(EVENING_S)
    await source.close()
    # the local days 7 and 8 December: 2 × 96 slots from Berlin's midnight
    assert min(prices) == MIDNIGHT_S and len(prices) == 2 * 96
    assert max(prices) == MIDNIGHT_S + 2 * 86400 - SLOT_S
    for slot_s in (int(MIDNIGHT_S), slot_start(EVENING_S), int(MIDNIGHT_S) + 86400 + 3 * 3600 + 2 * SLOT_S):
        assert prices[slot_s] == pytest.approx(customer_price(market, slot_s), abs=1e-4)
    assert "priceInfo(resolution: QUARTER_HOURLY)" in tibber.queries[0]
    request = tibber.received[-1]
    assert request.method == "POST"


async def test_tomorrow_is_empty_before_publication(tibber: TibberEmulator, clock: FakeClock) -> None:
    clock.advance(MIDNIGHT_S + 11 * 3600 - clock())  # 11:00 in Berlin
    prices = await tariff(tibber).fetch(clock())
    assert max(prices) == MIDNIGHT_S + 86400 - SLOT_S  # today's only: the planner's flat price after
    clock.advance(2 * 3600)  # 13:00
    assert max(await tariff(tibber).fetch(clock())) == MIDNIGHT_S + 2 * 86400 - SLOT_S


@pytest.mark.parametrize("status", [200, 400])
async def test_a_refused_token_says_so_without_the_token(tibber: TibberEmulator, status: int) -> None:
    tibber.refusal_status = status
    with pytest.raises(DeviceProtocolError, match="tariff tibber: the token was refused") as err:
        await tariff(tibber, token="wrong-secret-token").fetch(EVENING_S)
    assert "check tariff.token" in str(err.value) and "wrong-secret-token" not in str(err.value)


async def test_429_and_timeout(tibber: TibberEmulator) -> None:
    tibber.faults.set(Fault.HTTP_429, retry_after_s=300)
    with pytest.raises(RateLimited) as caught:
        await tariff(tibber).fetch(EVENING_S)
    assert caught.value.retry_after_s == 300 and "POST" in caught.value.message
    tibber.faults.set(Fault.TIMEOUT)
    with pytest.raises(DeviceUnavailable, match=r"tariff tibber: POST .*ReadTimeout"):
        await tariff(tibber).fetch(EVENING_S)
    tibber.faults.clear()


async def test_home_id_and_currency_are_checked(tibber: TibberEmulator) -> None:
    assert await tariff(tibber, home_id=HOME_ID, currency="EUR").fetch(EVENING_S)
    with pytest.raises(DeviceProtocolError, match=f"no home 'other' .*homes: {HOME_ID}"):
        await tariff(tibber, home_id="other").fetch(EVENING_S)
    with pytest.raises(DeviceProtocolError, match=r"prices are in EUR, tariff.currency is NOK"):
        await tariff(tibber, currency="NOK").fetch(EVENING_S)


async def test_charges_are_added_to_tibbers_price(tibber: TibberEmulator) -> None:
    plain = await tariff(tibber).fetch(EVENING_S)
    with_fee = await tariff(tibber, charges_per_kwh=0.05).fetch(EVENING_S)
    assert with_fee.keys() == plain.keys()
    assert all(with_fee[t] == pytest.approx(plain[t] + 0.05) for t in plain)


def test_hourly_answers_and_malformed_ones() -> None:
    def body(today: list[dict[str, object]]) -> dict[str, object]:
        info = {"today": today, "tomorrow": []}
        return {"data": {"viewer": {"homes": [{"id": "h", "currentSubscription": {"priceInfo": info}}]}}}

    hourly = parse_tibber(
        body(
            [
                {"total": 0.30, "startsAt": "2026-12-07T00:00:00.000+01:00"},
                {"total": 0.25, "startsAt": "2026-12-07T01:00:00.000+01:00"},
            ]
        )
    )
    assert len(hourly) == 8 and hourly[int(MIDNIGHT_S) + 3600 + 3 * SLOT_S] == 0.25
    with pytest.raises(DeviceProtocolError, match="malformed price"):
        parse_tibber(body([{"total": "x", "startsAt": "2026-12-07T00:00:00+01:00"}]))
    with pytest.raises(DeviceProtocolError, match=r"expected data.viewer.homes"):
        parse_tibber({"data": None})
    no_subscription = {"data": {"viewer": {"homes": [{"id": "h", "currentSubscription": None}]}}}
    with pytest.raises(DeviceProtocolError, match="no home with a current subscription"):
        parse_tibber(no_subscription)


def test_config_needs_a_token_and_masks_it() -> None:
    with pytest.raises(ConfigError, match=r"tariff.token"):
        parse_config(MINIMAL + "tariff: {source: tibber}\n", environ={})
    with pytest.raises(ConfigError, match=r"tariff.vat_pct.*include VAT"):
        parse_config(MINIMAL + "tariff: {source: tibber, token: abc, vat_pct: 19}\n", environ={})
    with pytest.raises(ConfigError, match=r"tariff.token.*only used with source: tibber"):
        parse_config(MINIMAL + "tariff: {source: awattar, token: abc}\n", environ={})
    config = parse_config(
        MINIMAL + 'tariff: {source: tibber, token: "${TIBBER_TOKEN}"}\n',
        environ={"TIBBER_TOKEN": "s3cr3t-t0ken"},
    )
    assert config.tariff.token == Secret("s3cr3t-t0ken")
    assert "s3cr3t-t0ken" not in repr(config) and "s3cr3t-t0ken" not in str(to_dict(config))
    assert "s3cr3t-t0ken" in secret_values(config)  # masked in the API's answers and the logs


async def test_the_configured_source_caches_across_restarts(
    tibber: TibberEmulator, clock: FakeClock, tmp_path: Path
) -> None:
    text = MINIMAL + f"tariff: {{source: tibber, token: {DEMO_TOKEN}, url: {tibber.url}}}\n"
    config = parse_config(text, environ={}).tariff
    first = tariff_source(config, clock=clock, cache_dir=tmp_path)
    prices = await first.latest(clock())
    await first.source.close()
    assert prices is not None and len(tibber.queries) == 1 and (tmp_path / "prices.json").exists()
    clock.advance(600)
    restarted = tariff_source(config, clock=clock, cache_dir=tmp_path)
    assert await restarted.latest(clock()) == prices
    assert len(tibber.queries) == 1  # within refresh_s of the cached answer: nothing sent
    await restarted.source.close()


async def test_pvcharge_emulate_tibber_prints_a_tariff_section_that_works(tmp_path: Path) -> None:
    """``pvcharge emulate tibber``: the printed ``tariff:`` section, merged into a config, fetches today's
    prices by the wall clock through the configured source."""
    import time

    from test_cli import emulate

    async with emulate("tibber") as printed:
        text = MINIMAL + yaml.safe_dump(printed)
        config = parse_config(text, environ={}).tariff
        assert config.source == "tibber" and config.token == Secret(DEMO_TOKEN)
        source = tariff_source(config, clock=time.time)
        prices = await source.latest(time.time())
        await source.source.close()
    assert prices is not None and slot_start(time.time()) in prices, source.last_error


@pytest.mark.parametrize(
    "home",
    [
        {"id": "h", "currentSubscription": "active"},
        {"id": "h", "currentSubscription": {"priceInfo": ["today"]}},
    ],
)
def test_a_subscription_or_price_info_of_another_shape_is_a_protocol_error(home: dict[str, object]) -> None:
    with pytest.raises(DeviceProtocolError, match="priceInfo"):
        parse_tibber({"data": {"viewer": {"homes": [home]}}})
