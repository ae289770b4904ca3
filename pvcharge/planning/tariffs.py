"""Grid prices per 15-min slot for the planner: a fixed price, or day-ahead market prices from
aWATTar or Energy-Charts (neither needs a key) turned into the customer's price.

The customer's price from a market price (both sources give EUR/MWh)::

    price_per_kwh = (market_eur_per_mwh / 1000 + charges_per_kwh) * (1 + vat_pct / 100)

``charges_per_kwh`` is everything the supplier adds per kWh (grid fees, levies, its margin), before
VAT, in the currency per kWh; ``vat_pct`` in %. evcc does the same with its ``charges`` and ``tax`` (a
fraction there): ``(price + charges) * (1 + tax)`` in ``tariff/embed.go`` ``totalPrice``.

Sources (checked 2026-08, /work/shared/reference/sources.md):

- aWATTar (https://www.awattar.de/services/api):
  ``GET https://api.awattar.de/v1/marketdata?start=<ms>&end=<ms>`` → ``{"object": "list", "data":
  [{"start_timestamp": ms, "end_timestamp": ms, "marketprice": 92.3, "unit": "Eur/MWh"}, ...], "url":
  "/de/v1/marketdata"}``, one entry per hour; fair use about 100 requests a day (secondary source), so
  it is asked hourly by default (``tariff.refresh_s``, at least 900 s: at most 96 a day).
- Energy-Charts (Fraunhofer ISE, https://api.energy-charts.info/):
  ``GET https://api.energy-charts.info/price?bzn=DE-LU&start=<date>&end=<date>``
  → ``{"unix_seconds": [...], "price": [...], "unit": "EUR / MWh", ...}``, 15-min slots since the
  market moved to them (hourly before; each price lasts until the next timestamp); a price may be
  ``null`` where none is published.

Day-ahead prices for tomorrow appear around 13:00 CET; until then the night after midnight has none,
and the planner uses the flat fallback price there (``tariff.grid_price_per_kwh``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pvcharge.errors import DeviceProtocolError
from pvcharge.planning.planner import slot_start
from pvcharge.planning.source import HttpSource, JsonGetter, SlotValues, spread, spread_steps

AWATTAR_URL = "https://api.awattar.de/v1/marketdata"
ENERGY_CHARTS_URL = "https://api.energy-charts.info/price"
#: how far ahead a source is asked for prices, in s (today and tomorrow).
AHEAD_S = 2 * 86400


@dataclass(frozen=True)
class PriceFormula:
    """``(market + charges_per_kwh) × (1 + vat_pct / 100)``, market in currency/kWh."""

    charges_per_kwh: float = 0.0
    vat_pct: float = 0.0

    def price_per_kwh(self, market_per_mwh: float) -> float:
        """The customer's price per kWh for a market price per MWh."""
        return (market_per_mwh / 1000 + self.charges_per_kwh) * (1 + self.vat_pct / 100)


class FixedTariff:
    """The same price in every slot of the next two days."""

    def __init__(self, price_per_kwh: float, name: str = "tariff fixed") -> None:
        self.name = name
        self.price_per_kwh = price_per_kwh

    async def fetch(self, now_s: float) -> SlotValues:
        prices: SlotValues = {}
        spread(slot_start(now_s), slot_start(now_s) + AHEAD_S, self.price_per_kwh, prices)
        return prices

    async def close(self) -> None:
        """Nothing to close."""


class AwattarTariff(HttpSource):
    """aWATTar day-ahead prices (hourly, EUR/MWh) as customer prices per 15-min slot.

    Args:
        getter: the HTTP client (its ``name`` names the source in errors).
        formula: charges and VAT.
        url: the marketdata endpoint (``api.awattar.at`` for Austria; an emulator in tests).
    """

    def __init__(self, getter: JsonGetter, formula: PriceFormula, url: str = AWATTAR_URL) -> None:
        super().__init__(getter)
        self._formula = formula
        self._url = url

    async def fetch(self, now_s: float) -> SlotValues:
        """Prices from the current slot for two days (as far as published).

        Raises:
            DeviceUnavailable, RateLimited: see :meth:`JsonGetter.get`.
            DeviceProtocolError: an answer not in the documented shape, or in another unit.
        """
        start_ms = slot_start(now_s) * 1000
        body = await self._getter.get(self._url, {"start": start_ms, "end": start_ms + AHEAD_S * 1000})
        return parse_awattar(body, self._formula, self.name)


def parse_awattar(body: Any, formula: PriceFormula, name: str = "tariff awattar") -> SlotValues:
    """Customer prices per slot from an aWATTar marketdata answer.

    Raises:
        DeviceProtocolError: no ``data`` list, an entry without numbers, a unit other than EUR/MWh.
    """
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise DeviceProtocolError(name, f"expected {{'data': [...]}}, got {str(body)[:80]!r}")
    prices: SlotValues = {}
    for entry in data:
        try:
            start_s = entry["start_timestamp"] / 1000
            end_s = entry["end_timestamp"] / 1000
            market = float(entry["marketprice"])
            unit = str(entry.get("unit", "Eur/MWh"))
        except (KeyError, TypeError, ValueError) as exc:
            raise DeviceProtocolError(name, f"malformed entry {str(entry)[:80]!r}") from exc
        if unit.replace(" ", "").lower() != "eur/mwh":
            raise DeviceProtocolError(name, f"expected prices in Eur/MWh, got {unit!r}")
        if math.isfinite(market) and end_s > start_s:
            spread(start_s, end_s, formula.price_per_kwh(market), prices)
    return prices


class EnergyChartsTariff(HttpSource):
    """Energy-Charts day-ahead prices (EUR/MWh) for a bidding zone as customer prices per slot."""

    def __init__(
        self,
        getter: JsonGetter,
        formula: PriceFormula,
        *,
        bidding_zone: str = "DE-LU",
        url: str = ENERGY_CHARTS_URL,
    ) -> None:
        super().__init__(getter)
        self._formula = formula
        self._zone = bidding_zone
        self._url = url

    async def fetch(self, now_s: float) -> SlotValues:
        """Prices of today and tomorrow (UTC dates), as far as published.

        Raises:
            DeviceUnavailable, RateLimited: see :meth:`JsonGetter.get`.
            DeviceProtocolError: an answer not in the documented shape, or in another unit.
        """
        today = datetime.fromtimestamp(now_s, UTC).date()
        params = {
            "bzn": self._zone,
            "start": today.isoformat(),
            "end": (today + timedelta(days=1)).isoformat(),
        }
        return parse_energy_charts(await self._getter.get(self._url, params), self._formula, self.name)


def parse_energy_charts(body: Any, formula: PriceFormula, name: str = "tariff energy-charts") -> SlotValues:
    """Customer prices per slot from an Energy-Charts ``/price`` answer; ``null`` prices are left out.
    Each price lasts until the next timestamp, the last one as long as the one before (15 min alone).

    Raises:
        DeviceProtocolError: lists missing or of different lengths, a unit other than EUR/MWh.
    """
    if not isinstance(body, dict):
        raise DeviceProtocolError(name, f"expected a JSON object, got {str(body)[:80]!r}")
    times, values, unit = body.get("unix_seconds"), body.get("price"), str(body.get("unit", ""))
    if not isinstance(times, list) or not isinstance(values, list) or len(times) != len(values):
        raise DeviceProtocolError(name, "expected lists unix_seconds and price of the same length")
    if unit.replace(" ", "").lower() != "eur/mwh":
        raise DeviceProtocolError(name, f"expected prices in EUR / MWh, got {unit!r}")
    for i, (start_s, market) in enumerate(zip(times, values, strict=True)):
        if not isinstance(start_s, int | float) or not (market is None or isinstance(market, int | float)):
            raise DeviceProtocolError(name, f"entry {i}: expected numbers, got {start_s!r}, {market!r}")
    prices: SlotValues = {}
    customer = [None if market is None else formula.price_per_kwh(float(market)) for market in values]
    spread_steps(times, customer, prices)
    return prices
