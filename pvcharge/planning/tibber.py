"""Tibber's end-customer prices (``tariff: source: tibber``) per 15-min slot for the planner.

Tibber is a supplier, not a market: its GraphQL API gives the price the customer pays, energy plus
taxes and fees, VAT included, in the home's currency per kWh (``total = energy + tax``; ``tax`` holds
the VAT and levies). So no formula is applied: ``tariff.charges_per_kwh`` is added as it is (for a fee
billed outside Tibber, default 0) and ``tariff.vat_pct`` must stay 0.

Facts (Tibber developer docs https://developer.tibber.com/docs/guides/calling-api and the API
reference https://developer.tibber.com/docs/reference; checked against evcc ``tariff/tibber.go`` and
pyTibber 0.39 ``tibber/gql_queries.py``, ``tibber/response_handler.py``):

- ``POST https://api.tibber.com/v1-beta/gql`` with ``Authorization: Bearer <personal access token>``
  and a JSON body ``{"query": "..."}``; the answer is ``{"data": {"viewer": {"homes": [...]}}}``.
- ``priceInfo(resolution: QUARTER_HOURLY)`` gives 96 prices a day since the day-ahead market moved to
  15-min products (1 Oct 2025); without the argument (or ``HOURLY``) 24. Each entry: ``total``,
  ``energy``, ``tax`` (currency/kWh, floats), ``startsAt`` (ISO 8601 with the home's UTC offset, e.g.
  ``2026-12-07T00:15:00.000+01:00``), ``level`` (``VERY_CHEAP`` ... ``VERY_EXPENSIVE``), ``currency``.
- ``today`` holds the local calendar day; ``tomorrow`` is ``[]`` until the next day's prices are
  published, around 13:00 CET (after the EPEX/Nord Pool day-ahead auction at 12:00 CET).
- Errors come as a GraphQL ``errors`` list, HTTP 200 or 400: ``[{"message": "...", "extensions":
  {"code": "UNAUTHENTICATED"}}]`` for a bad or expired token (pyTibber raises ``InvalidLoginError`` on
  that code, whatever the status).
- Rate limits are enforced per token but not published as numbers; Tibber asks clients to poll
  sparingly, honour ``Retry-After`` on a 429 and use back-off. The prices change once a day, so
  ``tariff.refresh_s`` (default hourly, at least 15 min) keeps far below any sane limit; the answer is
  cached across restarts (``prices.json``) like the other tariffs'.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pvcharge.errors import DeviceProtocolError
from pvcharge.planning.source import HttpSource, JsonGetter, SlotValues, spread_steps
from pvcharge.settings import Secret

TIBBER_URL = "https://api.tibber.com/v1-beta/gql"
#: the longest a price lasts (an hourly price, where 15-min prices are not offered), in s.
MAX_PRICE_S = 3600
_PRICE = "total energy tax startsAt level currency"
#: the one query sent: every home's price info, today and tomorrow, in 15-min resolution.
PRICE_QUERY = (
    "{ viewer { homes { id currentSubscription { priceInfo(resolution: QUARTER_HOURLY) { "
    f"today {{ {_PRICE} }} tomorrow {{ {_PRICE} }} }} }} }} }}"
)


class TibberTariff(HttpSource):
    """Tibber's prices for one home, per 15-min slot.

    Args:
        getter: the HTTP client (its ``name`` names the source in errors).
        token: the personal access token (https://developer.tibber.com/settings/access-token).
        home_id: the home to use; ``None``: the first home with a current subscription.
        currency: the currency the config expects (``tariff.currency``); other prices are refused.
        charges_per_kwh: added to every price (currency/kWh).
        url: the GraphQL endpoint (an emulator in tests).
    """

    def __init__(
        self,
        getter: JsonGetter,
        token: Secret,
        *,
        home_id: str | None = None,
        currency: str | None = None,
        charges_per_kwh: float = 0.0,
        url: str = TIBBER_URL,
    ) -> None:
        super().__init__(getter)
        self._token = token
        self._home_id = home_id
        self._currency = currency
        self._charges = charges_per_kwh
        self._url = url

    async def fetch(self, now_s: float) -> SlotValues:
        """Today's and (once published) tomorrow's prices.

        Raises:
            DeviceUnavailable, RateLimited: see :meth:`JsonGetter.post`.
            DeviceProtocolError: the token refused, a GraphQL error, no such home, another currency,
                an answer not in the documented shape.
        """
        body = await self._getter.post(
            self._url,
            {"query": PRICE_QUERY},
            headers={"Authorization": f"Bearer {self._token.reveal()}"},
        )
        prices = parse_tibber(body, home_id=self._home_id, currency=self._currency, name=self.name)
        return {t: price + self._charges for t, price in prices.items()}


def _graphql_error(errors: Any, name: str) -> DeviceProtocolError:
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    extensions = first.get("extensions")
    code = extensions.get("code") if isinstance(extensions, dict) else None
    message = str(first.get("message", errors))[:200]
    if code == "UNAUTHENTICATED":
        return DeviceProtocolError(
            name, f"the token was refused ({message}): check tariff.token (developer.tibber.com)"
        )
    return DeviceProtocolError(name, f"GraphQL error {code or 'without a code'}: {message}")


def _price_info(home: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A home's ``currentSubscription.priceInfo`` (``None``: no subscription, or no price info).

    Raises:
        DeviceProtocolError: either is there but not a JSON object.
    """
    subscription = home.get("currentSubscription")
    info = subscription.get("priceInfo") if isinstance(subscription, dict) else subscription
    if info is not None and not isinstance(info, dict):
        raise DeviceProtocolError(
            name, f"expected currentSubscription.priceInfo as an object, got {str(subscription)[:80]!r}"
        )
    return info


def parse_tibber(
    body: Any, *, home_id: str | None = None, currency: str | None = None, name: str = "tariff tibber"
) -> SlotValues:
    """Prices per slot (currency/kWh, ``total``) from an answer to :data:`PRICE_QUERY`. Each price
    lasts until the next ``startsAt`` (at most an hour), the last one as long as the one before (15 min
    alone).

    Raises:
        DeviceProtocolError: a GraphQL ``errors`` list (a refused token says so), no home (or not
            ``home_id``) with a subscription, prices in another ``currency``, a malformed entry.
    """
    if not isinstance(body, dict):
        raise DeviceProtocolError(name, f"expected a JSON object, got {str(body)[:80]!r}")
    if body.get("errors"):
        raise _graphql_error(body["errors"], name)
    try:
        homes = body["data"]["viewer"]["homes"]
    except (KeyError, TypeError):
        homes = None
    if not isinstance(homes, list):
        raise DeviceProtocolError(name, f"expected data.viewer.homes, got {str(body)[:120]!r}")
    infos = {str(home.get("id")): _price_info(home, name) for home in homes if isinstance(home, dict)}
    if home_id is not None:
        info = infos.get(home_id)
        if info is None:
            raise DeviceProtocolError(
                name, f"no home {home_id!r} with a current subscription (homes: {', '.join(infos) or 'none'})"
            )
    else:
        info = next((i for i in infos.values() if i is not None), None)
        if info is None:
            raise DeviceProtocolError(name, "no home with a current subscription on this token")
    entries = [*(info.get("today") or []), *(info.get("tomorrow") or [])]
    starts: list[tuple[float, float]] = []
    for entry in entries:
        try:
            start_s = datetime.fromisoformat(entry["startsAt"]).timestamp()
            total = float(entry["total"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DeviceProtocolError(name, f"malformed price {str(entry)[:80]!r}") from exc
        if currency is not None and entry.get("currency", currency) != currency:
            raise DeviceProtocolError(
                name,
                f"prices are in {entry['currency']}, tariff.currency is {currency}: "
                f"set tariff.currency: {entry['currency']}",
            )
        starts.append((start_s, total))
    starts.sort()
    prices: SlotValues = {}
    # a gap (more than an hour to the next price) stays without a price
    spread_steps([t for t, _ in starts], [v for _, v in starts], prices, max_s=MAX_PRICE_S)
    return prices
