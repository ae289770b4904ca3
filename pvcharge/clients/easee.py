"""Easee cloud HTTP client: login and token refresh, request budgets, retries, 429 and IP-block handling.

The charger semantics (what to send for a command, observations) live in :mod:`pvcharge.chargers.easee`.

Device facts (reference ``chargers.md`` §1; sources as keyed there: [E-auth] Easee developer docs;
[GEN] Easee OpenAPI endpoint descriptions; [P] pyeasee; [EV] evcc ``charger/easee*``):

- Base URL ``https://api.easee.com``; JSON bodies; ``Authorization: Bearer <accessToken>`` on every
  call except login and refresh (§1.1 [E-auth; P]).
- Login ``POST /api/accounts/login {"userName", "password"}`` → ``{"accessToken", "expiresIn" (s),
  "refreshToken", …}``; a wrong login answers 400 (401 and 403 are taken the same way); refresh ``POST
  /api/accounts/refresh_token {"accessToken", "refreshToken"}`` → the same; ``expiresIn`` is honoured
  (docs say 3600, a pyeasee fixture has 86400); refresh 60 s before expiry and log in again when the
  refresh is refused with 400/401 (§1.1 [P; EV]).
- Replies: 200, or 202 ``{"device", "commandId", "ticks"}`` (a list for settings); 400/401/403/500;
  503 "try again in about a minute"; 504 "end device is not reachable" (§1.4 [EV; GEN]).
- Rate limits (§1.6): charger and circuit ``settings`` 20/min [GEN]; state reads and commands
  undocumented; over a limit HTTP 429 with ``Retry-After`` [P; easee_hass#684; evcc#8290]; sustained
  abuse gets the IP blocked: HTTP 403 "Too many requests, … Your IP is registered in our systems and is
  now blocked" [evcc#3835; easee_hass#117].  pyeasee throttles to 500 requests per 300 s overall [P].

How this client stays inside them: one budget per endpoint class (:data:`BUDGETS`, token buckets, and
:data:`COMMAND_WINDOW` for the charger commands; both kinds are in :mod:`pvcharge.clients.budget`),
taken for every HTTP attempt (retries included); a 429 stops that endpoint class until ``Retry-After``
(and then counts its window as full, for the commands); a 403 "IP blocked" stops everything until
restart.
Tokens and the password go only into request bodies and the ``Authorization`` header: never into a
log line, an exception or a repr.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import httpx
import structlog

from pvcharge.clients.budget import Budget, BudgetSpent, RequestBudget, TokenBucket
from pvcharge.clients.tls import verify_for
from pvcharge.errors import DeviceError, DeviceProtocolError
from pvcharge.retry import (
    ServerError,
    backoff_retrying,
    not_json,
    request_failed,
    retry_after_s,
    retry_transient,
)
from pvcharge.settings import Secret

Clock = Callable[[], float]

DEFAULT_URL = "https://api.easee.com"  #: chargers.md §1

#: endpoint class → (bucket capacity, refill per minute).  A bucket lets through at most capacity +
#: refill requests in any 60 s, kept well inside chargers.md §1.6: charger and circuit settings 10 of
#: the published 20/min [GEN]; state reads (undocumented) 6, of which polling every >= 15 s uses 4;
#: login and refresh 4 (a revoked token costs a refused refresh and a login right after the first login).
BUDGETS: dict[str, tuple[int, float]] = {
    "circuit_settings": (2, 8.0),
    "charger_settings": (2, 8.0),
    "state": (2, 4.0),
    "auth": (3, 1.0),
}
#: the charger commands (``/api/chargers/{id}/commands/*``, all paths together) → (requests, window in
#: s).  Easee publishes no limit for them (chargers.md §1.6: "other commands: not documented"; "the
#: number of allowed commands depends on the endpoints" [evcc#8140]), and evcc#8290 and evcc#8877 met
#: 429 on ``resume_charging``.  Assumed, not measured: all commands of a charger count together, at the
#: lowest per-minute limit Easee publishes for any endpoint (``GET /api/chargers`` 2/min [GEN]), with
#: 1 s to spare for the cloud's clock.  A :class:`~pvcharge.clients.budget.RequestBudget` (no further
#: margin): a command holds its slot until 61 s after its answer, so the latency needs no spare.
COMMAND_WINDOW: tuple[int, float] = (2, 61.0)

REFRESH_MARGIN_S = 60.0  #: refresh the access token this long before it expires (pyeasee, §1.1 [P])
LOGIN_REFUSED_BACKOFF_S = 300.0  #: after a refused login, no new attempt for this long (account lockout)
DEFAULT_RETRY_AFTER_S = 60.0  #: wait after a 429 without a usable ``Retry-After`` header, in s

#: backoff between attempts after a timeout or 5xx: 0.2 s, 0.4 s … up to 2 s, each plus 0–0.2 s random.
_BACKOFF_INITIAL_S = 0.2
_BACKOFF_MAX_S = 2.0


class IpBlocked(Exception):
    """Easee blocked this IP (HTTP 403 "IP blocked"), now or earlier: nothing is sent any more."""


class EaseeClient:
    """One Easee account's HTTP session for one charger: tokens, budgets, retries.

    Requests share one keep-alive connection pool; a read and a write may be in flight at once (only
    logins and token refreshes go one at a time).  Proxies from the environment apply (this is a cloud
    API).

    Args:
        name: device name for errors and logs.
        base_url: ``https://api.easee.com`` or an emulator's.
        username, password: the account login.
        charger_id: named in the hints of a 401/403/404 error.
        timeout_s: timeout of one HTTP request.
        retries: extra attempts after a timeout, connection error or HTTP 5xx.
        clock: Unix seconds: token expiry, budgets, ``Retry-After``.
        transport: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        username: str,
        password: Secret,
        charger_id: str,
        timeout_s: float,
        retries: int,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._charger_id = charger_id
        self._timeout_s = timeout_s
        self._retries = retries
        self._clock = clock
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._budgets: dict[str, Budget] = {
            key: TokenBucket(cap, rate, clock) for key, (cap, rate) in BUDGETS.items()
        }
        self._budgets["commands"] = RequestBudget(*COMMAND_WINDOW, clock, margin_s=0.0)
        self._access: Secret | None = None
        self._refresh: Secret | None = None
        self._refresh_at = -math.inf  # when to refresh the access token
        self._auth_lock = asyncio.Lock()  # one login or refresh at a time
        self._login_refused: tuple[float, str] | None = None  # (until, message) after a refused login
        self._blocked: str | None = None  # the message once Easee blocked this IP
        self._log = structlog.get_logger("pvcharge.chargers.easee").bind(device=name)

    def __repr__(self) -> str:
        return f"EaseeClient({self.name!r}, url={self.base_url!r})"

    @property
    def blocked(self) -> str | None:
        """Why nothing is sent any more (Easee blocked this IP), or ``None``."""
        return self._blocked

    def where(self, method: str, path: str) -> str:
        """``"POST https://api.easee.com/api/…"``: how errors name a request."""
        return f"{method} {self.base_url}{path}"

    def wait_s(self, budget: str, count: int = 1) -> float:
        """Seconds until ``count`` requests of ``budget`` may go (0: now)."""
        return self._budgets[budget].wait_s(count)

    async def close(self) -> None:
        """Close the connection pool; tokens and budgets are kept. Safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def request(self, budget: str, method: str, path: str, body: object = None) -> httpx.Response:
        """An authorized request: a valid token first; on 401 one refresh or login and one retry.

        Returns any 2xx or 4xx response but 429 for the caller to judge (:meth:`check`).

        Raises:
            BudgetSpent: (a ``RateLimited``) ``budget`` is spent (nothing sent) or Easee answered 429 (the
                budget then waits for ``Retry-After``).
            IpBlocked: Easee blocked this IP (HTTP 403), now or earlier.
            DeviceUnavailable: no answer after the retries (timeout, connection, HTTP 5xx).
            DeviceProtocolError: login refused, a TLS failure, a malformed login reply.
        """
        await self._ensure_token()
        used = self._access
        response = await self._send(budget, method, path, body)
        if response.status_code == 401:
            self._log.info("easee.token_rejected", request=f"{method} {path}")
            async with self._auth_lock:
                if self._access is used:  # not renewed meanwhile by another request
                    await self._reauthenticate()
            response = await self._send(budget, method, path, body)
        return response

    def check(self, response: httpx.Response, where: str) -> None:
        """Accept 2xx (202 carries ``ticks`` for SignalR, not used); raise ``DeviceProtocolError`` else."""
        status = response.status_code
        if 200 <= status < 300:
            return
        reason = self.scrub(response.text)
        charger = self._charger_id
        if status == 401:
            problem = f"HTTP 401 right after a fresh login: does this account own charger {charger}?"
        elif status == 403:
            problem = f"access denied (HTTP 403): does this account have access to charger {charger}?"
        elif status == 404:
            problem = "not found (HTTP 404): check charger_id, site_id and circuit_id"
        elif status == 400:
            problem = "rejected (HTTP 400)"
        else:
            problem = f"unexpected HTTP {status}"
        raise DeviceProtocolError(
            self.name, f"{where}: {problem}: {reason}" if reason else f"{where}: {problem}"
        )

    def check_json(self, response: httpx.Response, where: str) -> None:
        """A write's 2xx reply is empty or JSON (``{"device", "commandId", "ticks"}``); anything else (an
        HTML page from a proxy) does not confirm the command: ``DeviceProtocolError``."""
        if not response.content.strip():
            return
        try:
            response.json()
        except ValueError:
            raise DeviceProtocolError(
                self.name,
                f"{where}: HTTP {response.status_code} but {not_json(self.scrub(response.text))}; the "
                "command may not have reached the charger",
            ) from None

    def json(self, response: httpx.Response, where: str) -> Any:
        """The decoded body of a checked reply; ``DeviceProtocolError`` when it is not JSON."""
        try:
            return response.json()
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{where}: {not_json(self.scrub(response.text))}") from exc

    def scrub(self, text: str) -> str:
        """Server text for a message: at most 200 characters, any secret of ours replaced by ``***``."""
        text = text.strip()
        for secret in (self._password, self._access, self._refresh):
            if secret is not None and secret.reveal():
                text = text.replace(secret.reveal(), "***")
        return text[:200]

    # -- HTTP -------------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self._timeout_s,
                transport=self._transport,
                verify=verify_for(self.base_url),  # one shared context (clients/tls.py)
                headers={"Accept": "application/json"},
            )
        return self._client

    def _block(self, where: str, text: str) -> IpBlocked:
        """Record Easee's IP block, log it once at error level and return the exception to raise."""
        if self._blocked is None:
            self._blocked = (
                f"{where}: HTTP 403 from Easee: {text!r}. Easee has blocked this IP address for too many "
                "requests; pvcharge sends nothing more to the Easee cloud until it is restarted (contact "
                "Easee support; look for other tools using the Easee API from this network)"
            )
            self._log.error(
                "easee.ip_blocked",
                request=where,
                server_says=text,
                action="contact Easee support to lift the block, and check for other tools using the Easee "
                "API from this network (Home Assistant, evcc, scripts) that may be hammering it; restart "
                "pvcharge afterwards",
            )
        return IpBlocked(self._blocked)

    async def _send_once(
        self, budget: str, method: str, path: str, body: object, authorized: bool
    ) -> httpx.Response:
        where = self.where(method, path)
        if self._blocked is not None:
            raise IpBlocked(self._blocked)
        taken = self._budgets[budget]
        wait_s = taken.wait_s()
        if wait_s > 0:
            raise BudgetSpent(
                self.name,
                f"{where}: not sent, {budget} request budget spent for {wait_s:.0f} s",
                retry_after_s=wait_s,
            )
        headers = {"Authorization": f"Bearer {self._access.reveal()}"} if authorized and self._access else {}
        taken.begin()
        try:
            response = await self._http().request(method, path, json=body, headers=headers)
        finally:
            taken.end()
        if response.status_code >= 500:
            raise ServerError(response.status_code, self.scrub(response.text))
        return response

    async def _send(
        self, budget: str, method: str, path: str, body: object = None, *, authorized: bool = True
    ) -> httpx.Response:
        """One request with retries of timeouts, connection errors and 5xx; each attempt takes from the
        budget.

        Returns any other response (2xx, 4xx) for the caller to judge.  Raises ``BudgetSpent`` (budget
        spent before the first attempt, or 429: the budget then waits for ``Retry-After``),
        ``IpBlocked`` (403 "IP blocked", now or earlier), ``DeviceUnavailable`` after the retries (also
        when the budget runs out between them: the message gives the failure, not the budget),
        ``DeviceProtocolError`` for a TLS failure (not retried); no httpx exception escapes.
        """
        where = self.where(method, path)
        retrying = backoff_retrying(
            attempts=self._retries + 1,
            backoff_s=_BACKOFF_INITIAL_S,
            max_wait_s=_BACKOFF_MAX_S,
            retry=retry_transient,
            log=self._log,
            event="easee.retry",
            context=lambda state: {"request": f"{state.args[1]} {state.args[2]}"},
        )
        failed: list[httpx.TransportError | ServerError] = []  # failed attempts, for a budget spent meanwhile

        async def attempt(
            budget: str, method: str, path: str, body: object, authorized: bool
        ) -> httpx.Response:
            try:
                return await self._send_once(budget, method, path, body, authorized)
            except (httpx.TransportError, ServerError) as exc:
                failed.append(exc)
                raise

        try:
            response: httpx.Response = await retrying(attempt, budget, method, path, body, authorized)
        except BudgetSpent as exc:
            if not failed:
                raise
            raise self._unavailable(where, failed[-1], len(failed), f"; {exc.message}") from failed[-1]
        except (httpx.HTTPError, ServerError) as exc:
            raise self._unavailable(where, exc, len(failed)) from exc
        if response.status_code == 429:
            header = response.headers.get("Retry-After")
            wait_s = retry_after_s(header, self._clock(), DEFAULT_RETRY_AFTER_S)
            self._budgets[budget].hold_until(self._clock() + wait_s, refused=True)
            self._log.warning(
                "easee.rate_limited", request=where, retry_after=header, wait_s=round(wait_s, 1)
            )
            raise BudgetSpent(
                self.name,
                f"{where}: HTTP 429 Too Many Requests; nothing sent to this endpoint for {wait_s:.0f} s",
                retry_after_s=wait_s,
            )
        if response.status_code == 403 and "blocked" in response.text.lower():
            raise self._block(where, self.scrub(response.text))
        return response

    def _unavailable(
        self, where: str, exc: httpx.HTTPError | ServerError, attempts: int, note: str = ""
    ) -> DeviceError:
        """The error for a request that failed ``attempts`` times, the last with ``exc``
        (:func:`~pvcharge.retry.request_failed`, secrets scrubbed)."""
        return request_failed(
            self.name, where, exc, attempts=attempts, timeout_s=self._timeout_s, scrub=self.scrub, note=note
        )

    # -- tokens -----------------------------------------------------------------------------------

    async def _ensure_token(self) -> None:
        # one login or refresh at a time: read() and apply() may run at once (a slow read rolls over to
        # the next cycle), and a second refresh with the same refresh token would be refused
        async with self._auth_lock:
            if self._access is None:
                await self._login()
            elif self._clock() >= self._refresh_at:
                await self._reauthenticate()

    async def _reauthenticate(self) -> None:
        """Refresh the token; log in again when there is no refresh token or the refresh is refused."""
        if self._access is not None and self._refresh is not None:
            body = {"accessToken": self._access.reveal(), "refreshToken": self._refresh.reveal()}
            response = await self._send("auth", "POST", "/api/accounts/refresh_token", body, authorized=False)
            if response.status_code not in (400, 401):
                expires_in_s = self._store_tokens(response, "POST /api/accounts/refresh_token")
                self._log.debug("easee.refreshed", expires_in_s=expires_in_s)
                return
            self._log.debug("easee.refresh_refused", status=response.status_code)
        await self._login()

    async def _login(self) -> None:
        where = self.where("POST", "/api/accounts/login")
        self._access = self._refresh = None
        if self._login_refused is not None:
            until, message = self._login_refused
            if self._clock() < until:
                raise DeviceProtocolError(
                    self.name, f"{message}; next login attempt in {until - self._clock():.0f} s"
                )
        body = {"userName": self._username, "password": self._password.reveal()}
        response = await self._send("auth", "POST", "/api/accounts/login", body, authorized=False)
        if response.status_code in (400, 401, 403):
            message = (
                f"{where}: login refused (HTTP {response.status_code}): check charger.username and "
                f"charger.password ({self.scrub(response.text)})"
            )
            self._login_refused = (self._clock() + LOGIN_REFUSED_BACKOFF_S, message)
            raise DeviceProtocolError(self.name, message)
        expires_in_s = self._store_tokens(response, where)
        self._login_refused = None
        self._log.debug("easee.logged_in", expires_in_s=expires_in_s)

    def _store_tokens(self, response: httpx.Response, where: str) -> float:
        """Keep ``accessToken``/``refreshToken`` and return ``expiresIn`` in s; the token is refreshed
        ``REFRESH_MARGIN_S`` before it expires (at half its lifetime when that is under two minutes)."""
        self.check(response, where)
        payload = self.json(response, where)
        access = payload.get("accessToken") if isinstance(payload, dict) else None
        refresh = payload.get("refreshToken") if isinstance(payload, dict) else None
        expires_in = payload.get("expiresIn") if isinstance(payload, dict) else None
        if (
            not isinstance(access, str)
            or not access
            or isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or not math.isfinite(expires_in)
            or expires_in <= 0
        ):
            # the body is not quoted: it may hold a token
            raise DeviceProtocolError(self.name, f"{where}: reply lacks accessToken or a positive expiresIn")
        self._access = Secret(access)
        self._refresh = Secret(refresh) if isinstance(refresh, str) and refresh else None
        self._refresh_at = self._clock() + expires_in - min(REFRESH_MARGIN_S, expires_in / 2)
        return float(expires_in)
