"""What every forecast and tariff source shares: a polite JSON GET (retries, ``Retry-After``, errors in
words) and a cache of the last good answer that keeps the planner going while a source is down.

A source's ``fetch(now_s)`` returns a :data:`SlotValues` mapping or raises a
:class:`~pvcharge.errors.DeviceError`; :class:`CachedSource` calls it at most every ``refresh_s``,
never before a 429's ``Retry-After``, and hands out the last good answer meanwhile (``None`` before
the first one): the planner's fallback rules (no PV, flat price) take over from there. With a
``cache_file`` the last good answer survives a restart.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog

from pvcharge.clients.tls import verified_context
from pvcharge.errors import DeviceError, DeviceProtocolError, RateLimited
from pvcharge.planning.planner import SLOT_S
from pvcharge.retry import (
    ServerError,
    backoff_retrying,
    not_json,
    request_failed,
    retry_after_s,
    retry_transient,
)
from pvcharge.state import write_json_atomic

#: values per 15-min slot: slot start (Unix s, a multiple of 900) → W or currency/kWh.
SlotValues = dict[int, float]
#: wait after an HTTP 429 without a usable ``Retry-After``, in s.
DEFAULT_RETRY_AFTER_S = 600.0

_log = structlog.get_logger("pvcharge.planning")


class Source(Protocol):
    """A forecast or tariff source: ``name`` for messages, ``fetch`` for one fresh answer."""

    name: str

    async def fetch(self, now_s: float) -> SlotValues: ...

    async def close(self) -> None: ...


def spread(start_s: float, end_s: float, value: float, into: SlotValues) -> None:
    """Set ``value`` for every 15-min slot in ``[start_s, end_s)`` (an hourly price is 4 slots)."""
    t = int(start_s // SLOT_S) * SLOT_S
    while t < end_s:
        into[t] = value
        t += SLOT_S


def spread_steps(
    starts_s: Sequence[float], values: Sequence[float | None], into: SlotValues, *, max_s: float = math.inf
) -> None:
    """:func:`spread` a step function: each value lasts from its start until the next one's (at most
    ``max_s``), the last as long as the one before (one slot alone); ``None`` values are left out.
    ``starts_s`` ascending, as long as ``values``."""
    for i, (start_s, value) in enumerate(zip(starts_s, values, strict=True)):
        if value is None:
            continue
        if i + 1 < len(starts_s):
            end_s = starts_s[i + 1]
        else:
            end_s = start_s + (start_s - starts_s[i - 1] if i > 0 else SLOT_S)
        spread(start_s, min(end_s, start_s + max_s), value, into)


class JsonGetter:
    """GET a JSON document from a public API: ``1 + retries`` tries on timeouts, connection errors and
    HTTP 5xx; an HTTP 429 raises :class:`RateLimited` with its ``Retry-After``.

    Args:
        name: the source's name for errors and logs, e.g. ``"tariff awattar"``.
        timeout_s, retries, backoff_s: per request.
        transport: an httpx transport instead of the network (tests).
    """

    def __init__(
        self,
        name: str,
        *,
        clock: Callable[[], float],
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._clock = clock
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def get(
        self, url: str, params: Mapping[str, str | int | float] | None = None, *, shown_url: str | None = None
    ) -> Any:
        """The parsed JSON body of ``GET url?params``; messages and logs show ``shown_url`` instead of
        ``url`` when given (a URL with a key in its path).

        Raises:
            DeviceUnavailable: no answer after retries (timeout, connection, HTTP 5xx).
            RateLimited: HTTP 429 (``retry_after_s`` from its header, else 600 s).
            DeviceProtocolError: another HTTP error, a TLS failure, a body that is not JSON.
        """
        return await self._request("GET", url, params=params, shown_url=shown_url)

    async def post(self, url: str, body: Any, *, headers: Mapping[str, str] | None = None) -> Any:
        """The parsed JSON answer to ``POST url`` with the JSON ``body`` (a GraphQL query);
        ``headers`` (e.g. a bearer token) never reach a message or a log line. A 4xx answer (but 429)
        with a JSON body is returned too: GraphQL servers put their ``errors`` there.

        Raises:
            DeviceUnavailable, RateLimited, DeviceProtocolError: as :meth:`get`.
        """
        return await self._request("POST", url, json_body=body, headers=headers, json_errors=True)

    async def _request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int | float] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        shown_url: str | None = None,
        json_errors: bool = False,
    ) -> Any:
        if self._client is None:
            self._client = httpx.AsyncClient(  # one shared TLS context (clients/tls.py)
                timeout=self._timeout_s, transport=self._transport, verify=verified_context()
            )
        client = self._client
        real_url, url = url, shown_url or url
        attempts = 1 + self._retries
        retrying = backoff_retrying(
            attempts=attempts,
            backoff_s=self._backoff_s,
            retry=retry_transient,
            log=_log,
            event="planning.retry",
            context=lambda state: {"source": self.name, "url": url},
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await client.request(
                        method, real_url, params=params, json=json_body, headers=headers
                    )
                    if response.status_code >= 500:
                        raise ServerError.of(response)
        except (httpx.HTTPError, ServerError) as exc:
            # a timeout keeps its httpx name (ReadTimeout, ConnectTimeout): None
            what = f"{method} {url}"
            raise request_failed(self.name, what, exc, attempts=attempts, timeout_s=None) from exc
        if response.status_code == 429:
            wait_s = retry_after_s(response.headers.get("Retry-After"), self._clock(), DEFAULT_RETRY_AFTER_S)
            raise RateLimited(
                self.name, f"{method} {url}: HTTP 429, asked to wait {wait_s:g} s", retry_after_s=wait_s
            )
        if response.status_code != 200 and not (json_errors and 400 <= response.status_code < 500):
            raise DeviceProtocolError(
                self.name, f"{method} {url}: HTTP {response.status_code} {response.text.strip()[:200]}"
            )
        try:
            return response.json()
        except ValueError as exc:
            status = f"HTTP {response.status_code}, " if response.status_code != 200 else ""
            raise DeviceProtocolError(
                self.name, f"{method} {url}: {status}{not_json(response.text)}"
            ) from exc

    async def close(self) -> None:
        """Close the connection pool. Safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class HttpSource:
    """What every source that asks a public API through a :class:`JsonGetter` shares: its ``name`` (the
    getter's) and :meth:`close`."""

    def __init__(self, getter: JsonGetter) -> None:
        self.name = getter.name
        self._getter = getter

    async def close(self) -> None:
        """Close the getter's connection pool. Safe to call twice."""
        await self._getter.close()


class CachedSource:
    """The last good answer of ``source``, refreshed every ``refresh_s`` (``retry_s`` after a failure).

    Attributes:
        values: the last good answer, ``None`` before the first.
        fetched_s: when it came (Unix s), ``-inf`` before.
        last_error: why the last refresh failed (words), ``None`` after a success.
    """

    def __init__(
        self,
        source: Source,
        *,
        refresh_s: float,
        max_age_s: float,
        retry_s: float = 300.0,
        cache_file: Path | None = None,
        cache_key: str = "",
    ) -> None:
        self.source = source
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self.max_age_s = max_age_s
        self.values: SlotValues | None = None
        self.fetched_s = -math.inf
        self.last_error: str | None = None
        self._next_try_s = -math.inf
        self._fetching = asyncio.Lock()  # plan services that share the source fetch once
        self._cache_file = cache_file
        self._cache_key = f"{source.name}|{cache_key}"
        if cache_file is not None:
            self._load(cache_file)

    def _load(self, path: Path) -> None:
        """The last good answer from before a restart: used until it is ``max_age_s`` old, and the next
        fetch waits ``refresh_s`` after it (so a restart loop does not spend a service's budget)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") != self._cache_key:
                return  # another source or other settings (arrays, zone)
            fetched_s = float(data["fetched_s"])
            values = {int(t): float(v) for t, v in data["values"].items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            _log.warning("planning.cache_unreadable", path=str(path), error=str(exc))
            return
        self.values, self.fetched_s = values, fetched_s
        self._next_try_s = fetched_s + self.refresh_s

    def _save(self) -> None:
        if self._cache_file is None or self.values is None:
            return
        data = {"key": self._cache_key, "fetched_s": self.fetched_s, "values": self.values}
        try:
            write_json_atomic(self._cache_file, data)
        except OSError as exc:
            _log.warning("planning.cache_not_saved", path=str(self._cache_file), error=str(exc))

    async def latest(self, now_s: float) -> SlotValues | None:
        """Refresh if due (``refresh_s`` after a success, ``retry_s`` after a failure, never before a
        429's ``Retry-After``) and return the answer, or ``None`` when there is none younger than
        ``max_age_s``. Never raises a source's error: it is logged and kept in :attr:`last_error`.
        Callers at the same time (the plan services of several loadpoints) wait for one fetch."""
        async with self._fetching:
            if now_s >= self._next_try_s:
                self._next_try_s = now_s + self.refresh_s
                try:
                    self.values = await self.source.fetch(now_s)
                except RateLimited as exc:
                    self._next_try_s = now_s + max(exc.retry_after_s, self.retry_s)
                    self._failed(exc)
                except DeviceError as exc:
                    self._next_try_s = now_s + self.retry_s
                    self._failed(exc)
                else:
                    self.fetched_s, self.last_error = now_s, None
                    self._save()
        if self.values is None or now_s - self.fetched_s > self.max_age_s:
            return None
        return self.values

    def _failed(self, exc: DeviceError) -> None:
        self.last_error = exc.message
        _log.warning("planning.source_failed", source=self.source.name, error=exc.message)
