"""Build the planner's sources from the config: ``tariff:`` → prices, ``forecast:`` → PV surplus, each
behind a :class:`~pvcharge.planning.source.CachedSource` that fetches within the service's limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pvcharge.planning.forecast import (
    FORECAST_SOLAR_URL,
    OPEN_METEO_URL,
    Array,
    ForecastSolarForecast,
    OpenMeteoForecast,
)
from pvcharge.planning.source import CachedSource, JsonGetter
from pvcharge.planning.tariffs import (
    AWATTAR_URL,
    ENERGY_CHARTS_URL,
    AwattarTariff,
    EnergyChartsTariff,
    FixedTariff,
    PriceFormula,
)

if TYPE_CHECKING:
    from pvcharge.config import TariffConfig
    from pvcharge.planning.config import ForecastConfig

#: how long day-ahead prices stay usable when the source is down, in s (they are for whole days).
PRICES_MAX_AGE_S = 36 * 3600


def tariff_source(config: TariffConfig, *, clock: Callable[[], float]) -> CachedSource:
    """Prices per slot as ``tariff:`` says (fixed, aWATTar or Energy-Charts)."""
    if config.source == "fixed":
        return CachedSource(FixedTariff(config.grid_price_per_kwh), refresh_s=900, max_age_s=PRICES_MAX_AGE_S)
    formula = PriceFormula(config.charges_per_kwh, config.vat_pct)
    getter = JsonGetter(f"tariff {config.source}", clock=clock)
    if config.source == "awattar":
        source: AwattarTariff | EnergyChartsTariff = AwattarTariff(
            getter, formula, url=config.url or AWATTAR_URL
        )
    else:
        source = EnergyChartsTariff(
            getter, formula, bidding_zone=config.bidding_zone, url=config.url or ENERGY_CHARTS_URL
        )
    return CachedSource(source, refresh_s=config.refresh_s, max_age_s=PRICES_MAX_AGE_S)


def forecast_source(config: ForecastConfig, *, clock: Callable[[], float]) -> CachedSource | None:
    """The PV surplus forecast as ``forecast:`` says; ``None`` for ``source: none``."""
    if config.source == "none":
        return None
    arrays = [Array(a.latitude, a.longitude, a.tilt_deg, a.azimuth_deg, a.kwp) for a in config.arrays]
    getter = JsonGetter(f"forecast {config.source}", clock=clock)
    if config.source == "open-meteo":
        source: OpenMeteoForecast | ForecastSolarForecast = OpenMeteoForecast(
            getter,
            arrays,
            performance_ratio=config.performance_ratio,
            base_load_w=config.base_load_w,
            inverter_max_w=config.inverter_max_w,
            url=config.url or OPEN_METEO_URL,
        )
    else:
        source = ForecastSolarForecast(
            getter,
            arrays,
            base_load_w=config.base_load_w,
            inverter_max_w=config.inverter_max_w,
            api_key=config.api_key.reveal() if config.api_key is not None else None,
            url=config.url or FORECAST_SOLAR_URL,
        )
    return CachedSource(source, refresh_s=config.refresh_s, max_age_s=config.max_age_s)
