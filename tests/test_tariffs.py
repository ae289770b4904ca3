"""Tariff sources (pvcharge.planning.tariffs) against the day-ahead emulators (pvcharge.sim.dayahead)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sitestub import FakeClock

from pvcharge.errors import DeviceProtocolError, DeviceUnavailable, RateLimited
from pvcharge.planning.planner import ChargeLimits, plan_charge, slot_start
from pvcharge.planning.source import CachedSource, JsonGetter
from pvcharge.planning.tariffs import (
    AwattarTariff,
    EnergyChartsTariff,
    FixedTariff,
    PriceFormula,
    parse_awattar,
    parse_energy_charts,
)
from pvcharge.sim.dayahead import AwattarEmulator, DayAheadMarket, EnergyChartsEmulator
from pvcharge.sim.faults import Fault

#: 2026-12-07 18:00 UTC, a Monday evening
NOW_S = datetime(2026, 12, 7, 18, 0, tzinfo=UTC).timestamp()
FORMULA = PriceFormula(charges_per_kwh=0.20, vat_pct=19)


def utc_hour(t_s: float) -> int:
    return datetime.fromtimestamp(t_s, UTC).hour


@pytest.fixture
def market() -> DayAheadMarket:
    return DayAheadMarket()


@pytest.fixture
async def awattar(market: DayAheadMarket) -> AsyncIterator[AwattarEmulator]:
    async with AwattarEmulator(market, clock=lambda: NOW_S) as emulator:
        yield emulator


@pytest.fixture
async def energy_charts(market: DayAheadMarket) -> AsyncIterator[EnergyChartsEmulator]:
    async with EnergyChartsEmulator(market) as emulator:
        yield emulator


def getter(name: str, **options: float) -> JsonGetter:
    settings = {"timeout_s": 2.0, "retries": 0, "backoff_s": 0.01, **options}
    return JsonGetter(name, clock=lambda: NOW_S, **settings)  # type: ignore[arg-type]


def test_formula_adds_charges_then_vat() -> None:
    assert FORMULA.price_per_kwh(92.3) == pytest.approx((0.0923 + 0.20) * 1.19)
    assert PriceFormula().price_per_kwh(-5.0) == pytest.approx(-0.005)


async def test_fixed_tariff_covers_two_days() -> None:
    prices = await FixedTariff(0.31).fetch(NOW_S + 100)
    assert min(prices) == slot_start(NOW_S) and len(prices) == 2 * 96
    assert set(prices.values()) == {0.31}


async def test_awattar_hourly_prices_become_customer_prices_per_slot(
    awattar: AwattarEmulator, market: DayAheadMarket
) -> None:
    tariff = AwattarTariff(getter("tariff awattar"), FORMULA, url=awattar.url)
    prices = await tariff.fetch(NOW_S + 600)
    await tariff.close()
    assert len(prices) == 48 * 4
    hour_s = int(NOW_S) + 3 * 3600
    market_price = market.hourly(hour_s)
    assert market_price is not None
    for quarter in range(4):
        assert prices[hour_s + quarter * 900] == pytest.approx(FORMULA.price_per_kwh(market_price))
    (request,) = awattar.requests_to("/v1/marketdata")
    assert f"start={int(NOW_S) * 1000}" in request.path


async def test_awattar_missing_and_unpublished_hours_are_left_out(
    awattar: AwattarEmulator, market: DayAheadMarket
) -> None:
    market.missing = {int(NOW_S) + 3600}
    market.published_until_s = NOW_S + 6 * 3600
    tariff = AwattarTariff(getter("tariff awattar"), FORMULA, url=awattar.url)
    prices = await tariff.fetch(NOW_S)
    await tariff.close()
    assert sorted({utc_hour(t) for t in prices}) == [18, 20, 21, 22, 23]


async def test_planner_on_awattar_prices_charges_in_the_cheap_small_hours(awattar: AwattarEmulator) -> None:
    """10 kWh by 07:00 UTC at 11 kW: one hour; the emulated curve is cheapest around 03:00 UTC."""
    tariff = AwattarTariff(getter("tariff awattar"), FORMULA, url=awattar.url)
    prices = await tariff.fetch(NOW_S)
    await tariff.close()
    plan = plan_charge(
        need_kwh=10,
        deadline_s=NOW_S + 13 * 3600,
        now_s=NOW_S,
        limits=ChargeLimits(4140, 11040),
        surplus_w=None,
        prices_per_kwh=prices,
        fallback_price_per_kwh=0.40,
    )
    night = [p for t, p in prices.items() if t < NOW_S + 13 * 3600]
    assert plan.met
    assert all(slot.price_per_kwh <= sorted(night)[7] for slot in plan.grid_slots)
    assert {utc_hour(slot.start_s) for slot in plan.grid_slots} <= {2, 3, 4}


async def test_energy_charts_quarter_hours_with_nulls(
    energy_charts: EnergyChartsEmulator, market: DayAheadMarket
) -> None:
    market.missing = {int(NOW_S)}
    tariff = EnergyChartsTariff(getter("tariff energy-charts"), FORMULA, url=energy_charts.url)
    prices = await tariff.fetch(NOW_S)
    await tariff.close()
    assert int(NOW_S) not in prices
    assert len(prices) == 2 * 96 - 1  # today and tomorrow, UTC
    slot = int(NOW_S) + 900
    assert prices[slot] == pytest.approx(FORMULA.price_per_kwh(market.curve(slot)))
    assert "bzn=DE-LU" in energy_charts.received[0].path


async def test_energy_charts_unknown_zone_is_a_protocol_error(energy_charts: EnergyChartsEmulator) -> None:
    tariff = EnergyChartsTariff(
        getter("tariff energy-charts"), FORMULA, bidding_zone="XX", url=energy_charts.url
    )
    with pytest.raises(DeviceProtocolError, match=r"tariff energy-charts: GET .*HTTP 404"):
        await tariff.fetch(NOW_S)
    await tariff.close()


def test_parsers_reject_other_units_and_shapes() -> None:
    with pytest.raises(DeviceProtocolError, match="Eur/MWh, got 'ct/kWh'"):
        parse_awattar(
            {
                "data": [
                    {"start_timestamp": 0, "end_timestamp": 3600000, "marketprice": 9.2, "unit": "ct/kWh"}
                ]
            },
            FORMULA,
        )
    with pytest.raises(DeviceProtocolError, match="data"):
        parse_awattar({"error": "x"}, FORMULA)
    with pytest.raises(DeviceProtocolError, match="same length"):
        parse_energy_charts({"unix_seconds": [0, 900], "price": [1.0], "unit": "EUR / MWh"}, FORMULA)
    hourly = parse_energy_charts(
        {"unix_seconds": [0, 3600], "price": [100.0, 50.0], "unit": "EUR / MWh"}, FORMULA
    )
    assert len(hourly) == 8  # hourly data (before Oct 2025): each price lasts its hour


async def test_429_is_honoured_and_the_cached_prices_kept(awattar: AwattarEmulator) -> None:
    clock = FakeClock(NOW_S)
    source = AwattarTariff(getter("tariff awattar"), FORMULA, url=awattar.url)
    cached = CachedSource(source, refresh_s=3600, max_age_s=6 * 3600)
    first = await cached.latest(clock())
    assert first is not None
    clock.advance(3600)
    awattar.faults.set(Fault.HTTP_429, retry_after_s=7200)
    assert await cached.latest(clock()) == first  # the last good prices
    assert cached.last_error is not None and "HTTP 429" in cached.last_error
    clock.advance(3600)  # Retry-After not over: nothing sent
    await cached.latest(clock())
    assert awattar.faults.played[Fault.HTTP_429] == 1
    awattar.faults.clear()
    clock.advance(3601)
    assert await cached.latest(clock()) is not None
    assert cached.last_error is None and len(awattar.received) == 3
    await source.close()


async def test_429_raises_rate_limited_with_its_wait(awattar: AwattarEmulator) -> None:
    awattar.faults.set(Fault.HTTP_429, retry_after_s=120)
    tariff = AwattarTariff(getter("tariff awattar"), FORMULA, url=awattar.url)
    with pytest.raises(RateLimited) as caught:
        await tariff.fetch(NOW_S)
    assert caught.value.retry_after_s == 120
    await tariff.close()


async def test_timeout_then_stale_prices_expire(awattar: AwattarEmulator) -> None:
    clock = FakeClock(NOW_S)
    source = AwattarTariff(getter("tariff awattar", timeout_s=0.3), FORMULA, url=awattar.url)
    cached = CachedSource(source, refresh_s=3600, max_age_s=2 * 3600, retry_s=300)
    assert await cached.latest(clock()) is not None
    awattar.faults.set(Fault.TIMEOUT)
    with pytest.raises(DeviceUnavailable, match=r"tariff awattar: GET .*ReadTimeout"):
        await source.fetch(clock())
    clock.advance(3600)
    assert await cached.latest(clock()) is not None  # 1 h old: still used
    clock.advance(3700)
    assert await cached.latest(clock()) is None  # over 2 h old: the planner's flat price takes over
    awattar.faults.clear()
    await source.close()


async def test_prices_survive_a_restart_in_the_cache_file(awattar: AwattarEmulator, tmp_path: Path) -> None:
    """A restart within refresh_s sends nothing and plans on the cached prices; other settings (another
    key) or a damaged file start empty."""
    cache = tmp_path / "prices.json"
    clock = FakeClock(NOW_S)
    source = AwattarTariff(getter("tariff awattar"), FORMULA, url=awattar.url)
    first = await CachedSource(
        source, refresh_s=3600, max_age_s=86400, cache_file=cache, cache_key="a"
    ).latest(clock())
    assert first is not None and cache.exists()
    clock.advance(600)
    awattar.faults.set(Fault.HTTP_503)
    restarted = CachedSource(source, refresh_s=3600, max_age_s=86400, cache_file=cache, cache_key="a")
    assert await restarted.latest(clock()) == first
    assert len(awattar.received) == 1  # nothing sent before refresh_s
    other = CachedSource(source, refresh_s=3600, max_age_s=86400, cache_file=cache, cache_key="b")
    assert other.values is None
    cache.write_text("{not json")
    assert (
        CachedSource(source, refresh_s=3600, max_age_s=86400, cache_file=cache, cache_key="a").values is None
    )
    awattar.faults.clear()
    await source.close()
