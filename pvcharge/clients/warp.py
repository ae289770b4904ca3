"""HTTP client of a Tinkerforge WARP2/WARP3 charger's local API: requests, retries, HTTP 429, and the
JSON documents of the endpoints the driver reads, decoded to typed fields.

Device facts (reference ``chargers.md`` §3; Tinkerforge esp32-firmware
``software/src/modules/{http,evse_common,meter}``; warp-charger ``api_doc_generator/evse.py``):

- ``GET <url>/<path>`` reads a state as JSON; writes go to ``<path>`` (or ``<path>_update``) by PUT or
  POST with a JSON body.  Replies: 200 (empty body on writes), 400 with a plain-text reason, 401 when
  users are configured and the HTTP Digest login is missing or wrong, 404 unknown path, 405 wrong method.
- ``evse/state``: ``iec61851_state`` 0..4 = A, B, C, D, E/F and ``allowed_charging_current`` in **mA**,
  the minimum over the active charging slots.
- ``meter/values.power`` in W (> 0 = the car draws), ``meter/phases.phases_active`` ``[L1, L2, L3]``
  booleans; both answer 404 on a box without a meter.
- ``evse/low_level_state``: ``phases_current`` 1 or 3, ``phases_requested``, ``phases_state`` 0..7
  (chargers.md §3.3); ``power_manager/state.external_control`` 0..3 (§3.3, §3.4).
- ``info/features``: a JSON list of the features the box offers (e.g. ``phase_switch``, ``cp_disconnect``).

The charger semantics (slot 8, phase switching, the wake-up) are in :mod:`pvcharge.chargers.warp`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from pvcharge.clients.tls import verify_for
from pvcharge.clients.urls import check_base_url
from pvcharge.errors import DeviceProtocolError, DeviceUnavailable, RateLimited
from pvcharge.readings import IecState, charging_power_w
from pvcharge.retry import (
    ServerError,
    backoff_retrying,
    not_json,
    request_failed,
    retry_after_s,
    retry_transient,
)
from pvcharge.settings import Secret, SettingError, setting

#: ``evse/low_level_state.phases_state`` 0..7 (chargers.md §3.3).
_PHASES_STATES = (
    "idle",
    "stopping charge",
    "contactor off",
    "CP disconnect",
    "switching",
    "CP reconnect",
    "waiting for the car",
    "contactor on",
)

#: ``iec61851_state`` code → IEC state; 4 is "E/F: error", reported as F (charger fault).
_IEC_STATES = (IecState.A, IecState.B, IecState.C, IecState.D, IecState.F)

#: wait after an HTTP 429 without a usable ``Retry-After``, in s (the firmware sends no 429; a proxy might).
DEFAULT_RETRY_AFTER_S = 30.0

#: backoff between attempts: 0.2 s, 0.4 s, 0.8 s … up to 2 s, each plus a random 0–0.2 s, in s.
_BACKOFF_INITIAL_S = 0.2
_BACKOFF_MAX_S = 2.0


@dataclass(frozen=True)
class LinkSettings:
    """The settings of the HTTP link to a WARP; the charger's ``Config``
    (:class:`pvcharge.chargers.warp.Config`) extends it (fields made with ``setting()``).

    Raises:
        SettingError: ``url`` is not ``http(s)://host[:port][/prefix]`` or holds credentials, or only
            one of ``username`` and ``password`` is set.
    """

    url: str = setting(doc="base URL of the charger's web interface, e.g. http://192.168.1.30")
    timeout_s: float = setting(5.0, doc="timeout of one HTTP request", unit="s", min=0.1, max=60.0)
    retries: int = setting(
        2, doc="extra attempts after a timeout, connection error or HTTP 5xx", min=0, max=10
    )
    username: str | None = setting(None, doc="login name, only if users are configured on the charger")
    password: Secret | None = setting(None, doc="login password (HTTP Digest), only with username")

    def __post_init__(self) -> None:
        check_base_url(self.url, example="http://192.168.1.30", login="username/password")
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise SettingError(missing, "username and password must be set together (HTTP Digest login)")


# -- the endpoints' JSON documents ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvseState:
    """The fields of ``evse/state`` pvcharge uses, in canonical units.

    Attributes:
        iec_state: IEC 61851 state (code 4 "E/F" → ``IecState.F``).
        allowed_current_a: ``allowed_charging_current`` / 1000, in A: the limit the car is offered.
    """

    iec_state: IecState
    allowed_current_a: float

    @property
    def connected(self) -> bool:
        """A vehicle is plugged in: state B, C or D."""
        return self.iec_state in (IecState.B, IecState.C, IecState.D)

    @property
    def charging(self) -> bool:
        """The vehicle draws current: state C or D."""
        return self.iec_state in (IecState.C, IecState.D)


def _field(payload: object, endpoint: str, name: str) -> Any:
    if not isinstance(payload, dict):
        raise ValueError(f"{endpoint}: expected a JSON object with {name!r}, got {type(payload).__name__}")
    if name not in payload:
        raise ValueError(f"{endpoint}: missing field {name!r}")
    return payload[name]


def _int_field(payload: object, endpoint: str, name: str) -> int:
    value = _field(payload, endpoint, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{endpoint}: field {name!r} must be an integer, got {value!r}")
    return value


def parse_evse_state(payload: object) -> EvseState:
    """Map the ``evse/state`` JSON object to canonical fields.

    Args:
        payload: decoded JSON, e.g. ``{"iec61851_state": 2, "allowed_charging_current": 16000, ...}``
            (``allowed_charging_current`` in mA); other members are ignored.

    Raises:
        ValueError: not an object, or ``iec61851_state`` is missing or not 0..4, or
            ``allowed_charging_current`` is missing, not an integer or negative.
    """
    code = _int_field(payload, "evse/state", "iec61851_state")
    if not 0 <= code < len(_IEC_STATES):
        raise ValueError(f"evse/state: field 'iec61851_state' must be 0..4, got {code}")
    allowed_ma = _int_field(payload, "evse/state", "allowed_charging_current")
    if allowed_ma < 0:
        raise ValueError(f"evse/state: field 'allowed_charging_current' must be >= 0 mA, got {allowed_ma}")
    return EvseState(iec_state=_IEC_STATES[code], allowed_current_a=allowed_ma / 1000)


def parse_meter_power(payload: object) -> float:
    """Charging power in W (>= 0) from the ``meter/values`` JSON object ``{"power": W, ...}``.

    Readings down to :data:`~pvcharge.readings.CHARGING_POWER_NOISE_W` below 0 W are meter noise and
    give 0 W (:func:`~pvcharge.readings.charging_power_w`).

    Raises:
        ValueError: ``power`` is missing, not a finite number, or further below 0 W (a meter wired in
            reverse).
    """
    power = _field(payload, "meter/values", "power")
    if not isinstance(power, int | float) or isinstance(power, bool) or not math.isfinite(power):
        raise ValueError(f"meter/values: field 'power' must be a finite number in W, got {power!r}")
    return charging_power_w(power, "meter/values: field 'power'")


def parse_active_phases(payload: object) -> int:
    """Number of phases carrying current, from ``meter/phases`` ``{"phases_active": [bool, bool, bool]}``.

    Raises:
        ValueError: ``phases_active`` is missing or not a list of three booleans.
    """
    active = _field(payload, "meter/phases", "phases_active")
    if not isinstance(active, list) or len(active) != 3 or not all(isinstance(a, bool) for a in active):
        raise ValueError(f"meter/phases: field 'phases_active' must be three booleans, got {active!r}")
    return sum(active)


@dataclass(frozen=True, slots=True)
class PhaseSwitchState:
    """The phase fields of a WARP3's ``evse/low_level_state`` (chargers.md §3.2, §3.3).

    Attributes:
        phases_current: phases the contactors are switched to, 1 or 3.
        phases_state: 0 idle; 1 stopping charge, 2 contactor off, 3 CP disconnect, 4 switching,
            5 CP reconnect, 6 waiting for the car, 7 contactor on: a switch in progress.
        phases_requested: while a switch is in progress the phases it switches to, else
            ``phases_current``.
    """

    phases_current: int
    phases_state: int
    phases_requested: int

    @property
    def switching(self) -> bool:
        """A switch is in progress (``phases_state`` 1–7)."""
        return self.phases_state != 0

    def describe(self) -> str:
        """E.g. ``"phases_state 4 (switching) to 1p"``, for messages."""
        name = _PHASES_STATES[self.phases_state]
        return f"phases_state {self.phases_state} ({name}) to {self.phases_requested}p"


def parse_low_level_state(payload: object) -> PhaseSwitchState:
    """Map ``evse/low_level_state`` ``{"phases_current": 1|3, "phases_state": 0..7, "phases_requested":
    1|3, ...}`` to :class:`PhaseSwitchState`; ``phases_requested`` is read only while ``phases_state``
    is not 0, other members are ignored.

    Raises:
        ValueError: not an object, or a field is missing or out of range.
    """
    endpoint = "evse/low_level_state"
    current = _int_field(payload, endpoint, "phases_current")
    if current not in (1, 3):
        raise ValueError(f"{endpoint}: field 'phases_current' must be 1 or 3, got {current}")
    state = _int_field(payload, endpoint, "phases_state")
    if not 0 <= state < len(_PHASES_STATES):
        raise ValueError(f"{endpoint}: field 'phases_state' must be 0..7, got {state}")
    requested = current
    if state != 0:
        requested = _int_field(payload, endpoint, "phases_requested")
        if requested not in (1, 3):
            raise ValueError(
                f"{endpoint}: field 'phases_requested' must be 1 or 3 while switching, got {requested}"
            )
    return PhaseSwitchState(phases_current=current, phases_state=state, phases_requested=requested)


def parse_external_control(payload: object) -> int:
    """``power_manager/state.external_control`` (0 available, 1 nothing requested yet, 2 unavailable,
    3 switching; chargers.md §3.3) from ``{"config_error_flags": ..., "external_control": n}``.

    Raises:
        ValueError: not an object, or ``external_control`` is missing or not 0..3.
    """
    code = _int_field(payload, "power_manager/state", "external_control")
    if not 0 <= code <= 3:
        raise ValueError(f"power_manager/state: field 'external_control' must be 0..3, got {code}")
    return code


# -- HTTP -------------------------------------------------------------------------------------------


def _empty_or_json(response: httpx.Response) -> bool:
    """The body is empty or JSON (what the firmware sends)."""
    if not response.content.strip():
        return True
    try:
        response.json()
    except ValueError:
        return False
    return True


class WarpClient:
    """The HTTP API of one WARP box: one lazily opened keep-alive connection, retries, HTTP 429.

    Requests go one after another over one keep-alive connection: the ESP32's web server answers one
    request at a time, so parallel requests would only cost it sockets.  Each is tried ``1 + retries``
    times on a timeout, a connection error, a reply cut off or HTTP 5xx (not on a TLS failure).  After
    an HTTP 429 (the firmware sends none, a proxy in front of it might) nothing is sent to the box
    before its ``Retry-After``.  Proxies from the environment do not apply (the box is on the LAN).

    Args:
        settings: the validated link settings.
        name: the configured device name, used in every error.
        clock: seconds on the daemon's clock, for ``Retry-After``.
        log: a structlog logger bound to the device, for retries and HTTP 429.
        on_connection_lost: called when a request gets no answer (the box may reboot).
        transport: an httpx transport to use instead of the network (tests).

    Attributes:
        base_url: the configured ``url`` with one trailing ``/``, for messages.
    """

    def __init__(
        self,
        settings: LinkSettings,
        *,
        name: str,
        clock: Callable[[], float],
        log: Any,
        on_connection_lost: Callable[[], None],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = settings.url.rstrip("/") + "/"
        self._settings = settings
        self._clock = clock
        self._log = log
        self._on_connection_lost = on_connection_lost
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._quiet_until = -math.inf  # an HTTP 429 asked for no request before this clock time

    async def close(self) -> None:
        """Close the connection pool; the next request opens a new one. Safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            auth = None
            if self._settings.username is not None and self._settings.password is not None:
                auth = httpx.DigestAuth(self._settings.username, self._settings.password.reveal())
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                auth=auth,
                timeout=self._settings.timeout_s,
                transport=self._transport,
                verify=verify_for(self.base_url, trust_env=False),  # one shared context (clients/tls.py)
                trust_env=False,  # the charger is on the LAN: no proxies from the environment
            )
        return self._client

    async def _send_once(self, method: str, path: str, body: object) -> httpx.Response:
        response = await self._http().request(method, path, json=body)
        if response.status_code >= 500:
            raise ServerError.of(response)
        return response

    async def request(
        self, method: str, path: str, body: object = None, *, refusal_ok: bool = False
    ) -> httpx.Response | None:
        """Send one request, retrying timeouts, connection errors and HTTP 5xx (not TLS failures).

        Returns the 2xx response (or, with ``refusal_ok``, a 400 one), or ``None`` for 404; a 2xx
        answer to a write whose body is neither empty nor JSON (an HTML page) is a
        ``DeviceProtocolError``.  Raises ``RateLimited`` on HTTP 429 and, without sending, until
        its ``Retry-After``; ``DeviceUnavailable`` or ``DeviceProtocolError`` otherwise; no httpx
        exception escapes.  A request that gets no answer calls ``on_connection_lost``.
        """
        where = f"{method} {self.base_url}{path}"
        wait_s = self._quiet_until - self._clock()
        if wait_s > 0:
            raise RateLimited(
                self.name,
                f"{where}: not sent: HTTP 429 asked for no request for {wait_s:.0f} s more",
                retry_after_s=wait_s,
            )
        attempts = self._settings.retries + 1
        retrying = backoff_retrying(
            attempts=attempts,
            backoff_s=_BACKOFF_INITIAL_S,
            max_wait_s=_BACKOFF_MAX_S,
            retry=retry_transient,
            log=self._log,
            event="warp.retry",
            context=lambda state: {"request": f"{state.args[0]} {state.args[1]}"},
        )
        try:
            response: httpx.Response = await retrying(self._send_once, method, path, body)
        except (httpx.HTTPError, ServerError) as exc:
            error = request_failed(
                self.name, where, exc, attempts=attempts, timeout_s=self._settings.timeout_s
            )
            if isinstance(error, DeviceUnavailable):  # no answer: not a TLS failure, not a bad reply
                self._on_connection_lost()
            raise error from exc
        if response.status_code == 429:
            header = response.headers.get("Retry-After")
            wait_s = retry_after_s(header, self._clock(), DEFAULT_RETRY_AFTER_S)
            self._quiet_until = self._clock() + wait_s
            self._log.warning("warp.rate_limited", request=where, retry_after=header, wait_s=round(wait_s, 1))
            raise RateLimited(
                self.name,
                f"{where}: HTTP 429 Too Many Requests; nothing sent to the box for {wait_s:.0f} s "
                f"(Retry-After: {header})",
                retry_after_s=wait_s,
            )
        status = response.status_code
        if status == 404:
            return None
        if 200 <= status < 300 and method != "GET" and not _empty_or_json(response):
            # the firmware answers a write with an empty body: this came from something else
            raise DeviceProtocolError(
                self.name,
                f"{where}: HTTP {status} but {not_json(response.text)}; the write may not have reached "
                "the box",
            )
        if 200 <= status < 300 or (status == 400 and refusal_ok):
            return response
        if status == 401:
            raise DeviceProtocolError(
                self.name, f"authentication failed: check charger.username/password ({where}: HTTP 401)"
            )
        reason = response.text.strip()[:200]
        if status == 400:
            raise DeviceProtocolError(self.name, f"{where}: rejected (HTTP 400): {reason}")
        raise DeviceProtocolError(self.name, f"{where}: unexpected HTTP {status}: {reason}")

    def not_found(self, method: str, path: str, hint: str = "") -> DeviceProtocolError:
        """The error for an endpoint this box does not have (:meth:`request` returned ``None``: HTTP 404),
        naming the request and, after a semicolon, ``hint`` (what it means for this endpoint)."""
        return DeviceProtocolError(
            self.name, f"{method} {self.base_url}{path}: not found (HTTP 404)" + (f"; {hint}" if hint else "")
        )

    async def get_json(self, path: str) -> object | None:
        """GET ``path`` and decode its JSON; ``None`` when the box has no such endpoint (404).

        Raises:
            DeviceProtocolError: the body is not JSON; else as :meth:`request`.
        """
        response = await self.request("GET", path)
        if response is None:
            return None
        try:
            payload: object = response.json()
        except ValueError as exc:
            raise DeviceProtocolError(
                self.name, f"GET {self.base_url}{path}: malformed JSON ({not_json(response.text)})"
            ) from exc
        return payload

    async def has_feature(self, feature: str) -> bool:
        """GET ``info/features`` (a JSON list): whether it lists ``feature``; ``False`` when the box has no
        such endpoint or it is not a list.  Raises as :meth:`get_json`."""
        features = await self.get_json("info/features")
        return isinstance(features, list) and feature in features
