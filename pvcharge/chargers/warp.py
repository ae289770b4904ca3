"""Tinkerforge WARP2/WARP3 charger over its local HTTP API.

Device facts (reference ``chargers.md`` §3; Tinkerforge esp32-firmware
``software/src/modules/{http,evse_common,meter}``; warp-charger ``api_doc_generator/evse.py``):

- ``GET <url>/<path>`` reads a state as JSON; writes go to ``<path>`` (or ``<path>_update``) by PUT or
  POST with a JSON body.  Replies: 200 (empty body on writes), 400 with a plain-text reason, 401 when
  users are configured and the HTTP Digest login is missing or wrong, 404 unknown path, 405 wrong method.
- ``evse/state``: ``iec61851_state`` 0..4 = A, B, C, D, E/F and ``allowed_charging_current`` in **mA**,
  the minimum over the active charging slots.
- ``evse/external_current`` ``{"current": mA}``: slot 8, meant for frequent PV control; 0 blocks,
  otherwise 6000..32000.  Firmware before Nov 2024 only honours it after
  ``evse/external_enabled {"enabled": true}``.
- ``meter/values.power`` in W (> 0 = the car draws), ``meter/phases.phases_active`` ``[L1, L2, L3]``
  booleans; both answer 404 on a box without a meter.

Phase switching (WARP3 ``power_manager/external_control``) is not implemented yet, so the driver
reports ``phase_switching=False`` and ignores ``ChargerCommand.phases``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from pvcharge.errors import DeviceProtocolError, DeviceUnavailable
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading, IecState
from pvcharge.settings import Secret, SettingError, setting

_log = structlog.get_logger(__name__)

#: lowest non-zero external current the box accepts, in mA (chargers.md §3.2, IEC 61851: 6 A).
MIN_CURRENT_MA = 6000
#: highest external current, in mA (chargers.md §3.2).
MAX_CURRENT_MA = 32000

CAPABILITIES = ChargerCapabilities(
    current_step_a=0.001,
    min_current_a=MIN_CURRENT_MA / 1000,
    max_current_a=MAX_CURRENT_MA / 1000,
    phase_switching=False,
    on_off_only=False,
)

#: ``iec61851_state`` code → IEC state; 4 is "E/F: error", reported as F (charger fault).
_IEC_STATES = (IecState.A, IecState.B, IecState.C, IecState.D, IecState.F)

#: ``meter/values.power`` down to this far below 0 W is meter noise and reads as 0 W.
NEGATIVE_POWER_TOLERANCE_W = 50.0

#: backoff between attempts: 0.2 s, 0.4 s, 0.8 s … up to 2 s, each plus a random 0–0.2 s, in s.
_BACKOFF_INITIAL_S = 0.2
_BACKOFF_MAX_S = 2.0


@dataclass(frozen=True)
class Config:
    """Settings of one WARP charger (the ``charger:`` section with ``type: warp``).

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
        try:
            url = httpx.URL(self.url)
        except httpx.InvalidURL as exc:
            raise SettingError("url", f"{exc}; expected e.g. http://192.168.1.30") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise SettingError("url", f"expected http://host or https://host, got {self.url!r}")
        if url.userinfo:
            raise SettingError("url", "put the login into username/password, not into the URL")
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise SettingError(missing, "username and password must be set together (HTTP Digest login)")


def create(config: Config, *, name: str, clock: Callable[[], float]) -> WarpCharger:
    """Build the driver; no I/O until the first :meth:`WarpCharger.read` or :meth:`WarpCharger.apply`."""
    return WarpCharger(config, name=name, clock=clock)


# -- pure mapping ---------------------------------------------------------------------------------


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

    Readings down to ``-NEGATIVE_POWER_TOLERANCE_W`` are meter noise and give 0 W.

    Raises:
        ValueError: ``power`` is missing, not a finite number, or further below 0 W (a meter wired in
            reverse).
    """
    power = _field(payload, "meter/values", "power")
    if not isinstance(power, int | float) or isinstance(power, bool) or not math.isfinite(power):
        raise ValueError(f"meter/values: field 'power' must be a finite number in W, got {power!r}")
    if power < -NEGATIVE_POWER_TOLERANCE_W:
        raise ValueError(
            f"meter/values: field 'power' is {power} W, negative: is the meter wired in reverse?"
        )
    return max(0.0, float(power))


def parse_active_phases(payload: object) -> int:
    """Number of phases carrying current, from ``meter/phases`` ``{"phases_active": [bool, bool, bool]}``.

    Raises:
        ValueError: ``phases_active`` is missing or not a list of three booleans.
    """
    active = _field(payload, "meter/phases", "phases_active")
    if not isinstance(active, list) or len(active) != 3 or not all(isinstance(a, bool) for a in active):
        raise ValueError(f"meter/phases: field 'phases_active' must be three booleans, got {active!r}")
    return sum(active)


def reading_from_json(
    evse_state: object, meter_values: object | None, meter_phases: object | None, *, timestamp_s: float
) -> ChargerReading:
    """Build a canonical reading from the decoded answers of the three endpoints.

    Args:
        evse_state: the ``evse/state`` object.
        meter_values: the ``meter/values`` object, ``None`` on a box without a meter (power reads 0 W).
        meter_phases: the ``meter/phases`` object, ``None`` where the box has none or it was not asked.
        timestamp_s: when the answers arrived, seconds on the daemon's clock.

    Returns:
        The reading; ``phases`` is 0 while not charging.  While charging it is the number of
        ``phases_active`` the meter reports (0 right after the start, before the meter sees current),
        or 3 without ``meter/phases``: an assumption, the box does not say.

    Raises:
        ValueError: a field is missing or malformed; the message names the endpoint and the field.
    """
    state = parse_evse_state(evse_state)
    power_w = 0.0 if meter_values is None else parse_meter_power(meter_values)
    if not state.charging:
        phases = 0
    elif meter_phases is None:
        phases = 3
    else:
        phases = parse_active_phases(meter_phases)
    return ChargerReading(
        connected=state.connected,
        charging=state.charging,
        power_w=power_w,
        current_a=state.allowed_current_a,
        phases=phases,
        timestamp_s=timestamp_s,
        iec_state=state.iec_state,
    )


# -- driver ---------------------------------------------------------------------------------------


class _ServerError(Exception):
    """HTTP 5xx: the box is busy or failed internally; worth another attempt."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.reason = response.text.strip()[:200]
        super().__init__(f"HTTP {self.status_code} {self.reason}".rstrip())


def _describe(exc: BaseException) -> str:
    """``HTTP 500 reason`` for a server error, ``ConnectError: reason`` for an httpx exception."""
    text = str(exc)
    if isinstance(exc, _ServerError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class WarpCharger:
    """A Tinkerforge WARP2/WARP3 wallbox driven through slot 8 (``evse/external_current``).

    Requests go one after another over one keep-alive connection: the ESP32's web server answers one
    request at a time, so parallel requests would only cost it sockets.

    Attributes:
        name: the configured device name, used in every error and log line.
        capabilities: current in 1 mA steps, 0 or 6–32 A, no phase switching (yet).

    Args:
        config: the validated settings.
        name: device name for errors and logs.
        clock: seconds on the daemon's clock, for reading timestamps.
        transport: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        config: Config,
        *,
        name: str,
        clock: Callable[[], float],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.capabilities = CAPABILITIES
        self._config = config
        self._clock = clock
        self._transport = transport
        self._base_url = config.url.rstrip("/") + "/"
        self._client: httpx.AsyncClient | None = None
        self._external_enabled_sent = False
        self._log = _log.bind(device=name)

    async def read(self) -> ChargerReading:
        """Read ``evse/state``, ``meter/values`` and, while charging, ``meter/phases``.

        Returns:
            ``connected`` (state B/C/D), ``charging`` (C/D), ``current_a`` = ``allowed_charging_current``
            / 1000 in A, ``power_w`` from the meter in W (0 without a meter), ``phases`` as described in
            :func:`reading_from_json`, ``timestamp_s`` from the clock once the answers are in.

        Raises:
            DeviceUnavailable: no answer (timeout, connection refused/dropped, HTTP 5xx) after retries.
            DeviceProtocolError: HTTP 401/400/404/other, malformed JSON or a missing/malformed field.
        """
        state = await self._get_json("evse/state")
        if state is None:
            raise DeviceProtocolError(
                self.name, f"GET {self._base_url}evse/state: not found (HTTP 404); is this a WARP charger?"
            )
        try:
            charging = parse_evse_state(state).charging
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{self._base_url}: {exc}") from exc
        values = await self._get_json("meter/values")
        if values is None:
            self._log.debug("warp.no_meter", url=self._base_url + "meter/values")
        phases = await self._get_json("meter/phases") if charging and values is not None else None
        try:
            return reading_from_json(state, values, phases, timestamp_s=self._clock())
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{self._base_url}: {exc}") from exc

    async def apply(self, command: ChargerCommand) -> None:
        """Set slot 8: POST ``evse/external_current`` ``{"current": mA}``, mA = round(current_a × 1000).

        0 A pauses.  The first apply on a connection (after creation, :meth:`close` or the box being
        unreachable, which may mean a reboot) first sends ``evse/external_enabled {"enabled": true}``
        (needed by firmware before Nov 2024; a 404 for it is fine).
        ``command.phases`` is ignored (no phase switching yet).

        Raises:
            ValueError: the current is neither 0 nor 6–32 A (checked before any I/O).
            DeviceUnavailable: no answer after retries.
            DeviceProtocolError: the box rejected the value (HTTP 400 with its reason), the login, or
                does not know the endpoint.
        """
        current_ma = round(command.current_a * 1000)
        if current_ma != 0 and not MIN_CURRENT_MA <= current_ma <= MAX_CURRENT_MA:
            raise ValueError(
                f"{self.name}: current {command.current_a} A is neither 0 nor within "
                f"{MIN_CURRENT_MA / 1000:g}–{MAX_CURRENT_MA / 1000:g} A"
            )
        if not self._external_enabled_sent:
            if await self._request("POST", "evse/external_enabled", {"enabled": True}) is None:
                self._log.debug("warp.external_enabled_missing", note="firmware without the endpoint")
            self._external_enabled_sent = True
        if await self._request("POST", "evse/external_current", {"current": current_ma}) is None:
            raise DeviceProtocolError(
                self.name, f"POST {self._base_url}evse/external_current: not found (HTTP 404)"
            )
        self._log.debug("warp.applied", current_ma=current_ma)

    async def close(self) -> None:
        """Close the HTTP connection pool. Safe to call twice."""
        client, self._client = self._client, None
        self._external_enabled_sent = False
        if client is not None:
            await client.aclose()

    # -- HTTP -------------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            auth = None
            if self._config.username is not None and self._config.password is not None:
                auth = httpx.DigestAuth(self._config.username, self._config.password.reveal())
            self._client = httpx.AsyncClient(
                base_url=self._base_url,
                auth=auth,
                timeout=self._config.timeout_s,
                transport=self._transport,
                trust_env=False,  # the charger is on the LAN: no proxies from the environment
            )
        return self._client

    async def _send_once(self, method: str, path: str, body: object) -> httpx.Response:
        response = await self._http().request(method, path, json=body)
        if response.status_code >= 500:
            raise _ServerError(response)
        return response

    def _log_retry(self, retry_state: RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        wait_s = retry_state.next_action.sleep if retry_state.next_action else 0.0
        method, path = retry_state.args[:2]
        self._log.debug(
            "warp.retry",
            request=f"{method} {path}",
            attempt=retry_state.attempt_number,
            error=_describe(error) if error else None,
            wait_s=round(wait_s, 3),
        )

    async def _request(self, method: str, path: str, body: object = None) -> httpx.Response | None:
        """Send one request, retrying timeouts, connection errors and HTTP 5xx.

        Returns the 2xx response, or ``None`` for 404.  Raises ``DeviceUnavailable`` or
        ``DeviceProtocolError`` otherwise; no httpx exception escapes.
        """
        where = f"{method} {self._base_url}{path}"
        attempts = self._config.retries + 1
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=_BACKOFF_INITIAL_S, max=_BACKOFF_MAX_S)
            + wait_random(0, _BACKOFF_INITIAL_S),
            retry=retry_if_exception_type((httpx.TransportError, _ServerError)),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            response: httpx.Response = await retrying(self._send_once, method, path, body)
        except httpx.TimeoutException as exc:
            self._external_enabled_sent = False  # the box may reboot: enable slot 8 again
            raise DeviceUnavailable(
                self.name, f"{where}: no answer within {self._config.timeout_s:g} s ({attempts} attempts)"
            ) from exc
        except (httpx.TransportError, _ServerError) as exc:
            self._external_enabled_sent = False
            raise DeviceUnavailable(self.name, f"{where}: {_describe(exc)} ({attempts} attempts)") from exc
        except httpx.HTTPError as exc:
            raise DeviceProtocolError(self.name, f"{where}: {_describe(exc)}") from exc
        status = response.status_code
        if status == 404:
            return None
        if 200 <= status < 300:
            return response
        if status == 401:
            raise DeviceProtocolError(
                self.name, f"authentication failed: check charger.username/password ({where}: HTTP 401)"
            )
        reason = response.text.strip()[:200]
        if status == 400:
            raise DeviceProtocolError(self.name, f"{where}: rejected (HTTP 400): {reason}")
        raise DeviceProtocolError(self.name, f"{where}: unexpected HTTP {status}: {reason}")

    async def _get_json(self, path: str) -> object | None:
        """GET ``path`` and decode its JSON; ``None`` when the box has no such endpoint (404)."""
        response = await self._request("GET", path)
        if response is None:
            return None
        try:
            payload: object = response.json()
        except ValueError as exc:
            raise DeviceProtocolError(
                self.name, f"GET {self._base_url}{path}: malformed JSON ({exc})"
            ) from exc
        return payload
