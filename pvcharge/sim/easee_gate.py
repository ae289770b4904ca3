"""The Easee cloud emulator's gate (:class:`~pvcharge.sim.easee.EaseeEmulator`): the account and its tokens,
and the rate limits (reference ``chargers.md`` §1.1 and §1.6; sources [E-auth], [GEN], [P] as keyed there).

- ``POST /api/accounts/login {"userName", "password"}`` → 200 ``{"accessToken", "expiresIn",
  "accessClaims", "tokenType": "Bearer", "refreshToken"}``; 400 for a wrong login (as the cloud answers
  it: pyeasee raises ``BadRequestException``) or a malformed body.
  ``POST /api/accounts/refresh_token {"accessToken", "refreshToken"}`` → a new pair (the old pair
  stops working); 401 for an unknown, used or revoked pair (§1.1).
- Every other call needs ``Authorization: Bearer <accessToken>``; 401 when it is missing, unknown or
  older than ``token_lifetime_s``.
- Rate limits (§1.6): a sliding 60-s window per endpoint (:meth:`EaseeGate._limited`); over it: 429 with
  ``Retry-After`` in whole seconds until the window has room.  After ``block_after_429s`` 429 answers
  within :data:`BLOCK_WINDOW_S`, every request answers 403 with :data:`BLOCKED_TEXT` for the rest of the
  emulator's life.  Which endpoints share a window, and their limits, is :mod:`pvcharge.sim.easee`'s.

The routes, the request bodies and the charger behind them are :mod:`pvcharge.sim.easee` and
:mod:`pvcharge.sim.easee_charger`.
"""

from __future__ import annotations

import json
import math
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

BLOCK_WINDOW_S = 300.0  #: "sustained abuse": block_after_429s 429 answers within this many seconds
WINDOW_S = 60.0  #: rate-limit window, s
#: HTTP 403 body once the IP is blocked (chargers.md §1.6 [evcc#3835; easee_hass#117]).
BLOCKED_TEXT = (
    "Too many requests, please check your error handling and backoff logic. "
    "Your IP is registered in our systems and is now blocked."
)
#: the text of the cloud's 400 for a wrong login (unverified wording; the status is what clients act on).
WRONG_LOGIN_TITLE = "Invalid username or password"


def error(status: int, title: str, headers: dict[str, str] | None = None) -> web.Response:
    """The cloud's error reply: ``{"title", "status"}`` with that HTTP status."""
    return web.json_response({"title": title, "status": status}, status=status, headers=headers)


class EaseeGate:
    """Who may in and how often: the account's login and tokens, the sliding rate windows, the IP block.

    The gate half of :class:`~pvcharge.sim.easee.EaseeEmulator`, which inherits it; its arguments and
    attributes (``count_429``, ``issued_tokens``) are documented there.

    Args:
        username, password: the account login.
        token_lifetime_s: ``expiresIn`` of access tokens, s on ``clock``.
        block_after_429s: this many 429 answers within :data:`BLOCK_WINDOW_S` block the IP (403).
    """

    clock: Callable[[], float]  #: the serving emulator's (Unix seconds)

    def __init__(
        self, *, username: str, password: str, token_lifetime_s: float, block_after_429s: int
    ) -> None:
        self.token_lifetime_s = token_lifetime_s
        self.block_after_429s = block_after_429s
        self.count_429 = 0
        self.issued_tokens: list[str] = []
        self._username = username
        self._password = password
        self._access: dict[str, float] = {}  # access token → expiry on clock
        self._refresh: dict[str, str] = {}  # refresh token → its access token
        self._windows: dict[str, deque[float]] = {}  # endpoint → times of requests let through
        self._recent_429: deque[float] = deque()
        self._blocked = False

    # -- login and tokens -------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Invalidate every access and refresh token now: the next call answers 401."""
        self._access.clear()
        self._refresh.clear()

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = self._access.get(token) if scheme.lower() == "bearer" else None
        return expiry is not None and self.clock() < expiry

    async def _json(self, request: web.Request) -> Any:
        """The request body as JSON (login, refresh and the writes read it); ``ValueError`` if not."""
        try:
            return json.loads(await request.text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"malformed JSON: {exc.msg}") from exc

    def _tokens(self) -> web.Response:
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._access[access] = self.clock() + self.token_lifetime_s
        self._refresh[refresh] = access
        self.issued_tokens += [access, refresh]
        return web.json_response(
            {
                "accessToken": access,
                "expiresIn": self.token_lifetime_s,
                "accessClaims": ["User"],
                "tokenType": "Bearer",
                "refreshToken": refresh,
            }
        )

    async def _login(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
        except ValueError as exc:
            return error(400, str(exc))
        if not isinstance(body, dict) or not {"userName", "password"} <= body.keys():
            return error(400, "expected userName and password")
        if body["userName"] != self._username or body["password"] != self._password:
            return error(400, WRONG_LOGIN_TITLE)
        return self._tokens()

    async def _refresh_token(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
        except ValueError as exc:
            return error(400, str(exc))
        if not isinstance(body, dict):
            return error(400, "expected accessToken and refreshToken")
        refresh, access = body.get("refreshToken"), body.get("accessToken")
        if (
            not isinstance(refresh, str)
            or not isinstance(access, str)
            or self._refresh.get(refresh) != access
        ):
            return error(401, "Invalid refresh token")
        del self._refresh[refresh]
        self._access.pop(access, None)
        return self._tokens()

    # -- rate limits ------------------------------------------------------------------------------

    def _limited(self, endpoint: str, per_min: int) -> web.Response | None:
        """Count a request in ``endpoint``'s sliding window; a 429 response when it is full."""
        now = self.clock()
        window = self._windows.setdefault(endpoint, deque())
        while window and window[0] <= now - WINDOW_S:
            window.popleft()
        if len(window) < per_min:
            window.append(now)
            return None
        self.count_429 += 1
        self._recent_429.append(now)
        while self._recent_429[0] <= now - BLOCK_WINDOW_S:
            self._recent_429.popleft()
        if len(self._recent_429) >= self.block_after_429s:
            self._blocked = True
        retry_after = max(1, math.ceil(window[0] + WINDOW_S - now))
        return error(429, "Too Many Requests", headers={"Retry-After": str(retry_after)})

    def _blocked_reply(self) -> web.Response:
        """HTTP 403 with :data:`BLOCKED_TEXT`: the answer to every request once the IP is blocked."""
        return web.Response(status=403, text=BLOCKED_TEXT)
