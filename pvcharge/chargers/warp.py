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
  booleans; both answer 404 on a box without a meter.  Without ``meter/phases`` a charging car is
  reported on the phases ``evse/low_level_state.phases_current`` gives (with ``phase_switching``),
  else on 3 (an assumption).

Phase switching (WARP3/WARP4, ``phase_switching: true``; chargers.md §3.2–3.4, W-fw ``power_manager``,
W-evcc ``charger/warp-ws.go``):

- The box offers it only if at boot its energy manager's phase switching is "external" (PV-excess
  charging off), ``evse/management_enabled`` is off, the EVSE is >= 3.0 and ``phases_connected`` > 1;
  then ``info/features`` lists ``phase_switch`` and ``power_manager/external_control`` accepts writes.
- Once per connection the driver checks that, and writes ``evse/phase_auto_switch {"enabled": false}``
  (evcc does the same for warp3/warp4) so the box does not switch by itself.
- ``evse/low_level_state``: ``phases_current`` 1 or 3 (``power_manager/low_level_state.is_3phase``
  agrees), ``phases_requested``, ``phases_state`` 0 idle, 1 stopping charge, 2 contactor off, 3 CP
  disconnect, 4 switching, 5 CP reconnect, 6 waiting for the car, 7 contactor on.
- ``power_manager/state.external_control``: 0 available, 1 nothing requested yet (§3.4 step 2, where
  evcc goes ahead on 0 and 1; §3.3 calls 1 "disabled in settings": a box that then refuses gets the
  back-off below), 2 unavailable (contactor check, no CP disconnect, input block), 3 switching.
- ``POST power_manager/external_control {"phases_wanted": 1|3}`` starts a switch: the box stops the
  charge, switches its contactors and reconnects the car, which then draws the external current on the
  new phases.  400 with a reason when not allowed (e.g. to 3 while ``phases_info`` bit 0 marks a
  single-phase car) or on a *different* request mid-switch; the same request while busy is ignored.
- After a reconnect evcc sends the last ``phases_wanted`` again (a rebooted box may have lost it).

Waking a car that does not start (:meth:`WarpCharger.wake_up`; warp-charger ``api_doc_generator/evse.py``
``control_pilot_disconnect``, W-fw ``evse_v2``/``control_pilot_backend``): with the feature
``cp_disconnect`` in ``info/features`` (WARP2 and later), ``evse/control_pilot_disconnect`` ``{"disconnect":
bool}`` is R/W through ``evse/control_pilot_disconnect_update``; true fakes an unplugged cable.  The box
ignores the write while ``evse/management_enabled`` is on (its charge manager owns the CP).

Without ``phase_switching`` the driver reports ``phase_switching=False`` and ignores
``ChargerCommand.phases``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
import structlog

from pvcharge.clients.tls import verify_for
from pvcharge.errors import DeviceProtocolError, DeviceUnavailable, RateLimited, WriteDeferred
from pvcharge.readings import (
    ChargerCapabilities,
    ChargerCommand,
    ChargerReading,
    IecState,
    charging_power_w,
)
from pvcharge.retry import (
    ServerError,
    backoff_retrying,
    not_json,
    request_failed,
    retry_after_s,
    retry_transient,
)
from pvcharge.settings import Secret, SettingError, setting

_log = structlog.get_logger(__name__)

#: lowest non-zero external current the box accepts, in mA (chargers.md §3.2, IEC 61851: 6 A).
MIN_CURRENT_MA = 6000
#: highest external current, in mA (chargers.md §3.2).
MAX_CURRENT_MA = 32000

#: what a WARP can do without phase switching; ``phase_switching`` follows the setting of that name.
CAPABILITIES = ChargerCapabilities(
    current_step_a=0.001,
    min_current_a=MIN_CURRENT_MA / 1000,
    max_current_a=MAX_CURRENT_MA / 1000,
    phase_switching=False,
    on_off_only=False,
)

#: after a ``phases_wanted`` request, accepted or refused, the next one waits at least this long, in s:
#: a refused switch is retried later, never in a loop (firmware that silently ignores a request is
#: covered too).
PHASE_REQUEST_INTERVAL_S = 60.0

#: how long a wake-up holds the control pilot disconnected, in s: openWB's hardware driver holds CP at
#: -12 V "for at least 3 seconds" (EV40 specification), evcc's ABL driver 3 s (evcc ``charger/openwb-hw.go``,
#: ``charger/abl-evcc.go``).
CP_DISCONNECT_S = 3.0

#: ``info/name.type`` values of boxes that switch phases themselves (chargers.md §3.4: WARP2 switches
#: only through a WARP Energy Manager, WARP1 not at all).
PHASE_SWITCH_TYPES = ("warp3", "warp4")

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

#: ``power_manager/state.external_control`` codes in which a request is not sent (chargers.md §3.3, §3.4).
_EXTERNAL_CONTROL_REFUSED = {
    2: "unavailable (contactor check, no CP disconnect or input block)",
    3: "switching, requests are ignored",
}

#: ``iec61851_state`` code → IEC state; 4 is "E/F: error", reported as F (charger fault).
_IEC_STATES = (IecState.A, IecState.B, IecState.C, IecState.D, IecState.F)

#: wait after an HTTP 429 without a usable ``Retry-After``, in s (the firmware sends no 429; a proxy might).
DEFAULT_RETRY_AFTER_S = 30.0

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
    phase_switching: bool = setting(
        False,
        doc='WARP3/WARP4 whose energy manager has phase switching set to "external": pvcharge switches '
        "it between 1 and 3 phases (power_manager/external_control)",
    )

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


def reading_from_json(
    evse_state: object,
    meter_values: object | None,
    meter_phases: object | None,
    *,
    timestamp_s: float,
    box_phases: int | None = None,
) -> ChargerReading:
    """Build a canonical reading from the decoded answers of the three endpoints.

    Args:
        evse_state: the ``evse/state`` object.
        meter_values: the ``meter/values`` object, ``None`` on a box without a meter (power reads 0 W).
        meter_phases: the ``meter/phases`` object, ``None`` where the box has none or it was not asked.
        timestamp_s: when the answers arrived, seconds on the daemon's clock.
        box_phases: the phases the box's contactors are switched to (1 or 3,
            ``evse/low_level_state.phases_current``), where the driver knows them.

    Returns:
        The reading; ``phases`` is 0 while not charging.  While charging it is the number of
        ``phases_active`` the meter reports (0 right after the start, before the meter sees current);
        without ``meter/phases`` it is ``box_phases``, or 3 where that is not known either (an
        assumption, the box does not say).

    Raises:
        ValueError: a field is missing or malformed; the message names the endpoint and the field.
    """
    state = parse_evse_state(evse_state)
    power_w = 0.0 if meter_values is None else parse_meter_power(meter_values)
    if not state.charging:
        phases = 0
    elif meter_phases is None:
        phases = 3 if box_phases is None else box_phases
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


def limit_current_ma(current_ma: int, phases: int, box_phases: int) -> int:
    """The external current in mA for a box left on ``box_phases`` while the command was meant for
    ``phases``: never more current than commanded, nor more power (``current × phases``).

    On fewer phases than commanded the current stays (less power); on more phases it shrinks by
    ``phases / box_phases``, and to 0 (paused) where that falls below ``MIN_CURRENT_MA``.
    """
    if box_phases <= phases:
        return current_ma
    limited = current_ma * phases // box_phases
    return limited if limited >= MIN_CURRENT_MA else 0


# -- driver ---------------------------------------------------------------------------------------


def _empty_or_json(response: httpx.Response) -> bool:
    """The body is empty or JSON (what the firmware sends)."""
    if not response.content.strip():
        return True
    try:
        response.json()
    except ValueError:
        return False
    return True


class WarpCharger:
    """A Tinkerforge WARP2/WARP3 wallbox driven through slot 8 (``evse/external_current``), and with
    ``phase_switching`` through ``power_manager/external_control`` (WARP3/WARP4).

    Requests go one after another over one keep-alive connection: the ESP32's web server answers one
    request at a time, so parallel requests would only cost it sockets.  Each is tried ``1 + retries``
    times on a timeout, a connection error, a reply cut off or HTTP 5xx (not on a TLS failure).  After
    an HTTP 429 (the firmware sends none, a proxy in front of it might) nothing is sent to the box
    before its ``Retry-After``.

    Attributes:
        name: the configured device name, used in every error and log line.
        capabilities: current in 1 mA steps, 0 or 6–32 A; ``phase_switching`` as configured.
        box_phases: with ``phase_switching``, the phases the box's contactors are switched to (1 or 3,
            ``evse/low_level_state.phases_current``) as last seen by :meth:`read` or :meth:`apply`;
            ``None`` before that and without phase switching.  ``read().phases`` is what the car draws.

    Args:
        config: the validated settings.
        name: device name for errors and logs.
        clock: seconds on the daemon's clock, for reading timestamps and the phase request back-off.
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
        self.capabilities = replace(CAPABILITIES, phase_switching=config.phase_switching)
        self.box_phases: int | None = None
        self._config = config
        self._clock = clock
        self._transport = transport
        self._base_url = config.url.rstrip("/") + "/"
        self._client: httpx.AsyncClient | None = None
        self._external_enabled_sent = False
        self._phases_prepared = False  # phase switching checked and auto switching off on this connection
        self._phases_wanted: int | None = None  # the last phases_wanted the box accepted
        self._resend_phases = False  # a connection broke since that request: send it again
        self._next_phase_request_s = -math.inf  # no phases_wanted request before this clock time
        self._unavailable_logged: int | None = None  # external_control code last logged as refusal
        self._quiet_until = -math.inf  # an HTTP 429 asked for no request before this clock time
        self._sleep: Callable[[float], Awaitable[object]] = asyncio.sleep  # the CP disconnect's wait
        self._log = _log.bind(device=name)

    async def read(self) -> ChargerReading:
        """Read ``evse/state``, ``meter/values`` and, while charging, ``meter/phases``; with
        ``phase_switching`` also ``evse/low_level_state`` (sets :attr:`box_phases`), after the
        once-per-connection preparation described in :meth:`apply`.

        Returns:
            ``connected`` (state B/C/D), ``charging`` (C/D), ``current_a`` = ``allowed_charging_current``
            / 1000 in A, ``power_w`` from the meter in W (0 without a meter), ``phases`` as described in
            :func:`reading_from_json` (what the car draws, also with phase switching), ``timestamp_s``
            from the clock once the answers are in.

        Raises:
            DeviceUnavailable: no answer (timeout, connection refused/dropped, reply cut off, HTTP 5xx)
                after retries; HTTP 429, or still waiting for its ``Retry-After`` (nothing sent).
            DeviceProtocolError: HTTP 401/400/404/other, a TLS failure, a body that is not JSON or a
                missing/malformed/impossible field; with ``phase_switching``, a box that does not offer it
                (the message says how to enable it).
        """
        if self._config.phase_switching:
            await self._prepare_phase_switching()
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
        box_phases = (await self._read_phase_state()).phases_current if self._config.phase_switching else None
        try:
            return reading_from_json(state, values, phases, timestamp_s=self._clock(), box_phases=box_phases)
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{self._base_url}: {exc}") from exc

    async def apply(self, command: ChargerCommand) -> None:
        """Set slot 8: POST ``evse/external_current`` ``{"current": mA}``, mA = round(current_a × 1000);
        with ``phase_switching`` first bring the box to ``command.phases``.

        0 A pauses.  The first apply on a connection (after creation, :meth:`close` or the box being
        unreachable, which may mean a reboot) first sends ``evse/external_enabled {"enabled": true}``
        (needed by firmware before Nov 2024; a 404 for it is fine).  Without ``phase_switching``,
        ``command.phases`` is ignored.

        With ``phase_switching`` (chargers.md §3.4), once per connection: check that ``info/name.type`` is
        warp3/warp4 and ``info/features`` lists ``phase_switch``, then POST ``evse/phase_auto_switch
        {"enabled": false}``; after a connection broke, send the last accepted ``phases_wanted`` again
        (as evcc does).  Then per apply, from ``evse/low_level_state``:

        - the box is on ``command.phases`` and not switching: write the current, done;
        - a switch to ``command.phases`` is in progress (``phases_state`` 1–7): no new request; write
          the current (the box applies it once the car is back) and raise ``WriteDeferred``;
        - otherwise, unless another switch is in progress or the last request was less than
          ``PHASE_REQUEST_INTERVAL_S`` ago: read ``power_manager/state.external_control``; on 0 or 1
          POST ``power_manager/external_control {"phases_wanted": 1|3}``, write the current and raise
          ``WriteDeferred`` until the switch is seen complete; on 2 (unavailable) or 3 (switching)
          send nothing.  A refusal (external_control 2/3 or HTTP 400 with the box's reason) is logged
          and raised as ``WriteDeferred``; every request, accepted or refused, holds the next one back
          ``PHASE_REQUEST_INTERVAL_S``.  A paused command (0 A) switches too.  While
          the box stays on other phases the current written is :func:`limit_current_ma` (never more
          current or power than commanded; 0 where that is below 6 A).

        Raises:
            ValueError: the current is neither 0 nor 6–32 A (checked before any I/O).
            WriteDeferred: with ``phase_switching``, the box is not on ``command.phases`` yet; the
                message says why; after a refusal ``retry_after_s`` is when the next phase request may
                go out (else 0).  The current was written all the same.  Or: HTTP 429, or still
                waiting for its ``Retry-After`` (``retry_after_s``); the current may not have been sent.
            DeviceUnavailable: no answer after retries.
            DeviceProtocolError: the box rejected the current (HTTP 400 with its reason), the login, or
                does not know an endpoint; with ``phase_switching``, a box that does not offer it.
        """
        current_ma = round(command.current_a * 1000)
        if current_ma != 0 and not MIN_CURRENT_MA <= current_ma <= MAX_CURRENT_MA:
            raise ValueError(
                f"{self.name}: current {command.current_a} A is neither 0 nor within "
                f"{MIN_CURRENT_MA / 1000:g}–{MAX_CURRENT_MA / 1000:g} A"
            )
        try:
            deferred = await self._apply(command.phases, current_ma)
        except RateLimited as exc:
            raise WriteDeferred(self.name, exc.message, retry_after_s=exc.retry_after_s) from exc
        if deferred is not None:
            raise deferred

    async def _apply(self, phases: int, current_ma: int) -> WriteDeferred | None:
        """The requests of :meth:`apply`; returns the ``WriteDeferred`` to raise, if any."""
        deferred: WriteDeferred | None = None
        if self._config.phase_switching:
            await self._prepare_phase_switching()
            current_ma, deferred = await self._switch_phases(phases, current_ma)
        if not self._external_enabled_sent:
            if await self._request("POST", "evse/external_enabled", {"enabled": True}) is None:
                self._log.debug("warp.external_enabled_missing", note="firmware without the endpoint")
            self._external_enabled_sent = True
        if await self._request("POST", "evse/external_current", {"current": current_ma}) is None:
            raise DeviceProtocolError(
                self.name, f"POST {self._base_url}evse/external_current: not found (HTTP 404)"
            )
        self._log.debug("warp.applied", current_ma=current_ma)
        return deferred

    async def wake_up(self) -> None:
        """Wake a car that does not start: disconnect the control pilot for :data:`CP_DISCONNECT_S` (the
        car sees an unplug and a plug-in), then connect it again.

        GET ``info/features`` (must list ``cp_disconnect``), POST ``evse/control_pilot_disconnect_update
        {"disconnect": true}``, GET ``evse/control_pilot_disconnect`` to see that the box did it, wait,
        POST ``{"disconnect": false}`` (also when the wait is cancelled or the check fails).  Slot 8 is
        not touched: the car is offered what it was offered before, never more.

        Raises:
            WriteDeferred: HTTP 429, or still waiting for its ``Retry-After``.
            DeviceUnavailable: no answer after retries (the CP may be left disconnected: the car draws
                nothing; the next wake-up connects it again).
            DeviceProtocolError: no ``cp_disconnect`` feature (a WARP1), or the box ignored the
                disconnect (``evse/management_enabled`` on); other refusals as :meth:`apply`.
        """
        try:
            features = await self._get_json("info/features")
            if not isinstance(features, list) or "cp_disconnect" not in features:
                raise DeviceProtocolError(
                    self.name,
                    "a wake-up needs a control-pilot disconnect, but 'cp_disconnect' is not in info/features "
                    "(a WARP1 has none); set charger.wake_up_attempts: 0",
                )
            await self._set_cp_disconnect(True)
            try:
                state = await self._get_json("evse/control_pilot_disconnect")
                if not isinstance(state, dict) or state.get("disconnect") is not True:
                    raise DeviceProtocolError(
                        self.name,
                        "the box did not disconnect the control pilot (evse/control_pilot_disconnect: "
                        f"{state!r}); it ignores the request while evse/management_enabled is on",
                    )
                await self._sleep(CP_DISCONNECT_S)
            finally:
                await self._set_cp_disconnect(False)
        except RateLimited as exc:
            raise WriteDeferred(self.name, exc.message, retry_after_s=exc.retry_after_s) from exc
        self._log.debug("warp.woken", cp_disconnect_s=CP_DISCONNECT_S)

    async def _set_cp_disconnect(self, disconnect: bool) -> None:
        path = "evse/control_pilot_disconnect_update"
        if await self._request("POST", path, {"disconnect": disconnect}) is None:
            raise DeviceProtocolError(self.name, f"POST {self._base_url}{path}: not found (HTTP 404)")

    def forget(self) -> None:
        """Send ``external_enabled`` and the last ``phases_wanted`` again with the next apply."""
        self._external_enabled_sent = False
        self._resend_phases = self._phases_wanted is not None

    async def close(self) -> None:
        """Close the HTTP connection pool. Safe to call twice."""
        client, self._client = self._client, None
        self._external_enabled_sent = False
        self._phases_prepared = False
        if client is not None:
            await client.aclose()

    # -- phase switching --------------------------------------------------------------------------

    async def _prepare_phase_switching(self) -> None:
        """Once per connection: check the box offers phase switching and turn its auto switching off;
        after a broken connection, send the last accepted ``phases_wanted`` again."""
        if not self._phases_prepared:
            await self._check_phase_switching()
            self._phases_prepared = True
        if self._resend_phases and self._phases_wanted is not None and self._phase_request_wait_s() == 0:
            self._resend_phases = False
            self._log.info("warp.phases_resend", phases=self._phases_wanted, note="after a reconnect")
            await self._request_phases(self._phases_wanted)

    async def _check_phase_switching(self) -> None:
        """Check ``info/name.type`` and ``info/features``, then POST ``evse/phase_auto_switch
        {"enabled": false}``."""
        info = await self._get_json("info/name")
        box_type = info.get("type") if isinstance(info, dict) else None
        if box_type not in PHASE_SWITCH_TYPES:
            raise DeviceProtocolError(
                self.name,
                f"phase_switching needs a WARP3 or WARP4, but info/name.type is {box_type!r} (a WARP2 "
                "switches phases only through a WARP Energy Manager); set charger.phase_switching: false",
            )
        features = await self._get_json("info/features")
        if not isinstance(features, list) or "phase_switch" not in features:
            raise DeviceProtocolError(
                self.name,
                "phase_switching is set, but the box does not offer it ('phase_switch' is not in "
                "info/features). On the WARP: energy manager settings: PV-excess charging off and phase "
                'switching "external"; EVSE management (evse/management_enabled) off; EVSE >= 3.0 and '
                "phases_connected 3. The box reads these at boot: restart it after a change. Or set "
                "charger.phase_switching: false",
            )
        if await self._request("POST", "evse/phase_auto_switch", {"enabled": False}) is None:
            raise DeviceProtocolError(
                self.name, f"POST {self._base_url}evse/phase_auto_switch: not found (HTTP 404)"
            )

    async def _switch_phases(self, phases: int, current_ma: int) -> tuple[int, WriteDeferred | None]:
        """Bring the box toward ``phases`` (see :meth:`apply`): the current to write in mA, and the
        ``WriteDeferred`` to raise after writing it (``None`` once the box is on ``phases``)."""
        box = await self._read_phase_state()
        if box.phases_requested == phases:
            if not box.switching:
                return current_ma, None
            return current_ma, WriteDeferred(
                self.name,
                f"switch to {phases}p in progress ({box.describe()}); {current_ma} mA once the car is back",
            )
        if box.switching:
            why: str | None = f"another switch is in progress ({box.describe()})"
        elif self._phase_request_wait_s() > 0:
            why = f"the last phase request was less than {PHASE_REQUEST_INTERVAL_S:g} s ago"
        else:
            why = await self._request_phases(phases)
        if why is None:
            return current_ma, WriteDeferred(
                self.name, f"switch to {phases}p requested; {current_ma} mA once the car is back"
            )
        limited_ma = limit_current_ma(current_ma, phases, box.phases_requested)
        return limited_ma, WriteDeferred(
            self.name,
            f"not switched to {phases}p: {why}; {limited_ma} mA on {box.phases_requested}p meanwhile",
            retry_after_s=self._phase_request_wait_s(),
        )

    async def _request_phases(self, phases: int) -> str | None:
        """Ask the box to switch to ``phases`` unless ``external_control`` refuses: ``None`` when the box
        accepted, else why not (logged)."""
        control = await self._external_control()
        if control in _EXTERNAL_CONTROL_REFUSED:
            why = f"power_manager/state.external_control is {control}: {_EXTERNAL_CONTROL_REFUSED[control]}"
            if self._unavailable_logged != control:
                self._log.info("warp.phase_switch_unavailable", phases=phases, reason=why)
                self._unavailable_logged = control
            return why
        self._unavailable_logged = None
        response = await self._request(
            "POST", "power_manager/external_control", {"phases_wanted": phases}, refusal_ok=True
        )
        self._next_phase_request_s = self._clock() + PHASE_REQUEST_INTERVAL_S
        if response is None:
            raise DeviceProtocolError(
                self.name,
                f"POST {self._base_url}power_manager/external_control: not found (HTTP 404); the box offers "
                "phase switching only if it was set up for it at boot (chargers.md §3.4)",
            )
        if response.status_code == 400:
            reason = response.text.strip()[:200]
            self._log.warning(
                "warp.phase_switch_refused", phases=phases, reason=reason, retry_in_s=PHASE_REQUEST_INTERVAL_S
            )
            return f"the box refused it (HTTP 400): {reason}"
        self._phases_wanted = phases
        self._resend_phases = False
        self._log.info("warp.phase_switch_requested", phases=phases)
        return None

    def _phase_request_wait_s(self) -> float:
        """Seconds until the next ``phases_wanted`` request may go out (0: now)."""
        return max(0.0, self._next_phase_request_s - self._clock())

    async def _read_phase_state(self) -> PhaseSwitchState:
        """GET ``evse/low_level_state``; updates :attr:`box_phases` and logs a completed switch."""
        payload = await self._get_json("evse/low_level_state")
        if payload is None:
            raise DeviceProtocolError(
                self.name, f"GET {self._base_url}evse/low_level_state: not found (HTTP 404)"
            )
        try:
            state = parse_low_level_state(payload)
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{self._base_url}: {exc}") from exc
        if self.box_phases is not None and state.phases_current != self.box_phases:
            self._log.info("warp.phases_switched", phases=state.phases_current, before=self.box_phases)
        self.box_phases = state.phases_current
        return state

    async def _external_control(self) -> int:
        """GET ``power_manager/state.external_control``."""
        payload = await self._get_json("power_manager/state")
        if payload is None:
            raise DeviceProtocolError(
                self.name, f"GET {self._base_url}power_manager/state: not found (HTTP 404)"
            )
        try:
            return parse_external_control(payload)
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{self._base_url}: {exc}") from exc

    # -- HTTP -------------------------------------------------------------------------------------

    def _connection_lost(self) -> None:
        """The box did not answer and may reboot: on the next connection enable slot 8 again, redo the
        phase switching preparation and send the last ``phases_wanted`` again."""
        self._external_enabled_sent = False
        self._phases_prepared = False
        self._resend_phases = self._phases_wanted is not None

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
                verify=verify_for(self._base_url, trust_env=False),  # one shared context (clients/tls.py)
                trust_env=False,  # the charger is on the LAN: no proxies from the environment
            )
        return self._client

    async def _send_once(self, method: str, path: str, body: object) -> httpx.Response:
        response = await self._http().request(method, path, json=body)
        if response.status_code >= 500:
            raise ServerError.of(response)
        return response

    async def _request(
        self, method: str, path: str, body: object = None, *, refusal_ok: bool = False
    ) -> httpx.Response | None:
        """Send one request, retrying timeouts, connection errors and HTTP 5xx (not TLS failures).

        Returns the 2xx response (or, with ``refusal_ok``, a 400 one), or ``None`` for 404; a 2xx
        answer to a write whose body is neither empty nor JSON (an HTML page) is a
        ``DeviceProtocolError``.  Raises ``RateLimited`` on HTTP 429 and, without sending, until
        its ``Retry-After``; ``DeviceUnavailable`` or ``DeviceProtocolError`` otherwise; no httpx
        exception escapes.  A request that gets no answer marks the connection as broken (see
        :meth:`_connection_lost`).
        """
        where = f"{method} {self._base_url}{path}"
        wait_s = self._quiet_until - self._clock()
        if wait_s > 0:
            raise RateLimited(
                self.name,
                f"{where}: not sent: HTTP 429 asked for no request for {wait_s:.0f} s more",
                retry_after_s=wait_s,
            )
        attempts = self._config.retries + 1
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
            error = request_failed(self.name, where, exc, attempts=attempts, timeout_s=self._config.timeout_s)
            if isinstance(error, DeviceUnavailable):  # no answer: not a TLS failure, not a bad reply
                self._connection_lost()
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

    async def _get_json(self, path: str) -> object | None:
        """GET ``path`` and decode its JSON; ``None`` when the box has no such endpoint (404)."""
        response = await self._request("GET", path)
        if response is None:
            return None
        try:
            payload: object = response.json()
        except ValueError as exc:
            raise DeviceProtocolError(
                self.name, f"GET {self._base_url}{path}: malformed JSON ({not_json(response.text)})"
            ) from exc
        return payload
