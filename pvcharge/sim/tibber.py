"""A loopback emulator of Tibber's GraphQL API (``POST /v1-beta/gql``) for the prices the planner reads
(:mod:`pvcharge.planning.tibber`), in its real formats.

It does not parse GraphQL: it answers by what a query asks for, as Tibber would for the queries that
pvcharge and pyTibber send (the field sets of pyTibber 0.39 ``tibber/gql_queries.py``):

- a query with ``priceInfo``: the home(s) with ``currentSubscription.priceInfo`` (``current``,
  ``today``, ``tomorrow``), in 15-min entries with ``resolution: QUARTER_HOURLY``, else hourly ones
  (the mean of the hour's four); through ``viewer { homes ... }`` or ``viewer { home(id: "...") }``;
- a query with ``websocketSubscriptionUrl`` or ``userId``: the viewer and its homes (pyTibber's INFO);
- anything else: a GraphQL validation error.

Prices come from a :class:`~pvcharge.sim.dayahead.DayAheadMarket` (EUR/MWh) made into a German
end-customer price: ``total = (market/1000 + 0.20) × 1.19`` EUR/kWh, ``energy`` the market part with
VAT, ``tax`` the rest; ``startsAt`` in the home's zone (Europe/Berlin) with its offset. ``today`` is
the local calendar day; ``tomorrow`` stays ``[]`` before :attr:`TibberEmulator.publish_hour` local time
(13 by default, as Tibber publishes after the noon auction). Unpublished or missing market slots are
left out. A token other than :attr:`TibberEmulator.token` gets Tibber's refusal: HTTP 200 with
``{"data": null, "errors": [{"message": ..., "extensions": {"code": "UNAUTHENTICATED"}}]}``. The body may
be JSON or form-encoded (pyTibber posts a form). Faults (429 with ``Retry-After``, timeouts, 5xx) come
from :class:`~pvcharge.sim.http.LoopbackHttpServer`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from pvcharge.sim.dayahead import SLOT_S, DayAheadMarket
from pvcharge.sim.http import LoopbackHttpServer

HOME_ID = "96a14971-525a-4420-aae9-e5aedaa129ff"
#: Tibber's demo token from its developer pages (pyTibber's ``DEMO_TOKEN``); the emulator's default.
DEMO_TOKEN = "3A77EECF61BD445F47241A5A36202185C35AF3AF58609E19B53F3A8872AD7BE1-1"
CHARGES_EUR_PER_KWH = 0.20
VAT = 0.19


def _level(price: float, mean: float) -> str:
    """Tibber's ``level`` by the price against the day's mean (its thresholds are its own; these are
    plausible: ±10 % normal, beyond ±20 % very)."""
    ratio = price / mean if mean > 0 else 1.0
    if ratio <= 0.8:
        return "VERY_CHEAP"
    if ratio <= 0.9:
        return "CHEAP"
    if ratio < 1.1:
        return "NORMAL"
    if ratio < 1.2:
        return "EXPENSIVE"
    return "VERY_EXPENSIVE"


class TibberEmulator(LoopbackHttpServer):
    """``POST /v1-beta/gql``: Tibber's price info for one home.

    Attributes:
        market: the prices behind the customer's.
        token: the accepted personal access token.
        publish_hour: local hour from which ``tomorrow`` is filled.
        refusal_status: the HTTP status of the answer to a wrong token (200 as reported by Home
            Assistant users; pyTibber handles 400 as well).
        queries: the query texts received, in order.
    """

    def __init__(
        self,
        market: DayAheadMarket,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float],
        token: str = DEMO_TOKEN,
        zone: str = "Europe/Berlin",
    ) -> None:
        super().__init__(host, port, what="Tibber")
        self.market = market
        self.token = token
        self.publish_hour = 13
        self.refusal_status = 200
        self.queries: list[str] = []
        self._clock = clock
        self._zone = ZoneInfo(zone)

    @property
    def url(self) -> str:
        """The GraphQL endpoint."""
        return self.base_url + "/v1-beta/gql"

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1-beta/gql", self._gql)
        return app

    async def _gql(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            return web.json_response(
                {
                    "data": None,
                    "errors": [
                        {
                            "message": "Context creation failed: invalid token",
                            "extensions": {"code": "UNAUTHENTICATED"},
                        }
                    ],
                },
                status=self.refusal_status,
            )
        if request.content_type == "application/json":
            try:
                body: Any = await request.json()
            except json.JSONDecodeError:
                body = None
        else:
            body = dict(await request.post())
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str):
            return web.json_response(
                {
                    "errors": [
                        {"message": "Must provide query string.", "extensions": {"code": "BAD_REQUEST"}}
                    ]
                },
                status=400,
            )
        self.queries.append(query)
        if "priceInfo" in query:
            return web.json_response({"data": {"viewer": self._viewer_with_prices(query)}})
        if "websocketSubscriptionUrl" in query or "userId" in query:
            return web.json_response({"data": {"viewer": self._viewer()}})
        return web.json_response(
            {
                "errors": [
                    {
                        "message": "the emulator answers price and home queries only",
                        "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
                    }
                ]
            },
            status=400,
        )

    def _viewer(self) -> dict[str, Any]:
        return {
            "name": "Emulated Customer",
            "userId": "00000000-0000-0000-0000-000000000001",
            "homes": [{"id": HOME_ID, "subscriptions": [{"status": "running"}]}],
            "websocketSubscriptionUrl": "wss://127.0.0.1:9/v1-beta/gql/subscriptions",
        }

    def _viewer_with_prices(self, query: str) -> dict[str, Any]:
        home = self._home(quarter_hourly="QUARTER_HOURLY" in query)
        asked = re.search(r'home\(id:\s*"([^"]*)"\)', query)
        if asked is None:
            return {"homes": [home]}
        return {"home": home if asked.group(1) == HOME_ID else None}

    def _home(self, *, quarter_hourly: bool) -> dict[str, Any]:
        now = datetime.fromtimestamp(self._clock(), self._zone)
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        tomorrow = today + timedelta(days=1)  # wall-clock arithmetic: a DST day is 23 or 25 h
        after = tomorrow + timedelta(days=1)
        today_prices = self._day(today, tomorrow, quarter_hourly)
        tomorrow_prices = self._day(tomorrow, after, quarter_hourly) if now.hour >= self.publish_hour else []
        step_s = SLOT_S if quarter_hourly else 3600
        current = next(
            (
                p
                for p in today_prices
                if 0 <= self._clock() - datetime.fromisoformat(p["startsAt"]).timestamp() < step_s
            ),
            None,
        )
        return {
            "id": HOME_ID,
            "appNickname": "Emulated home",
            "timeZone": str(self._zone),
            "features": {"realTimeConsumptionEnabled": False},
            "address": {"address1": "Teststraße 1", "postalCode": "10115", "city": "Berlin", "country": "DE"},
            "currentSubscription": {
                "status": "running",
                "priceInfo": {"current": current, "today": today_prices, "tomorrow": tomorrow_prices},
            },
        }

    def _day(self, start: datetime, end: datetime, quarter_hourly: bool) -> list[dict[str, Any]]:
        step_s = SLOT_S if quarter_hourly else 3600
        markets: list[tuple[int, float]] = []
        for t in range(int(start.timestamp()), int(end.timestamp()), step_s):
            market = self.market.price(t) if quarter_hourly else self.market.hourly(t)
            if market is not None:
                markets.append((t, market))
        totals = [round((m / 1000 + CHARGES_EUR_PER_KWH) * (1 + VAT), 4) for _, m in markets]
        mean = sum(totals) / len(totals) if totals else 0.0
        entries = []
        for (t, market), total in zip(markets, totals, strict=True):
            energy = round(market / 1000 * (1 + VAT), 4)
            entries.append(
                {
                    "total": total,
                    "energy": energy,
                    "tax": round(total - energy, 4),
                    "startsAt": datetime.fromtimestamp(t, self._zone).isoformat(timespec="milliseconds"),
                    "level": _level(total, mean),
                    "currency": "EUR",
                }
            )
        return entries
