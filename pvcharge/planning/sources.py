"""Build the planner's sources from the config: ``tariff:`` → prices, ``forecast:`` → PV surplus, each
behind a :class:`~pvcharge.planning.source.CachedSource` that fetches within the service's limits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
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
from pvcharge.planning.tibber import TIBBER_URL, TibberTariff

if TYPE_CHECKING:
    from pvcharge.config import TariffConfig
    from pvcharge.planning.config import ForecastConfig

#: how long day-ahead prices stay usable when the source is down, in s (they are for whole days).
PRICES_MAX_AGE_S = 36 * 3600


def _key(config: object) -> str:
    """Identifies the settings a cached answer was fetched with (secrets print as ***)."""
    return hashlib.sha256(repr(config).encode()).hexdigest()[:16]


def tariff_source(
    config: TariffConfig, *, clock: Callable[[], float], cache_dir: Path | None = None
) -> CachedSource:
    """Prices per slot as ``tariff:`` says (fixed, aWATTar, Energy-Charts or Tibber); with
    ``cache_dir`` the last prices are kept in ``prices.json`` there across restarts."""
    if config.source == "fixed":
        return CachedSource(FixedTariff(config.grid_price_per_kwh), refresh_s=900, max_age_s=PRICES_MAX_AGE_S)
    formula = PriceFormula(config.charges_per_kwh, config.vat_pct)
    getter = JsonGetter(f"tariff {config.source}", clock=clock)
    source: AwattarTariff | EnergyChartsTariff | TibberTariff
    if config.source == "awattar":
        source = AwattarTariff(getter, formula, url=config.url or AWATTAR_URL)
    elif config.source == "tibber":
        assert config.token is not None  # TariffConfig checks it
        source = TibberTariff(
            getter,
            config.token,
            home_id=config.home_id,
            currency=config.currency,
            charges_per_kwh=config.charges_per_kwh,
            url=config.url or TIBBER_URL,
        )
    else:
        source = EnergyChartsTariff(
            getter, formula, bidding_zone=config.bidding_zone, url=config.url or ENERGY_CHARTS_URL
        )
    return CachedSource(
        source,
        refresh_s=config.refresh_s,
        max_age_s=PRICES_MAX_AGE_S,
        cache_file=cache_dir / "prices.json" if cache_dir is not None else None,
        cache_key=_key(config),
    )


def forecast_source(
    config: ForecastConfig, *, clock: Callable[[], float], cache_dir: Path | None = None
) -> CachedSource | None:
    """The PV power forecast as ``forecast:`` says (``None`` for ``source: none``); with
    ``cache_dir`` the last forecast is kept in ``forecast.json`` there across restarts."""
    if config.source == "none":
        return None
    arrays = [Array(a.latitude, a.longitude, a.tilt_deg, a.azimuth_deg, a.kwp) for a in config.arrays]
    getter = JsonGetter(f"forecast {config.source}", clock=clock)
    if config.source == "open-meteo":
        source: OpenMeteoForecast | ForecastSolarForecast = OpenMeteoForecast(
            getter,
            arrays,
            performance_ratio=config.performance_ratio,
            inverter_max_w=config.inverter_max_w,
            url=config.url or OPEN_METEO_URL,
        )
    else:
        source = ForecastSolarForecast(
            getter,
            arrays,
            inverter_max_w=config.inverter_max_w,
            api_key=config.api_key.reveal() if config.api_key is not None else None,
            url=config.url or FORECAST_SOLAR_URL,
        )
    return CachedSource(
        source,
        refresh_s=config.refresh_s,
        max_age_s=config.max_age_s,
        cache_file=cache_dir / "forecast.json" if cache_dir is not None else None,
        cache_key=_key(config),
    )
