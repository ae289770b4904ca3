"""The state the devices of one AlphaESS Open API account share: :class:`OpenApiAccount`, its
connection pool, request budget, 6053/429 backoff, and the ``GET`` requests in flight and replies kept.

The requests themselves (signing, retries, what each reply or failure means) are
:class:`pvcharge.clients.alphaess.AlphaEssClient`, of which each device has its own on the account.

**Request budget.**  Every request of an account (each request of a poll, each start or stop, each retry)
takes a slot of one :class:`~pvcharge.clients.budget.RequestBudget`: at most :data:`BUDGET_REQUESTS` in
any :data:`BUDGET_WINDOW_S` as the cloud counts them, of which :data:`STOP_RESERVE` only a stop may use,
so that a stop can always be sent.  A request the budget has no slot for is not sent
(:class:`~pvcharge.clients.budget.BudgetSpent`); a start or stop refused so gets the next free slot (polls
leave it one).  The cloud publishes no number (§3.4: 6053 once at one request a minute, more than 150 a
minute unthrottled in a 2026 test); 5 per 10 s is the strictest account pvcharge is checked against, and
enough for a meter and a wallbox polled every 10 s (two requests a poll between them, three on the first)
and a command.

**Sharing an account.**  When the meter and the wallbox use the same account (same ``url``, ``app_id`` and
``app_secret``), :func:`pvcharge.devices.create_devices` gives both one :class:`OpenApiAccount`: one
connection pool, one request budget (the two devices' requests together), one 6053/429 backoff (what the
cloud counts, appId, sysSn or address, is not published, so a 6053 answered to either device pauses both),
and de-duplicated reads: an identical ``GET`` (same path and parameters) already in flight is awaited
rather than sent again, and a reply that arrived at most ``reuse_s`` ago is handed out again
(:meth:`~pvcharge.clients.alphaess.AlphaEssClient.get_stamped`), so the two devices' ``getLastPowerData``
cost one request per poll instead of two (§3.4: no published limit, 6053 for clients that ask too often).

The app secret is kept as a :class:`~pvcharge.settings.Secret`: it never appears in a log line, an
exception or a repr.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from pvcharge.clients.alphaess_api import TOO_FAST
from pvcharge.clients.budget import RequestBudget
from pvcharge.clients.tls import verify_for
from pvcharge.settings import Secret

if TYPE_CHECKING:
    from pvcharge.clients.alphaess import AlphaEssClient
    from pvcharge.clients.alphaess_device import OpenApiSettings

#: the account's request budget: at most this many requests in any ``BUDGET_WINDOW_S`` (module docstring)
BUDGET_REQUESTS = 5
BUDGET_WINDOW_S = 10.0  #: the budget's window, in s
STOP_RESERVE = 1  #: slots of the budget that only a stop may use


def _normal_url(base_url: str) -> str:
    """The base URL as the client uses it: with exactly one trailing ``/``."""
    return base_url.rstrip("/") + "/"


#: identifies a ``GET``: path and sorted query parameters
RequestKey = tuple[str, tuple[tuple[str, str], ...]]


def request_key(path: str, params: Mapping[str, str] | None) -> RequestKey:
    """The key of ``GET <path>?<params>``: requests with the same key are one request."""
    return (path, tuple(sorted((params or {}).items())))


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful ``GET`` reply: the envelope's ``data`` and when it arrived (s on the account's clock)."""

    data: Any
    received_at_s: float


@dataclass(eq=False, slots=True)
class Flight:
    """A ``GET`` in flight, which every identical ``GET`` awaits instead of sending its own."""

    key: RequestKey
    task: asyncio.Task[Reply]
    owner: AlphaEssClient  #: the client that sent it: its name is on errors and retry logs
    waiters: int = 0  #: callers awaiting it; the last one to give up (cancelled) cancels the request


class OpenApiAccount:
    """What the devices of one AlphaESS Open API account share inside one daemon.

    The AlphaESS meter and the AlphaESS wallbox of one system usually use the same developer account
    (``url``, ``app_id``, ``app_secret``) and ask the same endpoint (``getLastPowerData``: the meter for
    ``ppv``/``pgrid``/``pbat``/``soc``, the wallbox for ``pev``).  The cloud publishes no rate limit and
    answers a client that asks too often with 6053 (meters.md §3.4), without saying whether it counts
    per appId, per sysSn or per address; so the devices share, through one account object:

    - one HTTP connection pool;
    - one request budget (:attr:`budget`): every request of either device takes a slot of it, a stop
      may use the :data:`STOP_RESERVE` (module docstring);
    - one 6053 / HTTP 429 backoff: after either device was told "too fast", neither sends anything
      until the backoff (``rate_limit_backoff_s``, doubling per further 6053 up to
      ``rate_limit_backoff_max_s``, reset on a success) has passed;
    - identical ``GET`` requests (same path and parameters): one already in flight is awaited by
      every caller asking for it, and its reply is kept with its arrival time, so that a caller passing
      ``reuse_s`` gets it again without a request
      (:meth:`~pvcharge.clients.alphaess.AlphaEssClient.get_stamped`).  Errors are not kept (but a
      caller awaiting a request in flight gets its error).

    One object per account and daemon, made by :func:`pvcharge.devices.create_devices` (there is no
    process-wide registry: tests run many daemons, on different clocks, in one process).  Each device
    talks through its own :class:`~pvcharge.clients.alphaess.AlphaEssClient` (made by
    :meth:`~pvcharge.clients.alphaess.AlphaEssClient.of`), which puts its own device name on errors and
    logs and keeps its own timeout and retries.

    Args:
        base_url: the API base, e.g. ``https://openapi.alphaess.com/api``.
        app_id: the developer appId.
        app_secret: the developer appSecret; revealed only to compute
            :func:`~pvcharge.clients.alphaess_api.sign`.
        rate_limit_backoff_s: wait after a 6053 before the next request, in s (the floor of the backoff).
        rate_limit_backoff_max_s: the longest 6053 backoff, in s.
        clock: Unix seconds: the ``timeStamp`` header, the backoff, the budget, reply arrival times.
        budget_requests: the request budget: at most this many requests in any ``budget_window_s``
            (:data:`STOP_RESERVE` of them only for a stop).
        budget_window_s: the budget's window, in s.

    Attributes:
        budget: the account's request budget.
    """

    def __init__(
        self,
        base_url: str,
        app_id: str,
        app_secret: Secret,
        *,
        rate_limit_backoff_s: float = 60.0,
        rate_limit_backoff_max_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        budget_requests: int = BUDGET_REQUESTS,
        budget_window_s: float = BUDGET_WINDOW_S,
    ) -> None:
        self.base_url = _normal_url(base_url)
        self.app_id = app_id
        self.app_secret = app_secret
        self.rate_limit_backoff_s = rate_limit_backoff_s
        self.rate_limit_backoff_max_s = rate_limit_backoff_max_s
        self.clock = clock
        self.budget = RequestBudget(budget_requests, budget_window_s, clock, reserve=STOP_RESERVE)
        self.http_client: httpx.AsyncClient | None = None
        self.rate_limited_until = -float("inf")
        self.rate_limit_streak = 0  #: 6053 replies since the last success
        self.rate_limited_by = f"code {TOO_FAST}"  #: what started the backoff, for messages
        self.rate_limited_device = ""  #: the device that was answered so
        self.in_flight: dict[RequestKey, Flight] = {}
        self.replies: dict[RequestKey, Reply] = {}  #: the last successful reply per GET

    def __repr__(self) -> str:
        return f"OpenApiAccount({self.base_url!r}, app_id={self.app_id!r})"

    @classmethod
    def of(cls, settings: OpenApiSettings, *, clock: Callable[[], float]) -> OpenApiAccount:
        """The account of a device's Open API settings (``url``, ``app_id``, ``app_secret``)."""
        return cls(settings.url, settings.app_id, settings.app_secret, clock=clock)

    def names(self, base_url: str, app_id: str, app_secret: Secret) -> bool:
        """This account: same base URL (up to a trailing ``/``), appId and appSecret."""
        return (_normal_url(base_url), app_id, app_secret) == (self.base_url, self.app_id, self.app_secret)

    def holds(self, settings: OpenApiSettings) -> bool:
        """A device's Open API settings name this account (:meth:`names`)."""
        return self.names(settings.url, settings.app_id, settings.app_secret)

    async def close(self) -> None:
        """Cancel the requests in flight and close the connection pool.

        Harmless for the other devices of the account: the next request opens a new pool; the backoff
        and the kept replies stay.  Safe to call twice (each device's ``close`` calls it).
        """
        flights = [flight.task for flight in self.in_flight.values()]
        self.in_flight.clear()  # nobody joins a request being cancelled
        for task in flights:
            task.cancel()
        if flights:
            await asyncio.wait(flights)
        client, self.http_client = self.http_client, None
        if client is not None:
            await client.aclose()

    def http(self) -> httpx.AsyncClient:
        """The connection pool, opened on first use (again after :meth:`close`)."""
        if self.http_client is None:
            # one shared TLS context (clients/tls.py)
            self.http_client = httpx.AsyncClient(base_url=self.base_url, verify=verify_for(self.base_url))
        return self.http_client

    def forget(self, flight: Flight) -> None:
        """Drop ``flight`` from the requests in flight (if it is still the one for its key)."""
        if self.in_flight.get(flight.key) is flight:
            del self.in_flight[flight.key]

    def landed(self, flight: Flight, task: asyncio.Task[Reply]) -> None:
        """Done callback of a flight: forget it, and fetch its exception so asyncio does not warn
        about one nobody awaited (all its callers cancelled)."""
        self.forget(flight)
        if not task.cancelled():
            task.exception()

    def kept(self, key: RequestKey, reuse_s: float) -> Reply | None:
        """The kept reply to ``key`` if it arrived at most ``reuse_s`` ago (none for ``reuse_s <= 0``)."""
        kept = self.replies.get(key)
        if reuse_s > 0 and kept is not None and 0 <= self.clock() - kept.received_at_s <= reuse_s:
            return kept
        return None

    def rate_limit_wait_s(self) -> float:
        """The next 6053 backoff: ``rate_limit_backoff_s`` doubled per 6053 since the last success."""
        doublings = min(self.rate_limit_streak, 20)  # bounded: 2**n must not overflow a float
        return float(min(self.rate_limit_backoff_s * 2**doublings, self.rate_limit_backoff_max_s))

    def back_off(self, wait_s: float, by: str, device: str) -> None:
        """Send nothing on the account for ``wait_s`` s, because of ``by`` answered to ``device``."""
        self.rate_limited_until = self.clock() + wait_s
        self.rate_limited_by, self.rate_limited_device = by, device
