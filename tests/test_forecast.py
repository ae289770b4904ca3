"""Solar forecast sources (pvcharge.planning.forecast) against the emulators of pvcharge.sim.solarforecast."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sitestub import FakeClock

from pvcharge.errors import DeviceProtocolError, RateLimited
from pvcharge.planning.forecast import (
    Array,
    ForecastSolarForecast,
    OpenMeteoForecast,
    PvCorrection,
    array_power_w,
    parse_forecast_solar,
    parse_open_meteo,
)
from pvcharge.planning.forecast import surplus as surplus_of
from pvcharge.planning.planner import ChargeLimits, Plan, plan_charge
from pvcharge.planning.source import CachedSource, JsonGetter, SlotValues
from pvcharge.sim.faults import Fault
from pvcharge.sim.solarforecast import ForecastSolarEmulator, OpenMeteoEmulator, Sky

#: 2026-12-07 06:00 UTC
MORNING_S = datetime(2026, 12, 7, 6, 0, tzinfo=UTC).timestamp()
ROOF = Array(latitude=48.1, longitude=11.6, tilt_deg=30, azimuth_deg=0, kwp=10)
GARAGE = Array(latitude=48.1, longitude=11.6, tilt_deg=15, azimuth_deg=-90, kwp=4)


def at_utc(hh: int, mm: int = 0) -> int:
    return int(datetime(2026, 12, 7, hh, mm, tzinfo=UTC).timestamp())


def getter(name: str, clock: FakeClock) -> JsonGetter:
    return JsonGetter(name, clock=clock, timeout_s=2.0, retries=0, backoff_s=0.01)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(MORNING_S)


@pytest.fixture
async def open_meteo(clock: FakeClock) -> AsyncIterator[OpenMeteoEmulator]:
    async with OpenMeteoEmulator(Sky(), clock=clock) as emulator:
        yield emulator


@pytest.fixture
async def forecast_solar(clock: FakeClock) -> AsyncIterator[ForecastSolarEmulator]:
    async with ForecastSolarEmulator(Sky(), clock=clock) as emulator:
        yield emulator


def test_power_model() -> None:
    """10 kWp at 1000 W/m² and 25 °C air: cell 55 °C, 12 % derating, PR 0.85: 7480 W."""
    assert array_power_w(10, 1000, 25, 0.85) == pytest.approx(7480)
    assert array_power_w(10, 500, 0, 1.0) == pytest.approx(5000 * (1 - 0.004 * (15 - 25)))
    assert array_power_w(10, 0, 25, 0.85) == 0


async def test_open_meteo_surplus_per_slot(open_meteo: OpenMeteoEmulator, clock: FakeClock) -> None:
    sky = open_meteo.sky
    source = OpenMeteoForecast(getter("forecast open-meteo", clock), [ROOF, GARAGE], url=open_meteo.url)
    pv = await source.fetch(clock())
    surplus = surplus_of(pv, 300)
    await source.close()
    slot = at_utc(11, 15)
    gti = round((sky.gti_w_m2(slot) + sky.gti_w_m2(slot + 900)) / 2, 1)
    expected = array_power_w(14, gti, sky.air_temp_c, 0.85) - 300
    assert surplus[slot] == pytest.approx(expected)
    assert surplus[at_utc(20)] == 0 and surplus[at_utc(6)] == 0
    assert min(surplus) == at_utc(6)  # from the current slot on
    assert len(open_meteo.requests_to("/v1/forecast")) == 2  # one per array
    assert "tilt=15" in open_meteo.received[1].path and "azimuth=-90" in open_meteo.received[1].path


async def test_inverter_limit_clamps_the_sum(open_meteo: OpenMeteoEmulator, clock: FakeClock) -> None:
    source = OpenMeteoForecast(
        getter("forecast open-meteo", clock), [ROOF, GARAGE], inverter_max_w=3000, url=open_meteo.url
    )
    surplus = await source.fetch(clock())
    await source.close()
    assert max(surplus.values()) == 3000


async def test_forecast_solar_interpolates_hourly_watts(
    forecast_solar: ForecastSolarEmulator, clock: FakeClock
) -> None:
    source = ForecastSolarForecast(getter("forecast forecast.solar", clock), [ROOF], url=forecast_solar.url)
    surplus = await source.fetch(clock())
    await source.close()
    sky = forecast_solar.sky
    w11, w12 = round(10 * sky.gti_w_m2(at_utc(11)) * 0.85), round(10 * sky.gti_w_m2(at_utc(12)) * 0.85)
    assert surplus[at_utc(11, 15)] == pytest.approx(w11 + (w12 - w11) * 22.5 / 60)
    assert surplus[at_utc(6)] == 0 and surplus[at_utc(20)] == 0
    (request,) = forecast_solar.received
    assert request.path == "/estimate/48.1/11.6/30/0/10?time=utc"


async def test_forecast_solar_hourly_limit_is_kept_by_the_cache(
    forecast_solar: ForecastSolarEmulator, clock: FakeClock
) -> None:
    """Two arrays, re-planned every 15 min for a day: refreshing hourly sends 2 requests an hour,
    within the free tier's 12, and the emulator never has to answer 429."""
    source = ForecastSolarForecast(
        getter("forecast forecast.solar", clock), [ROOF, GARAGE], url=forecast_solar.url
    )
    cached = CachedSource(source, refresh_s=3600, max_age_s=4 * 3600)
    for _ in range(96):
        assert await cached.latest(clock()) is not None
        assert cached.last_error is None  # no 429 (the emulator's own limit is no played fault)
        clock.advance(900)
    await source.close()
    assert len(forecast_solar.received) == 48
    assert forecast_solar.faults.played == {}


async def test_forecast_solar_429_after_12_requests(
    forecast_solar: ForecastSolarEmulator, clock: FakeClock
) -> None:
    source = ForecastSolarForecast(getter("forecast forecast.solar", clock), [ROOF], url=forecast_solar.url)
    for _ in range(12):
        await source.fetch(clock())
        clock.advance(60)
    with pytest.raises(RateLimited) as caught:
        await source.fetch(clock())
    assert caught.value.retry_after_s == 3600 - 12 * 60
    await source.close()


async def test_dead_forecast_means_no_pv_in_the_plan(open_meteo: OpenMeteoEmulator, clock: FakeClock) -> None:
    """A sunny day covers 10 kWh from PV; with the service down from the start, the plan takes the
    grid and says why."""

    def plan_10_kwh(surplus_w: SlotValues | None) -> Plan:
        return plan_charge(
            need_kwh=10,
            deadline_s=at_utc(16),
            now_s=clock(),
            limits=ChargeLimits(1380, 11040),
            surplus_w=surplus_w,
            prices_per_kwh=None,
            fallback_price_per_kwh=0.3,
        )

    source = OpenMeteoForecast(getter("forecast open-meteo", clock), [ROOF], url=open_meteo.url)
    sunny = await CachedSource(source, refresh_s=3600, max_age_s=3 * 3600).latest(clock())
    plan = plan_10_kwh(sunny)
    assert plan.met and plan.grid_kwh == 0 and plan.pv_kwh >= 10
    open_meteo.faults.set(Fault.HTTP_503)
    dead = CachedSource(source, refresh_s=3600, max_age_s=3 * 3600)
    assert await dead.latest(clock()) is None and dead.last_error is not None and "503" in dead.last_error
    plan = plan_10_kwh(await dead.latest(clock()))
    assert plan.met and plan.grid_kwh == pytest.approx(10, abs=0.5) and plan.pv_kwh == 0
    assert "no solar forecast: assuming no PV" in plan.notes
    await source.close()


def test_parsers_reject_bad_answers() -> None:
    with pytest.raises(DeviceProtocolError, match="Open-Meteo refused: Latitude must be"):
        parse_open_meteo({"error": True, "reason": "Latitude must be in range of -90 to 90°."}, 10, 0.85)
    with pytest.raises(DeviceProtocolError, match="one length"):
        parse_open_meteo(
            {"minutely_15": {"time": [0], "global_tilted_irradiance": [], "temperature_2m": [1]}}, 1, 1
        )
    with pytest.raises(DeviceProtocolError, match=r"result.watts \(Rate limit"):
        parse_forecast_solar({"result": None, "message": {"text": "Rate limit for API calls reached."}})
    with pytest.raises(DeviceProtocolError, match="bad entry"):
        parse_forecast_solar({"result": {"watts": {"yesterday": 5}}})
    offset = parse_forecast_solar(
        {"result": {"watts": {"2026-12-07T10:00:00+01:00": 0, "2026-12-07T11:00:00+01:00": 400}}}
    )
    assert offset[at_utc(9, 15)] == pytest.approx(150)  # ISO times with an offset work too


def test_pv_correction_learns_todays_error() -> None:
    """Forecast 4 kW, measured 3 kW over two finished hours: factor 0.75; clamped to 0.5–1.5; 1 while
    less than 1 kWh was forecast; yesterday is dropped."""
    correction = PvCorrection(min_kwh=1.5)
    day = at_utc(0)
    assert correction.factor(at_utc(8), day) == 1.0
    for slot in range(at_utc(8), at_utc(10), 900):
        correction.expected(slot, 4000.0)
        for k in range(1, 16):
            correction.measured(slot + k * 60, 3000.0, 60.0)
    assert correction.factor(at_utc(8, 14), day) == 1.0  # no slot finished yet
    assert correction.factor(at_utc(8, 15), day) == 1.0  # 1 kWh forecast so far: less than min_kwh
    assert correction.factor(at_utc(8, 30), day) == pytest.approx(0.75)
    assert correction.factor(at_utc(10), day) == pytest.approx(0.75)
    assert correction.factor(at_utc(10), day + 86400) == 1.0  # a new day starts afresh
    dim = PvCorrection()
    for slot in range(at_utc(8), at_utc(10), 900):
        dim.expected(slot, 4000.0)
        dim.measured(slot + 900, 400.0, 900.0)
    assert dim.factor(at_utc(10), day) == 0.5
    assert surplus_of({0: 4000.0}, 300, 0.5) == {0: 1700.0}


def test_forecast_solar_day_across_utc_midnight() -> None:
    """A site far east of UTC (New Zealand in December) has its solar day from about 17:00 to 08:00 UTC:
    the hour around its noon, 23:00–00:00 UTC, is interpolated like any other; the nights stay 0."""
    hours = [f"2026-12-07 {h:02}:00:00" for h in range(17, 24)] + [
        f"2026-12-08 {h:02}:00:00" for h in range(9)
    ]
    watts = {stamp: 0 if stamp.endswith(("17:00:00", "08:00:00")) else 3000 for stamp in hours}
    watts["2026-12-08 00:00:00"] = 3200
    watts["2026-12-08 17:00:00"] = 0  # the next day's sunrise
    watts["2026-12-08 18:00:00"] = 400
    slots = parse_forecast_solar({"result": {"watts": watts}})
    assert slots[at_utc(23, 15)] == pytest.approx(3000 + 200 * 22.5 / 60)
    assert slots[at_utc(12) + 86400] == 0 and slots[at_utc(16, 45) + 86400] == 0  # the night between
    assert slots[at_utc(17, 15) + 86400] == pytest.approx(400 * 22.5 / 60)
