"""The AlphaESS Open API emulator's gate (:class:`~pvcharge.sim.alphaess.AlphaEssEmulator`): the reply
envelope, the signature and timestamp checks and the account's request budget (reference ``meters.md``
§3.1, §3.2, §3.4; sources [A1]–[A3] as keyed there).

- Every reply is HTTP 200 with ``{"code", "msg", "expMsg", "data", "extra"}`` (:func:`envelope`; the
  ``msg`` of each code in :data:`MESSAGES`).
- Checks, in this order (:meth:`AlphaEssGate._check`): headers ``appId`` (6012), ``timeStamp`` (6011),
  ``sign`` (6010) present; the ``timeStamp`` a whole number within ±:data:`MAX_CLOCK_SKEW_S` of
  ``clock()`` (6006); ``sign`` = SHA-512 hex of appId + appSecret + timeStamp with the configured appId
  and appSecret (6007; an unknown appId fails the same way); the account's request budget (6053): at
  most ``requests_per_window`` requests, GETs and POSTs together and the refused ones included, inside
  any ``window_s`` (a request arriving exactly ``window_s`` after another still counts it), and, if set,
  POSTs at least ``min_write_interval_s`` apart.

The endpoints, their parameters and the wallbox are :mod:`pvcharge.sim.alphaess`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

MAX_CLOCK_SKEW_S = 300  #: accepted ``timeStamp`` window, ± s (meters.md §3.1 [A3])

#: ``msg`` of each error the emulator sends; 6053's is verbatim from alphaess-openAPI#7 (meters.md §3.2).
MESSAGES: dict[int, str] = {
    6001: "Parameter error",
    6002: "SN not bound to the user",
    6006: "Timestamp error",
    6007: "Sign verification error",
    6008: "Set failed",
    6010: "Sign is empty",
    6011: "timestamp is empty",
    6012: "AppId is empty",
    6017: "No operation permissions",
    6038: "System SN does not exist",
    6042: "System offline",
    6053: "The maximum number of requests has been reached",
}


def envelope(code: int, data: Any = None, exp_msg: str | None = None) -> web.Response:
    """HTTP 200 with the Open API's envelope: ``code`` (200: success), its ``msg``, ``expMsg``, ``data``."""
    msg = "Success" if code == 200 else MESSAGES[code]
    return web.json_response({"code": code, "msg": msg, "expMsg": exp_msg, "data": data, "extra": None})


class AlphaEssGate:
    """The account's checks: headers, timestamp, signature, request budget.

    The gate half of :class:`~pvcharge.sim.alphaess.AlphaEssEmulator`, which inherits it; its arguments
    and attributes (``too_fast``, ``peak_in_window``) are documented there.

    Args:
        app_id, app_secret: the credentials it accepts.
        window_s: the budget's window, in s.
        requests_per_window: requests allowed inside any ``window_s``, >= 1.
        min_write_interval_s: POSTs closer together than this are refused too, in s (0: no such rule).
        clock: Unix seconds, for the ``timeStamp`` window and the budget.

    Raises:
        ValueError: ``requests_per_window`` < 1.
    """

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str,
        window_s: float,
        requests_per_window: int,
        min_write_interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        if requests_per_window < 1:
            raise ValueError(f"requests_per_window must be >= 1, got {requests_per_window}")
        self.app_id = app_id
        self.window_s = window_s
        self.requests_per_window = requests_per_window
        self.min_write_interval_s = min_write_interval_s
        self.too_fast = 0
        self.peak_in_window = 0
        self._app_secret = app_secret
        self._clock = clock
        self._arrivals: deque[float] = deque()  #: arrival times of the requests inside the window
        self._last_write_s = -math.inf

    def _check(self, request: web.Request) -> web.Response | None:
        """The error envelope for a request failing the signature, timestamp or rate checks, else None."""
        app_id = request.headers.get("appId", "")
        timestamp = request.headers.get("timeStamp", "")
        signature = request.headers.get("sign", "")
        for code, value in ((6012, app_id), (6011, timestamp), (6010, signature)):
            if not value:
                return envelope(code)
        now = self._clock()
        if not timestamp.isdigit() or abs(int(timestamp) - now) > MAX_CLOCK_SKEW_S:
            return envelope(6006)
        expected = hashlib.sha512(f"{self.app_id}{self._app_secret}{timestamp}".encode()).hexdigest()
        if app_id != self.app_id or not hmac.compare_digest(signature, expected):
            return envelope(6007)
        arrivals = self._arrivals
        while arrivals and now - arrivals[0] > self.window_s:
            arrivals.popleft()
        too_fast = len(arrivals) >= self.requests_per_window
        arrivals.append(now)
        self.peak_in_window = max(self.peak_in_window, len(arrivals))
        if request.method == "POST":
            too_fast |= now - self._last_write_s < self.min_write_interval_s
            self._last_write_s = now
        if too_fast:
            self.too_fast += 1
            return envelope(6053)
        return None
