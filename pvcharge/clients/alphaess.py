"""AlphaESS Open API client, shared by the AlphaESS meter and the AlphaESS wallbox charger: signed
requests, retries, and what each reply or failure means (6053 and HTTP 429 start the account's backoff).

The wire format (base URL, signing, the envelope and its return codes) is
:mod:`pvcharge.clients.alphaess_api`; further device facts (``meters.md`` §3.4 [A2, A4]):

- No rate limit is published; 6053 ("The maximum number of requests has been reached") answers a
  client that asks too often, and clients poll no faster than every 10 s (§3.4 [A2, A4]).

What the devices of one account share (the connection pool, the request budget, the 6053/429 backoff,
the ``GET`` requests in flight and the replies kept for reuse) is
:class:`~pvcharge.clients.alphaess_account.OpenApiAccount` in :mod:`pvcharge.clients.alphaess_account`,
with the request budget's numbers.

What a device driver takes from here (the settings every Open API device shares, the client made from
them, the poll cadence) is :mod:`pvcharge.clients.alphaess_device`.

The app secret goes into :func:`~pvcharge.clients.alphaess_api.sign` only: it never appears in a log line,
an exception or a repr.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import structlog

from pvcharge.clients.alphaess_account import Flight, OpenApiAccount, Reply, RequestKey, request_key
from pvcharge.clients.alphaess_api import (
    CLOCK_SKEW,
    CREDENTIAL_HINTS,
    DEFAULT_URL,
    MAX_CLOCK_SKEW_S,
    SYSTEM_OFFLINE,
    TOO_FAST,
    Envelope,
    parse_envelope,
    sign,
)
from pvcharge.clients.budget import BudgetSpent
from pvcharge.errors import DeviceError, DeviceProtocolError, DeviceUnavailable, RateLimited
from pvcharge.retry import (
    ServerError,
    backoff_retrying,
    not_json,
    parse_retry_after,
    request_failed,
    retry_transient,
)
from pvcharge.settings import Secret

_log = structlog.get_logger(__name__)


E = TypeVar("E", bound=DeviceError)


def copy_error(exc: E) -> E:
    """A copy of ``exc``: same class, message and attributes (for one of them to be changed)."""
    copy = type(exc).__new__(type(exc))
    copy.__dict__.update(exc.__dict__)
    copy.args = exc.args
    return copy


class _NoSlot(Exception):
    """Raised inside one attempt: the budget has no slot for it for ``wait_s`` s."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"no slot for {wait_s:.1f} s")
        self.wait_s = wait_s


def _as_device(exc: DeviceError, name: str) -> DeviceError:
    """A copy of ``exc`` (same class, message and attributes) that names device ``name``: the error of
    a request another device sent, as seen by a device that awaited it."""
    copy = copy_error(exc)
    copy.device = name
    copy.args = (f"{name}: {exc.message}",)
    return copy


class AlphaEssClient:
    """Signed requests to the AlphaESS Open API, with retries and a 6053 backoff.

    Transport failures (connection refused or dropped, timeouts, a reply cut off) and HTTP 5xx are
    tried ``1 + retries`` times with exponential backoff (``backoff_s``, doubling, plus up to
    ``backoff_s`` of jitter); a TLS failure is not retried.  A 6053 reply is not retried: the client
    sends nothing for ``rate_limit_backoff_s``, which doubles on each further 6053 up to
    ``rate_limit_backoff_max_s`` and resets on the next success.  An HTTP 429 (which the Open API is
    not documented to send, but a gateway in front of it may) likewise stops all requests, for its
    ``Retry-After`` (the 6053 backoff without one).  Every attempt takes a slot of the account's
    request budget; one it has no slot for is not sent (:class:`BudgetSpent`; only a ``reserved``
    request, a stop, may use the last :data:`~pvcharge.clients.alphaess_account.STOP_RESERVE`).  Proxy
    settings from the environment (``HTTPS_PROXY``, ``NO_PROXY``) apply, and TLS certificates are always
    verified against the system's CAs (``SSL_CERT_FILE`` adds a private one): this is a cloud API.

    The connection pool, the budget, the backoff, the requests in flight and the kept replies belong to
    an :class:`OpenApiAccount`: the client's own one, or, with ``account``, one it shares with the other
    devices of the account (see there).

    Args:
        base_url: the API base, e.g. ``https://openapi.alphaess.com/api``.
        app_id: the developer appId (open.alphaess.com).
        app_secret: the developer appSecret; revealed only to compute :func:`sign`.
        name: the device name put on errors and logs.
        timeout_s: timeout of one HTTP request, in s.
        retries: extra attempts after a transport error, timeout or HTTP 5xx.
        backoff_s: wait before the first retry, in s.
        rate_limit_backoff_s: wait after a 6053 before the next request, in s (the floor of the backoff);
            with ``account``, the account's applies.
        rate_limit_backoff_max_s: the longest 6053 backoff, in s; with ``account``, the account's.
        clock: Unix seconds, for the ``timeStamp`` header and the 6053 backoff; with ``account``, the
            account's.
        account: the account state to share; ``None``: a new one of the client's own.

    Attributes:
        name: the device name.

    Raises:
        ValueError: ``account`` is for another URL, appId or appSecret.
    """

    def __init__(
        self,
        base_url: str,
        app_id: str,
        app_secret: Secret,
        *,
        name: str,
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        rate_limit_backoff_s: float = 60.0,
        rate_limit_backoff_max_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        account: OpenApiAccount | None = None,
    ) -> None:
        if account is None:
            account = OpenApiAccount(
                base_url,
                app_id,
                app_secret,
                rate_limit_backoff_s=rate_limit_backoff_s,
                rate_limit_backoff_max_s=rate_limit_backoff_max_s,
                clock=clock,
            )
        elif not account.names(base_url, app_id, app_secret):
            raise ValueError(f"{name}: {account!r} is another account than {base_url!r}, app_id={app_id!r}")
        self.name = name
        self._account = account
        self._base_url = account.base_url  #: for messages
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._clock = account.clock
        self._log = _log.bind(device=name)

    def __repr__(self) -> str:
        return f"AlphaEssClient({self._base_url!r}, app_id={self._account.app_id!r}, name={self.name!r})"

    @classmethod
    def of(
        cls,
        account: OpenApiAccount,
        *,
        name: str,
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 1.0,
    ) -> AlphaEssClient:
        """A client for one device on ``account`` (the other arguments as the constructor's)."""
        return cls(
            account.base_url,
            account.app_id,
            account.app_secret,
            name=name,
            timeout_s=timeout_s,
            retries=retries,
            backoff_s=backoff_s,
            account=account,
        )

    @property
    def account(self) -> OpenApiAccount:
        """The account state this client uses (shared with other devices, or its own)."""
        return self._account

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``GET <base>/<path>?<params>`` and return the envelope's ``data``.

        An identical request (same path and parameters) already in flight on the account is awaited
        instead of sending another.

        Args:
            path: the endpoint, e.g. ``"getLastPowerData"``.
            params: query parameters, e.g. ``{"sysSn": "AL2002321010043"}``.

        Returns:
            ``data`` of a ``code == 200`` reply: a dict, a list or ``None``, as the endpoint defines.

        Raises:
            RateLimited: 6053 or HTTP 429, or still backing off from one (then nothing is sent); on a
                shared account, whichever device was answered so.  ``BudgetSpent`` (a ``RateLimited``):
                the account's request budget has no slot (nothing sent, no backoff started).
            DeviceUnavailable: no answer after retries (connection refused or closed, timeout, reply
                cut off, HTTP 5xx), or 6042 (system offline); or the account was closed while the
                request was in flight.  A failed attempt whose retry the budget has no room for is a
                ``RateLimited`` (not ``BudgetSpent``: a request was sent) naming the failure.
            DeviceProtocolError: any other return code (6006 clock skew, 6007 signature, …), another HTTP
                status, a TLS failure (an untrusted certificate), or a body that is not a JSON envelope;
                the message names the code and its meaning.
        """
        data, _ = await self.get_stamped(path, params)
        return data

    async def get_stamped(
        self, path: str, params: Mapping[str, str] | None = None, *, reuse_s: float = 0.0
    ) -> tuple[Any, float]:
        """As :meth:`get`, with the time the reply arrived; may hand out a recent reply again.

        Args:
            path, params: as :meth:`get`.
            reuse_s: a successful reply to the same request (path and parameters) that arrived at most
                this long ago, in s on the clock, is returned again without a request (whichever device
                of the account asked for it); 0 (the default): only a request in flight is shared.

        Returns:
            ``(data, received_at_s)``: the envelope's ``data``, and when that reply arrived, in Unix s
            on the clock (earlier than now for a reused reply: stamp readings with it).

        Raises:
            as :meth:`get`.  Errors are never reused: after a failed request the next call sends again
            (or raises ``RateLimited`` during a backoff).
        """
        account = self._account
        key = request_key(path, params)
        kept = self._account.kept(key, reuse_s)
        if kept is not None:
            return kept.data, kept.received_at_s
        flight = account.in_flight.get(key)
        if flight is None:
            task = asyncio.create_task(self._fetch(key, path, params), name=f"alphaess GET {path}")
            flight = Flight(key, task, owner=self)
            account.in_flight[key] = flight
            task.add_done_callback(lambda done: account.landed(flight, done))
        reply = await self._await(flight, f"GET {self._base_url}{path}")
        return reply.data, reply.received_at_s

    async def post(self, path: str, body: Mapping[str, Any], *, reserved: bool = False) -> Any:
        """``POST <base>/<path>`` with ``body`` as JSON; returns and raises as :meth:`get` (never shared
        with another request, never reused).

        ``reserved``: the request may use the budget's
        :data:`~pvcharge.clients.alphaess_account.STOP_RESERVE` (for a stop only).
        """
        return await self._call("POST", path, body=body, reserved=reserved)

    def has_reply(self, path: str, params: Mapping[str, str] | None, reuse_s: float) -> bool:
        """A ``get_stamped(path, params, reuse_s=reuse_s)`` now would send nothing: an identical
        ``GET`` is in flight, or its reply arrived at most ``reuse_s`` ago."""
        key = request_key(path, params)
        return key in self._account.in_flight or self._account.kept(key, reuse_s) is not None

    def check_budget(self, count: int, what: str) -> None:
        """Raise :class:`BudgetSpent` unless the account's budget has slots for ``count`` ordinary
        requests now (none is taken): for a poll that needs several, so it does not stop half way.

        Args:
            count: the requests about to be sent.
            what: what they are, for the message, e.g. ``"poll (2 requests)"``.
        """
        wait_s = self._account.budget.wait_s(count)
        if wait_s > 0:
            raise self._spent(what, wait_s)

    async def close(self) -> None:
        """Close the HTTP connection pool (on a shared account, the account's: harmless for the other
        devices, see :meth:`OpenApiAccount.close`); the next request opens a new one. Safe to call twice."""
        await self._account.close()

    # -- sharing ----------------------------------------------------------------------------------

    async def _fetch(self, key: RequestKey, path: str, params: Mapping[str, str] | None) -> Reply:
        data = await self._call("GET", path, params=params)
        reply = Reply(data, self._clock())
        self._account.replies[key] = reply
        return reply

    async def _await(self, flight: Flight, where: str) -> Reply:
        """Await a flight (shielded: one caller giving up does not cancel it for the others)."""
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if flight.task.cancelled() and (current is None or current.cancelling() == 0):
                raise DeviceUnavailable(  # the account was closed under us, we were not cancelled
                    self.name, f"{where}: the connection was closed while the request was in flight"
                ) from None
            raise
        except DeviceError as exc:
            if flight.owner is self:
                raise
            raise _as_device(exc, self.name) from exc.__cause__
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # every caller gave up: as before sharing, the request is cut off (and nobody joins it)
                self._account.forget(flight)
                flight.task.cancel()

    # -- HTTP -------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        timestamp = str(int(self._clock()))
        return {
            "appId": self._account.app_id,
            "timeStamp": timestamp,
            "sign": sign(self._account.app_id, self._account.app_secret.reveal(), timestamp),
        }

    def _spent(self, what: str, wait_s: float) -> BudgetSpent:
        budget = self._account.budget
        return BudgetSpent(
            self.name,
            f"{what}: not sent, the account's request budget ({budget.requests} requests in any "
            f"{budget.window_s:g} s, {budget.reserve} kept for a stop) has no room for {wait_s:.1f} s",
            retry_after_s=wait_s,
        )

    async def _send_once(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
        reserved: bool,
    ) -> httpx.Response:
        budget = self._account.budget
        command = method == "POST"  # a start or stop: polls leave it the next free slot
        wait_s = budget.wait_s(reserved=reserved, command=command)
        if wait_s > 0:
            if command:
                budget.command_waiting()
            raise _NoSlot(wait_s)
        budget.begin(command=command)
        try:
            # Signed per attempt, so a retry carries a fresh timeStamp.
            response = await self._account.http().request(
                method, path, params=params, json=body, headers=self._headers(), timeout=self._timeout_s
            )
        finally:
            budget.end()
        if response.status_code >= 500:
            raise ServerError.of(response)
        return response

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        reserved: bool = False,
    ) -> Any:
        where = f"{method} {self._base_url}{path}"
        account = self._account
        left_s = account.rate_limited_until - self._clock()
        if left_s > 0:
            by = account.rate_limited_by
            if account.rate_limited_device != self.name:  # the backoff is the account's, not the device's
                by += f" to {account.rate_limited_device} on the same account"
            raise RateLimited(
                self.name,
                f"{where}: not sent, backing off {left_s:.0f} s more after {by} (too many requests)",
                retry_after_s=left_s,
            )
        attempts = self._retries + 1
        retrying = backoff_retrying(
            attempts=attempts,
            backoff_s=self._backoff_s,
            max_wait_s=30.0,
            retry=retry_transient,
            log=self._log,
            event="alphaess.retry",
            context=lambda state: {"request": f"{state.args[0]} {state.args[1]}"},
        )
        failed: list[httpx.TransportError | ServerError] = []  # attempts sent that failed

        async def attempt(*args: Any) -> httpx.Response:
            try:
                return await self._send_once(*args)
            except (httpx.TransportError, ServerError) as exc:
                failed.append(exc)
                raise

        try:
            response: httpx.Response = await retrying(attempt, method, path, params, body, reserved)
        except _NoSlot as exc:
            if not failed:  # nothing was sent
                raise self._spent(where, exc.wait_s) from None
            # a retry the budget has no room for: the request failed, and may be tried again then (a
            # transient failure: failed[-1] is no TLS failure, that is not retried)
            failure = self._unavailable(where, failed[-1], len(failed)).message
            raise RateLimited(
                self.name,
                f"{failure}; no room in the account's request budget for another attempt for "
                f"{exc.wait_s:.1f} s",
                retry_after_s=exc.wait_s,
            ) from failed[-1]
        except (httpx.HTTPError, ServerError) as exc:
            raise self._unavailable(where, exc, attempts) from exc
        if response.status_code == 429:
            raise self._too_many_requests(where, response.headers.get("Retry-After"))
        if response.status_code != 200:
            raise DeviceProtocolError(
                self.name,
                f"{where}: unexpected HTTP {response.status_code} (the Open API answers 200): "
                f"{response.text.strip()[:200]}",
            )
        try:
            payload = response.json()
        except ValueError as exc:
            raise DeviceProtocolError(
                self.name,
                f"{where}: not an Open API reply ({not_json(response.text)}); is the URL e.g. {DEFAULT_URL}?",
            ) from exc
        try:
            envelope = parse_envelope(payload)
        except ValueError as exc:
            raise DeviceProtocolError(
                self.name, f"{where}: not an Open API reply ({exc}); is the URL e.g. {DEFAULT_URL}?"
            ) from exc
        if envelope.ok:
            account.rate_limit_streak = 0
            return envelope.data
        raise self._error(where, envelope, params or body or {})

    def _unavailable(self, where: str, exc: httpx.HTTPError | ServerError, attempts: int) -> DeviceError:
        """The error for a request whose last of ``attempts`` attempts failed with ``exc``
        (:func:`~pvcharge.retry.request_failed`)."""
        return request_failed(self.name, where, exc, attempts=attempts, timeout_s=self._timeout_s)

    def _too_many_requests(self, where: str, header: str | None) -> RateLimited:
        """HTTP 429: send nothing before its ``Retry-After`` (without one, for the 6053 backoff)."""
        wait_s = parse_retry_after(header, self._clock())
        if wait_s is None:
            wait_s = self._account.rate_limit_wait_s()
            self._account.rate_limit_streak += 1
        self._account.back_off(wait_s, "HTTP 429", self.name)
        self._log.warning(
            "alphaess.rate_limited", request=where, retry_after=header, backoff_s=round(wait_s, 1)
        )
        return RateLimited(
            self.name,
            f"{where}: HTTP 429 Too Many Requests; sending nothing for {wait_s:.0f} s "
            f"(Retry-After: {header})",
            retry_after_s=wait_s,
        )

    def _error(self, where: str, envelope: Envelope, request: Mapping[str, Any]) -> DeviceError:
        """The exception for an error envelope; on 6053 it also starts the backoff."""
        code = envelope.code
        said = f"code {code} ({envelope.meaning}): server says {envelope.msg!r}"
        if envelope.exp_msg:
            said += f", {envelope.exp_msg!r}"
        sys_sn = request.get("sysSn", "(none sent)")
        if code == TOO_FAST:
            wait_s = self._account.rate_limit_wait_s()
            self._account.rate_limit_streak += 1
            self._account.back_off(wait_s, f"code {TOO_FAST}", self.name)
            self._log.warning("alphaess.rate_limited", request=where, backoff_s=round(wait_s, 1))
            return RateLimited(
                self.name,
                f"{where}: {said}: too many requests; sending nothing for {wait_s:.0f} s "
                "(poll less often if this repeats)",
                retry_after_s=wait_s,
            )
        if code == CLOCK_SKEW:
            now = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            return DeviceProtocolError(
                self.name,
                f"{where}: {said}: the local clock and the AlphaESS server's clock differ by more than "
                f"{MAX_CLOCK_SKEW_S} s (local clock: {now}); check NTP time sync on this host",
            )
        if code == SYSTEM_OFFLINE:
            return DeviceUnavailable(
                self.name,
                f"{where}: {said}: the AlphaESS cloud has lost contact with system {sys_sn}; "
                "check the system's internet connection",
            )
        if code in CREDENTIAL_HINTS:
            hint = CREDENTIAL_HINTS[code].format(app_id=self._account.app_id, sys_sn=sys_sn)
            return DeviceProtocolError(self.name, f"{where}: {said}: {hint}")
        return DeviceProtocolError(self.name, f"{where}: AlphaESS error {said}")
