"""Loopback emulators of the day-ahead price services the planner reads (pvcharge.planning.tariffs):
aWATTar's ``/v1/marketdata`` and Energy-Charts' ``/price``, in their real response formats.

Both serve one :class:`DayAheadMarket`: a price per 15-min slot in EUR/MWh from a function of time
(by default a winter day: expensive evening peak, cheap small hours, a midday dip), with the market's
gaps: ``published_until_s`` (tomorrow's prices appear around 13:00 CET; nothing after it is served)
and ``missing`` (slot starts left out by aWATTar, ``null`` at Energy-Charts). Faults (429 with
``Retry-After``, timeouts, 5xx, cut-off bodies) come from :class:`~pvcharge.sim.http.LoopbackHttpServer`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from aiohttp import web

from pvcharge.sim.http import LoopbackHttpServer

SLOT_S = 900


def winter_day_eur_mwh(t_s: float) -> float:
    """A plausible German winter day-ahead curve (EUR/MWh) by UTC hour: ~70 at 02:00–04:00, ~150 at
    17:00–18:00, ~100 at noon."""
    hour = (t_s % 86400) / 3600
    night = 45 * math.exp(-(((hour - 3) / 2.0) ** 2))
    evening = 50 * math.exp(-(((hour - 17.5) / 1.5) ** 2))
    morning = 25 * math.exp(-(((hour - 8) / 1.5) ** 2))
    return round(115 - night + evening + morning - 15 * math.exp(-(((hour - 12) / 2) ** 2)), 2)


class DayAheadMarket:
    """Prices per slot (EUR/MWh) with publication gaps.

    Attributes:
        curve: EUR/MWh at a slot start (Unix s).
        published_until_s: no price at or after this (``None``: all published).
        missing: slot starts without a price.
    """

    def __init__(self, curve: Callable[[float], float] = winter_day_eur_mwh) -> None:
        self.curve = curve
        self.published_until_s: float | None = None
        self.missing: set[int] = set()

    def price(self, slot_s: int) -> float | None:
        if slot_s in self.missing or (
            self.published_until_s is not None and slot_s >= self.published_until_s
        ):
            return None
        return self.curve(slot_s)

    def hourly(self, hour_s: int) -> float | None:
        """The hour's price: the mean of its four slots (``None`` if any is missing)."""
        prices = [self.price(hour_s + i * SLOT_S) for i in range(4)]
        return None if any(p is None for p in prices) else round(sum(p for p in prices if p) / 4, 2)


class AwattarEmulator(LoopbackHttpServer):
    """``GET /v1/marketdata?start=<ms>&end=<ms>``: hourly entries from the hour holding ``start``
    (default: now's hour) to ``end`` (default: 24 h later), as aWATTar answers."""

    def __init__(
        self, market: DayAheadMarket, host: str = "127.0.0.1", port: int = 0, *, clock: Callable[[], float]
    ) -> None:
        super().__init__(host, port, what="aWATTar")
        self.market = market
        self._clock = clock

    @property
    def url(self) -> str:
        """The marketdata endpoint."""
        return self.base_url + "/v1/marketdata"

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/marketdata", self._marketdata)
        return app

    async def _marketdata(self, request: web.Request) -> web.Response:
        try:
            start_ms = int(request.query.get("start", self._clock() * 1000))
            end_ms = int(request.query.get("end", start_ms + 86400 * 1000))
        except ValueError:
            return web.json_response({"error": "start/end must be milliseconds"}, status=400)
        data = []
        hour_s = start_ms // 1000 // 3600 * 3600
        while hour_s * 1000 < end_ms:
            price = self.market.hourly(hour_s)
            if price is not None:
                data.append(
                    {
                        "start_timestamp": hour_s * 1000,
                        "end_timestamp": (hour_s + 3600) * 1000,
                        "marketprice": price,
                        "unit": "Eur/MWh",
                    }
                )
            hour_s += 3600
        return web.json_response({"object": "list", "data": data, "url": "/de/v1/marketdata"})


class EnergyChartsEmulator(LoopbackHttpServer):
    """``GET /price?bzn=DE-LU&start=YYYY-MM-DD&end=YYYY-MM-DD``: 15-min prices of the UTC days from
    ``start`` to ``end`` (inclusive), unpublished ones as ``null``; other zones: 404."""

    def __init__(self, market: DayAheadMarket, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port, what="Energy-Charts")
        self.market = market

    @property
    def url(self) -> str:
        """The price endpoint."""
        return self.base_url + "/price"

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/price", self._price)
        return app

    async def _price(self, request: web.Request) -> web.Response:
        if request.query.get("bzn", "DE-LU") != "DE-LU":
            return web.json_response({"detail": "bidding zone not found"}, status=404)
        try:
            first = date.fromisoformat(request.query["start"])
            last = date.fromisoformat(request.query.get("end", request.query["start"]))
        except (KeyError, ValueError):
            return web.json_response({"detail": "start/end: expected YYYY-MM-DD"}, status=422)
        start_s = int(datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp())
        end_s = int(datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC).timestamp())
        times = list(range(start_s, end_s, SLOT_S))
        return web.json_response(
            {
                "license_info": "CC BY 4.0 (creativecommons.org/licenses/by/4.0) from "
                "Bundesnetzagentur | SMARD.de",
                "unix_seconds": times,
                "price": [self.market.price(t) for t in times],
                "unit": "EUR / MWh",
                "deprecated": False,
            }
        )
