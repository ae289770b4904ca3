"""AlphaESS Open API client, shared by the AlphaESS meter and the AlphaESS wallbox charger.

Device facts (project reference ``meters.md`` §3, which ``chargers.md`` §2.1 refers to for the
wallbox; sources: [A1] alphaess-developer/alphacloud_open_api ``alpha_api_demo.py`` and Postman
collection, [A2] CharlesGillanders/alphaess-openAPI, [A3] springfall2008/batpred ``alphaess_const.py``,
[A4] CharlesGillanders/homeassistant-alphaESS):

- Base URL ``https://openapi.alphaess.com/api``; ``GET <base>/<path>?<params>`` reads,
  ``POST <base>/<path>`` with a JSON body writes (§3.1 [A1, A2, A3]).
- Every request carries the headers ``appId``, ``timeStamp`` (Unix seconds as a decimal string) and
  ``sign`` = lowercase hex SHA-512 of ``appId + appSecret + timeStamp`` (§3.1 [A1]).  The server
  accepts a ``timeStamp`` within ±300 s of its own clock, otherwise it answers 6006 (§3.1 [A3]).
- Every reply, errors included, is HTTP 200 with the envelope
  ``{"code": 200, "msg": "Success", "expMsg": null, "data": {…}, "extra": null}``; an error has another
  ``code`` and ``data: null``; some endpoints say ``info`` instead of ``msg``; ``expMsg`` names a bad
  parameter (§3.2 [A2, A3]).  The codes are :data:`RETURN_CODES`.
- No rate limit is published; 6053 ("The maximum number of requests has been reached") answers a
  client that asks too often, and clients poll no faster than every 10 s (§3.4 [A2, A4]).

The app secret goes into :func:`sign` only: it never appears in a log line, an exception or a repr.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from pvcharge.errors import DeviceError, DeviceProtocolError, DeviceUnavailable, RateLimited
from pvcharge.retry import (
    ServerError,
    backoff_retrying,
    describe,
    not_json,
    parse_retry_after,
    retry_transient,
    tls_failure,
    tls_message,
)
from pvcharge.settings import Secret, SettingError, setting

_log = structlog.get_logger(__name__)

DEFAULT_URL = "https://openapi.alphaess.com/api"  #: meters.md §3.1 [A1]

SUCCESS = 200  #: ``code`` of a successful reply (meters.md §3.2)
TOO_FAST = 6053  #: ``code`` of a rate-limited request (meters.md §3.2, §3.4)
CLOCK_SKEW = 6006  #: ``code`` of a ``timeStamp`` more than 300 s off the server's clock (meters.md §3.1)
SYSTEM_OFFLINE = 6042  #: ``code`` of a system the cloud has lost contact with (meters.md §3.2)
MAX_CLOCK_SKEW_S = 300  #: the server's ``timeStamp`` window, ± s (meters.md §3.1 [A3])

#: every return code the reference documents → its meaning (meters.md §3.2 [A2, A3]; chargers.md §2.1).
RETURN_CODES: dict[int, str] = {
    6001: "Parameter error",
    6002: "SN not bound to the user",
    6003: "You have bound this SN",
    6004: "CheckCode error",
    6005: "appId not bound to the SN",
    6006: "Timestamp error (clock skew)",
    6007: "Sign verification error",
    6008: "Set failed",
    6009: "Whitelist verification failed",
    6010: "Sign is empty",
    6011: "timestamp is empty",
    6012: "AppId is empty",
    6016: "Data does not exist or deleted",
    6017: "No operation permission (undocumented)",
    6026: "Internal error",
    6029: "Operation failed",
    6038: "System SN does not exist",
    6042: "System offline",
    6046: "Verification code error",
    6053: "Request too fast / max requests reached",
    10001: "Malformed request body (undocumented)",
}

#: codes that mean a wrong or missing credential or system serial → what to check.
_CREDENTIAL_HINTS: dict[int, str] = {
    6002: "the system serial (sysSn) {sys_sn} is not bound to this account: check sys_sn (sysSn) and that "
    "the system is bound to appId {app_id} on open.alphaess.com",
    6005: "appId {app_id} is not bound to sysSn {sys_sn}: check app_id (appId) and sys_sn (sysSn); bind the "
    "system (SN + CheckCode) on open.alphaess.com",
    6007: "signature rejected: check app_id (appId {app_id}) and app_secret (appSecret) against "
    "open.alphaess.com",
    6010: "the request carried no sign: check that app_secret (appSecret) is set; a proxy may strip headers",
    6011: "the request carried no timeStamp: a proxy may strip headers; check app_id (appId {app_id}) "
    "and app_secret (appSecret)",
    6012: "the request carried no appId: check that app_id (appId) is set; a proxy may strip headers",
}


def sign(app_id: str, app_secret: str, timestamp: str) -> str:
    """The ``sign`` header: lowercase hex SHA-512 of ``app_id + app_secret + timestamp``.

    Source: meters.md §3.1 [A1] (``alpha_api_demo.py``).

    Args:
        app_id: the developer appId.
        app_secret: the revealed appSecret (never log it).
        timestamp: the ``timeStamp`` header sent with it: Unix seconds as a decimal string.

    Returns:
        128 lowercase hex digits.
    """
    return hashlib.sha512(f"{app_id}{app_secret}{timestamp}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded reply envelope (meters.md §3.2).

    Attributes:
        code: 200 on success, otherwise a return code (:data:`RETURN_CODES`).
        msg: the server's message (``msg``, or ``info`` on the periodic-charge endpoints), ``""`` if none.
        exp_msg: ``expMsg``: which parameter was wrong, where the server says so.
        data: the payload: a dict or list on success, ``None`` on errors.
    """

    code: int
    msg: str
    exp_msg: str | None
    data: Any

    @property
    def ok(self) -> bool:
        """The request succeeded: ``code == 200``."""
        return self.code == SUCCESS

    @property
    def meaning(self) -> str:
        """The documented meaning of :attr:`code` (:data:`RETURN_CODES`), or ``"undocumented code"``."""
        if self.ok:
            return "Success"
        return RETURN_CODES.get(self.code, "undocumented code")


def parse_envelope(payload: object) -> Envelope:
    """Decode a reply body (already parsed from JSON) into an :class:`Envelope`.

    Raises:
        ValueError: not a JSON object, or ``code`` is missing or not an integer.
    """
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object with 'code', got {type(payload).__name__}")
    code = payload.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise ValueError(f"envelope field 'code' must be an integer, got {code!r}")
    msg = payload.get("msg", payload.get("info"))
    exp_msg = payload.get("expMsg")
    return Envelope(
        code=code,
        msg=str(msg) if msg is not None else "",
        exp_msg=str(exp_msg) if exp_msg is not None else None,
        data=payload.get("data"),
    )


class AlphaEssClient:
    """Signed requests to the AlphaESS Open API, with retries and a 6053 backoff.

    Transport failures (connection refused or dropped, timeouts, a reply cut off) and HTTP 5xx are
    tried ``1 + retries`` times with exponential backoff (``backoff_s``, doubling, plus up to
    ``backoff_s`` of jitter); a TLS failure is not retried.  A 6053 reply is not retried: the client
    sends nothing for ``rate_limit_backoff_s``, which doubles on each further 6053 up to
    ``rate_limit_backoff_max_s`` and resets on the next success.  An HTTP 429 (which the Open API is
    not documented to send, but a gateway in front of it may) likewise stops all requests, for its
    ``Retry-After`` (the 6053 backoff without one).  Proxy settings from the environment
    (``HTTPS_PROXY``, ``NO_PROXY``) apply, and TLS certificates are always verified against the
    system's CAs (``SSL_CERT_FILE`` adds a private one): this is a cloud API.

    Args:
        base_url: the API base, e.g. ``https://openapi.alphaess.com/api``.
        app_id: the developer appId (open.alphaess.com).
        app_secret: the developer appSecret; revealed only to compute :func:`sign`.
        name: the device name put on errors and logs.
        timeout_s: timeout of one HTTP request, in s.
        retries: extra attempts after a transport error, timeout or HTTP 5xx.
        backoff_s: wait before the first retry, in s.
        rate_limit_backoff_s: wait after a 6053 before the next request, in s (the floor of the backoff).
        rate_limit_backoff_max_s: the longest 6053 backoff, in s.
        clock: Unix seconds, for the ``timeStamp`` header and the 6053 backoff.

    Attributes:
        name: the device name.
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
    ) -> None:
        self.name = name
        self._base_url = base_url.rstrip("/") + "/"
        self._app_id = app_id
        self._app_secret = app_secret
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._rate_limit_backoff_s = rate_limit_backoff_s
        self._rate_limit_backoff_max_s = rate_limit_backoff_max_s
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._rate_limited_until = -float("inf")
        self._rate_limit_streak = 0  #: 6053 replies since the last success
        self._rate_limited_by = f"code {TOO_FAST}"  #: what started the backoff, for messages
        self._log = _log.bind(device=name)

    def __repr__(self) -> str:
        return f"AlphaEssClient({self._base_url!r}, app_id={self._app_id!r}, name={self.name!r})"

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``GET <base>/<path>?<params>`` and return the envelope's ``data``.

        Args:
            path: the endpoint, e.g. ``"getLastPowerData"``.
            params: query parameters, e.g. ``{"sysSn": "AL2002321010043"}``.

        Returns:
            ``data`` of a ``code == 200`` reply: a dict, a list or ``None``, as the endpoint defines.

        Raises:
            RateLimited: 6053 or HTTP 429, or still backing off from one (then nothing is sent).
            DeviceUnavailable: no answer after retries (connection refused or closed, timeout, reply
                cut off, HTTP 5xx), or 6042 (system offline).
            DeviceProtocolError: any other return code (6006 clock skew, 6007 signature, …), another HTTP
                status, a TLS failure (an untrusted certificate), or a body that is not a JSON envelope;
                the message names the code and its meaning.
        """
        return await self._call("GET", path, params=params)

    async def post(self, path: str, body: Mapping[str, Any]) -> Any:
        """``POST <base>/<path>`` with ``body`` as JSON; returns and raises as :meth:`get`."""
        return await self._call("POST", path, body=body)

    async def close(self) -> None:
        """Close the HTTP connection pool; the next request opens a new one. Safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- HTTP -------------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self._base_url, timeout=self._timeout_s)
        return self._client

    def _headers(self) -> dict[str, str]:
        timestamp = str(int(self._clock()))
        return {
            "appId": self._app_id,
            "timeStamp": timestamp,
            "sign": sign(self._app_id, self._app_secret.reveal(), timestamp),
        }

    async def _send_once(
        self, method: str, path: str, params: Mapping[str, str] | None, body: Mapping[str, Any] | None
    ) -> httpx.Response:
        # Signed per attempt, so a retry carries a fresh timeStamp.
        response = await self._http().request(method, path, params=params, json=body, headers=self._headers())
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
    ) -> Any:
        where = f"{method} {self._base_url}{path}"
        left_s = self._rate_limited_until - self._clock()
        if left_s > 0:
            raise RateLimited(
                self.name,
                f"{where}: not sent, backing off {left_s:.0f} s more after {self._rate_limited_by} "
                "(too many requests)",
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
        try:
            response: httpx.Response = await retrying(self._send_once, method, path, params, body)
        except httpx.TimeoutException as exc:
            raise DeviceUnavailable(
                self.name, f"{where}: no answer within {self._timeout_s:g} s ({attempts} attempts)"
            ) from exc
        except (httpx.TransportError, ServerError) as exc:
            tls = tls_failure(exc)
            if tls is not None:
                raise DeviceProtocolError(self.name, tls_message(where, tls)) from exc
            raise DeviceUnavailable(self.name, f"{where}: {describe(exc)} ({attempts} attempts)") from exc
        except httpx.HTTPError as exc:
            raise DeviceProtocolError(self.name, f"{where}: {describe(exc)}") from exc
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
            self._rate_limit_streak = 0
            return envelope.data
        raise self._error(where, envelope, params or body or {})

    def _rate_limit_wait_s(self) -> float:
        """The next 6053 backoff: ``rate_limit_backoff_s`` doubled per 6053 since the last success."""
        doublings = min(self._rate_limit_streak, 20)  # bounded: 2**n must not overflow a float
        return float(min(self._rate_limit_backoff_s * 2**doublings, self._rate_limit_backoff_max_s))

    def _too_many_requests(self, where: str, header: str | None) -> RateLimited:
        """HTTP 429: send nothing before its ``Retry-After`` (without one, for the 6053 backoff)."""
        wait_s = parse_retry_after(header, self._clock())
        if wait_s is None:
            wait_s = self._rate_limit_wait_s()
            self._rate_limit_streak += 1
        self._rate_limited_until = self._clock() + wait_s
        self._rate_limited_by = "HTTP 429"
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
            wait_s = self._rate_limit_wait_s()
            self._rate_limit_streak += 1
            self._rate_limited_until = self._clock() + wait_s
            self._rate_limited_by = f"code {TOO_FAST}"
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
        if code in _CREDENTIAL_HINTS:
            hint = _CREDENTIAL_HINTS[code].format(app_id=self._app_id, sys_sn=sys_sn)
            return DeviceProtocolError(self.name, f"{where}: {said}: {hint}")
        return DeviceProtocolError(self.name, f"{where}: AlphaESS error {said}")


def client_for(settings: OpenApiSettings, *, name: str, clock: Callable[[], float]) -> AlphaEssClient:
    """The client a meter or wallbox driver uses, built from its Open API settings."""
    return AlphaEssClient(
        settings.url,
        settings.app_id,
        settings.app_secret,
        name=name,
        timeout_s=settings.timeout_s,
        retries=settings.retries,
        backoff_s=settings.backoff_s,
        clock=clock,
    )


def check_settings(url: str, sys_sn: str, app_id: str) -> None:
    """Validate the settings every Open API device shares (for the drivers' ``Config.__post_init__``).

    Raises:
        SettingError: ``sys_sn`` or ``app_id`` is empty, or ``url`` is not ``http(s)://host[/prefix]`` or
            carries a login.
    """
    for key, value in (("sys_sn", sys_sn), ("app_id", app_id)):
        if not value.strip():
            raise SettingError(key, "must not be empty (see open.alphaess.com)")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise SettingError("url", f"{exc}; expected e.g. {DEFAULT_URL}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SettingError("url", f"expected e.g. {DEFAULT_URL}, got {url!r}")
    if parsed.userinfo:
        raise SettingError("url", "the Open API takes no login in the URL; set app_id/app_secret")


@dataclass(frozen=True)
class OpenApiSettings:
    """The settings every AlphaESS Open API device shares; the meter's and the wallbox's ``Config``
    extend it (fields made with ``setting()``, validated in ``__post_init__``).

    Raises:
        SettingError: see :func:`check_settings`.
    """

    sys_sn: str = setting(doc="serial number (sysSn) of the AlphaESS system, e.g. AL2002321010043")
    app_id: str = setting(doc="developer appId from open.alphaess.com, after binding the system")
    app_secret: Secret = setting(
        doc="developer appSecret from open.alphaess.com (or app_secret_file: PATH to a file holding it)"
    )
    url: str = setting(DEFAULT_URL, doc="base URL of the AlphaESS Open API")
    poll_interval_s: float = setting(
        10.0,
        doc="ask the cloud at most this often; reads in between return the last reading with its timestamp",
        unit="s",
        min=10,
        max=3600,
    )
    timeout_s: float = setting(10.0, doc="timeout of one HTTP request", unit="s", min=0.1, max=120)
    retries: int = setting(
        2, doc="extra attempts after a timeout, connection error or HTTP 5xx", min=0, max=10
    )
    backoff_s: float = setting(
        1.0,
        doc="wait before the first retry; doubles per retry, plus up to as much jitter",
        unit="s",
        min=0,
        max=30,
    )

    def __post_init__(self) -> None:
        check_settings(self.url, self.sys_sn, self.app_id)
