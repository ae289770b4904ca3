"""Easee charger (Home/Charge) through the Easee cloud API, inside its rate limits.

Device facts (reference ``chargers.md`` §1; sources as keyed there: [E-auth], [E-limits], [E-ref],
[E-enum], [E-amqp] Easee developer docs; [GEN] Easee OpenAPI endpoint descriptions; [P] pyeasee;
[EV] evcc ``charger/easee*``):

- Base URL ``https://api.easee.com``; JSON bodies; ``Authorization: Bearer <accessToken>`` on every
  call except login and refresh (§1.1 [E-auth; P]).
- Login ``POST /api/accounts/login {"userName", "password"}`` → ``{"accessToken", "expiresIn" (s),
  "refreshToken", …}``; refresh ``POST /api/accounts/refresh_token {"accessToken", "refreshToken"}`` →
  the same; ``expiresIn`` is honoured (docs say 3600, a pyeasee fixture has 86400); refresh 60 s before
  expiry and log in again when the refresh is refused with 400/401 (§1.1 [P; EV]).
- State: ``GET /state/{chargerId}/observations?ids=…`` (no ``/api`` prefix) →
  ``{"observations": [{"id", "dataType", "value", "timestamp"}]}``; dataType 2 bool, 3 double, 4 int,
  6 string; unknown ids are left out.  The former ``GET /api/chargers/{id}/state`` answers 404 since
  2026-09-01 and is never called (§1.2).  **totalPower (120) is in kW**; currents are in A (§1.2, the
  unit table at the top of chargers.md).
- Current (§1.3): the dynamic charger current command
  ``POST /api/chargers/{id}/commands/set_dynamic_charger_current {"amps": A, "minutes": 0}`` (0 minutes =
  until changed; volatile) [P; E-ref], or the circuit dynamic current
  ``POST /api/sites/{site}/circuits/{circuit}/settings {"dynamicCircuitCurrentP1..P3": A}`` — always all
  three phases, an omitted phase went to 0 [GEN; ioBroker.easee#23].  The charger applies the lowest of
  its limits [E-limits].
- Pause/resume (§1.4): ``commands/pause_charging`` ("limits dynamic charger current to 0", keeps the
  authorization) and ``commands/resume_charging`` (resets the dynamic charger current; evcc waits for it
  to read 32 A, then re-sends its setpoint [EV]).  ``start_charging``/``stop_charging`` only handle cloud
  authorization and are never sent.
- 1p/3p (§1.5): with the charger alone on its circuit, P1 = current and P2 = P3 = 0 charges on one phase,
  all three = current on three [EV]; firmware-dependent (pyeasee#35 vs easee_hass#667, unverified).
- Replies (§1.4 [EV; GEN]): 200, or 202 ``{"device", "commandId", "ticks"}`` (a list for circuit
  settings): accepted, the result arrives as a SignalR ``CommandResponse``.  SignalR is not implemented
  (optional per issue 5), so an accepted command counts as applied; the next observations show its
  effect.  400/401/403/500; 503 "try again in about a minute"; 504 "end device is not reachable".
- Rate limits (§1.6): charger and circuit ``settings`` 20/min [GEN]; state reads and commands undocumented;
  over a limit HTTP 429 with ``Retry-After`` [P; easee_hass#684; evcc#8290]; sustained abuse gets the IP
  blocked: HTTP 403 "Too many requests, … Your IP is registered in our systems and is now blocked"
  [evcc#3835; easee_hass#117].  pyeasee throttles to 500 requests per 300 s overall [P]; this driver's
  buckets together allow at most 28 requests in any minute and 104 in any 300 s.

How this driver stays inside them: one :class:`TokenBucket` per endpoint class (:data:`BUDGETS`), taken
for every HTTP attempt (retries included); a write only when what the charger holds changes;
``min_write_interval_s`` between writes except for a decrease or a pause; a 429 stops that endpoint class
until ``Retry-After``; a 403 "IP blocked" stops everything until restart.  Tokens and the password go
only into request bodies and the ``Authorization`` header: never into a log line, an exception or a repr.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx
import structlog

from pvcharge.chargers import Clock
from pvcharge.errors import DeviceError, DeviceProtocolError, DeviceUnavailable, WriteDeferred, WritesBlocked
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading, IecState
from pvcharge.retry import (
    ServerError,
    backoff_retrying,
    describe,
    not_json,
    retry_transient,
    tls_failure,
    tls_message,
)
from pvcharge.retry import parse_retry_after as parse_retry_after  # re-exported: it was defined here
from pvcharge.settings import Secret, SettingError, setting

_log = structlog.get_logger(__name__)

DEFAULT_URL = "https://api.easee.com"  #: chargers.md §1

MIN_CURRENT_A = 6  #: lowest current a car charges at (IEC 61851; chargers.md §1.3 [E-limits])
MAX_CURRENT_A = 32  #: highest dynamic charger current (Easee Home/Charge; evcc waits for 32 A after resume)

#: observation id → name (chargers.md §1.2; pyeasee ``const.py`` ``ChargerStreamData`` [P]).
OBSERVATIONS: dict[int, str] = {
    109: "chargerOpMode",
    120: "totalPower",  # kW
    114: "outputCurrent",  # A offered to the car
    48: "dynamicChargerCurrent",  # A
    38: "phaseMode",  # 1 locked 1p, 2 auto, 3 locked 3p
    110: "outputPhase",  # 0 unassigned, 10–15 one phase, 20–22 two, 30 three
    111: "dynamicCircuitCurrentP1",  # A
    112: "dynamicCircuitCurrentP2",
    113: "dynamicCircuitCurrentP3",
    183: "inCurrentT3",  # A on L1
    184: "inCurrentT4",  # A on L2
    185: "inCurrentT5",  # A on L3
}
OP_MODE, TOTAL_POWER, OUTPUT_CURRENT, OUTPUT_PHASE = 109, 120, 114, 110
IN_CURRENTS = (183, 184, 185)

#: ``chargerOpMode`` → (IEC state, connected, charging): chargers.md §1.2 table (1–6 official [E-enum],
#: 0/7/8 [P; EV]; IEC letters as evcc maps them [EV]).  0 Offline: the cloud has lost the charger, nothing
#: is known of a car: F, not connected.  5 Error: F, but the session is kept (connected) so the controller's
#: timers survive a transient charger fault; the car draws nothing.
OP_MODES: dict[int, tuple[IecState, bool, bool]] = {
    0: (IecState.F, False, False),  # Offline
    1: (IecState.A, False, False),  # Disconnected
    2: (IecState.B, True, False),  # AwaitingStart (SuspendedEVSE: load balancer, pause)
    3: (IecState.C, True, True),  # Charging
    4: (IecState.B, True, False),  # Completed (car paused or stopped)
    5: (IecState.F, True, False),  # Error
    6: (IecState.B, True, False),  # ReadyToCharge (SuspendedEV: waiting for the car)
    7: (IecState.B, True, False),  # AwaitingAuthentication
    8: (IecState.B, True, False),  # Deauthenticating
}

#: an inCurrentT3..T5 above this counts as a phase the car draws on, in A.
ACTIVE_PHASE_A = 1.0
#: ``totalPower`` down to this far below 0 kW is metering noise and reads as 0 W, in kW.
NEGATIVE_POWER_TOLERANCE_KW = 0.05

#: endpoint class → (bucket capacity, refill per minute).  A bucket lets through at most capacity +
#: refill requests in any 60 s, kept well inside chargers.md §1.6: circuit settings 10 of the published
#: 20/min [GEN]; commands (undocumented; evcc#8290 saw 429 on ``resume_charging``) 8; state reads
#: (undocumented) 6, of which polling every >= 15 s uses 4; login and refresh 4 (a revoked token costs a
#: refused refresh and a login right after the first login).
BUDGETS: dict[str, tuple[int, float]] = {
    "circuit_settings": (2, 8.0),
    "commands": (2, 6.0),
    "state": (2, 4.0),
    "auth": (3, 1.0),
}

REFRESH_MARGIN_S = 60.0  #: refresh the access token this long before it expires (pyeasee, §1.1 [P])
LOGIN_REFUSED_BACKOFF_S = 300.0  #: after a refused login, no new attempt for this long (account lockout)
DEFAULT_RETRY_AFTER_S = 60.0  #: wait after a 429 without a usable ``Retry-After`` header, in s

#: backoff between attempts after a timeout or 5xx: 0.2 s, 0.4 s … up to 2 s, each plus 0–0.2 s random.
_BACKOFF_INITIAL_S = 0.2
_BACKOFF_MAX_S = 2.0

_CHARGER_ID = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Config:
    """Settings of one Easee charger (the ``charger:`` section with ``type: easee``).

    ``password`` may be given as ``password_file: PATH`` instead (the config loader reads it).

    Raises:
        SettingError: ``url`` is not ``http(s)://host[:port]`` or holds credentials; ``username`` is empty;
            ``charger_id`` is not alphanumeric; ``phase_switching`` with ``control: charger_current``;
            ``control: circuit_current`` without ``site_id`` or ``circuit_id``; an id below 1.
    """

    username: str = setting(doc="Easee account login: e-mail address or phone number with +country code")
    password: Secret = setting(doc="Easee account password")
    charger_id: str = setting(doc="charger serial number as shown in the Easee app, e.g. EH123456")
    url: str = setting(DEFAULT_URL, doc="base URL of the Easee cloud API")
    control: Literal["charger_current", "circuit_current"] = setting(
        "charger_current",
        doc="charger_current: the charger's dynamic current command; circuit_current: the dynamic current "
        "of its circuit (all three phases; needs site_id and circuit_id)",
    )
    site_id: int | None = setting(None, doc="Easee site id (control: circuit_current only)")
    circuit_id: int | None = setting(None, doc="Easee circuit id (control: circuit_current only)")
    phase_switching: bool = setting(
        False,
        doc="1p/3p via the circuit phase limits when the charger is alone on its circuit (control: "
        "circuit_current only)",
    )
    min_write_interval_s: float = setting(
        30.0,
        doc="minimum time between two writes; a decrease or a pause may go out earlier",
        unit="s",
        min=5,
        max=3600,
    )
    poll_interval_s: float = setting(
        15.0,
        doc="read the charger state from the cloud at most this often; reads in between return the last one",
        unit="s",
        min=15,
        max=600,
    )
    timeout_s: float = setting(10.0, doc="timeout of one HTTP request", unit="s", min=1, max=60)
    retries: int = setting(
        2, doc="extra attempts after a timeout, connection error or HTTP 5xx", min=0, max=5
    )

    def __post_init__(self) -> None:
        try:
            url = httpx.URL(self.url)
        except httpx.InvalidURL as exc:
            raise SettingError("url", f"{exc}; expected e.g. {DEFAULT_URL}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise SettingError("url", f"expected https://host, e.g. {DEFAULT_URL}, got {self.url!r}")
        if url.userinfo:
            raise SettingError("url", "put the login into username/password, not into the URL")
        if not self.username.strip():
            raise SettingError("username", "must not be empty (e-mail address or +CC phone number)")
        if not _CHARGER_ID.fullmatch(self.charger_id):
            raise SettingError(
                "charger_id",
                f"expected the serial number, letters and digits (e.g. EH123456), got {self.charger_id!r}",
            )
        if self.phase_switching and self.control != "circuit_current":
            raise SettingError(
                "phase_switching",
                "needs control: circuit_current (1p/3p via the circuit phase limits, charger alone on its "
                "circuit)",
            )
        for key in ("site_id", "circuit_id"):
            value = getattr(self, key)
            if value is None and self.control == "circuit_current":
                raise SettingError(
                    key, "required with control: circuit_current (the ids are in the Easee portal)"
                )
            if value is not None and value < 1:
                raise SettingError(key, f"expected a positive id, got {value}")


def create(config: Config, *, name: str, clock: Clock) -> EaseeCharger:
    """Build the driver; no I/O until the first :meth:`EaseeCharger.read` or :meth:`EaseeCharger.apply`."""
    return EaseeCharger(config, name=name, clock=clock)


# -- pure parts -----------------------------------------------------------------------------------

ObservationValue = bool | int | float | str


def _typed(obs_id: int, data_type: int, value: object) -> ObservationValue:
    """Decode an observation value by its ``dataType`` (chargers.md §1.2): JSON-typed or, as SignalR
    sends them, a string."""
    where = f"observation {obs_id} ({OBSERVATIONS.get(obs_id, '?')})"
    if data_type == 2:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
            return value.strip().lower() in ("1", "true")
        raise ValueError(f"{where}: dataType 2 (boolean) but value {value!r}")
    if data_type in (3, 4):
        number: float
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{where}: dataType {data_type} but value {value!r}") from None
        else:
            raise ValueError(f"{where}: dataType {data_type} (number) but value {value!r}")
        if not math.isfinite(number):
            raise ValueError(f"{where}: value {value!r} is not finite")
        if data_type == 3:
            return number
        if not number.is_integer():
            raise ValueError(f"{where}: dataType 4 (integer) but value {value!r}")
        return int(number)
    if data_type == 6:
        if not isinstance(value, str):
            raise ValueError(f"{where}: dataType 6 (string) but value {value!r}")
        return value
    raise ValueError(f"{where}: unsupported dataType {data_type!r} (expected 2, 3, 4 or 6)")


def parse_observations(payload: object) -> dict[int, ObservationValue]:
    """Decode the observations reply into ``{id: value}`` for the ids in :data:`OBSERVATIONS`.

    Args:
        payload: decoded JSON ``{"observations": [{"id": 109, "dataType": 4, "value": 3,
            "timestamp": "…"}, …]}``; values typed by ``dataType``: 2 bool, 3 double, 4 int, 6 string, as
            JSON values or as strings (``"1"``/``"true"``, ``"7.5"``).  Units are the vendor's (kW for 120).

    Returns:
        bool, float (dataType 3), int (4) or str (6) per id; ids this driver does not use are left out;
        a repeated id keeps its last value.

    Raises:
        ValueError: not an object with an ``observations`` list, an entry without an integer ``id`` and
            ``dataType``, or a used id whose value does not match its ``dataType``.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("observations"), list):
        raise ValueError("observations: expected a JSON object with an 'observations' list")
    result: dict[int, ObservationValue] = {}
    for entry in payload["observations"]:
        if not isinstance(entry, dict):
            raise ValueError(f"observations: expected objects in the list, got {entry!r}")
        obs_id, data_type = entry.get("id"), entry.get("dataType")
        if not isinstance(obs_id, int) or isinstance(obs_id, bool):
            raise ValueError(f"observations: entry without an integer 'id': {entry!r}")
        if not isinstance(data_type, int) or isinstance(data_type, bool):
            raise ValueError(f"observation {obs_id}: missing or non-integer 'dataType'")
        if obs_id in OBSERVATIONS:
            result[obs_id] = _typed(obs_id, data_type, entry.get("value"))
    return result


def _number(obs: Mapping[int, ObservationValue], obs_id: int) -> float:
    if obs_id not in obs:
        raise ValueError(f"observation {obs_id} ({OBSERVATIONS[obs_id]}) missing from the reply")
    value = obs[obs_id]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"observation {obs_id} ({OBSERVATIONS[obs_id]}) must be a number, got {value!r}")
    return float(value)


def _phases_from_output_phase(code: float | None) -> int:
    """Phases from ``outputPhase`` (chargers.md §1.2): 10–15 one, 20–22 two, 30 three; otherwise 3, an
    assumption: the charger does not say."""
    if code is not None and 10 <= code <= 15:
        return 1
    if code is not None and 20 <= code <= 22:
        return 2
    return 3


def reading_from_observations(obs: Mapping[int, ObservationValue], *, timestamp_s: float) -> ChargerReading:
    """Build a canonical reading from decoded observations (:func:`parse_observations`).

    Args:
        obs: 109 chargerOpMode; 120 totalPower (kW) and 114 outputCurrent (A), required while charging
            and read as 0 when left out otherwise (the cloud leaves out what it does not know); optionally
            183–185 inCurrentT3..T5 (A on L1..L3) and 110 outputPhase.
        timestamp_s: when the reply arrived, seconds on the daemon's clock.

    Returns:
        ``connected``/``charging``/``iec_state`` from chargerOpMode per :data:`OP_MODES`; ``power_w`` =
        totalPower × 1000 (kW → W); ``current_a`` = outputCurrent; ``phase_currents_a`` = inCurrentT3..T5
        when all three are present.  ``phases`` is 0 unless charging; while charging, the number of
        inCurrentT3..T5 above :data:`ACTIVE_PHASE_A` (0 while the car ramps up), or from outputPhase
        without them.

    Raises:
        ValueError: a required observation is missing, a used one is not a number, an unknown chargerOpMode, a
            negative outputCurrent or a totalPower below -:data:`NEGATIVE_POWER_TOLERANCE_KW` kW.
    """
    op_mode = _number(obs, OP_MODE)
    if op_mode not in OP_MODES:
        raise ValueError(f"observation 109 (chargerOpMode): unknown value {obs[OP_MODE]!r} (expected 0..8)")
    iec_state, connected, charging = OP_MODES[int(op_mode)]
    power_kw = _number(obs, TOTAL_POWER) if charging or TOTAL_POWER in obs else 0.0
    if power_kw < -NEGATIVE_POWER_TOLERANCE_KW:
        raise ValueError(f"observation 120 (totalPower) is {power_kw} kW, negative")
    output_a = _number(obs, OUTPUT_CURRENT) if charging or OUTPUT_CURRENT in obs else 0.0
    if output_a < 0:
        raise ValueError(f"observation 114 (outputCurrent) is {output_a} A, negative")
    phase_currents: tuple[float, float, float] | None = None
    if all(i in obs for i in IN_CURRENTS):
        l1, l2, l3 = (_number(obs, i) for i in IN_CURRENTS)
        phase_currents = (l1, l2, l3)
    if not charging:
        phases = 0
    elif phase_currents is not None:
        phases = sum(1 for a in phase_currents if a > ACTIVE_PHASE_A)
    else:
        phases = _phases_from_output_phase(_number(obs, OUTPUT_PHASE) if OUTPUT_PHASE in obs else None)
    return ChargerReading(
        connected=connected,
        charging=charging,
        power_w=max(0.0, power_kw) * 1000.0,
        current_a=output_a,
        phases=phases,
        timestamp_s=timestamp_s,
        iec_state=iec_state,
        phase_currents_a=phase_currents,
    )


class TokenBucket:
    """A token bucket on an injected clock: at most ``capacity + per_minute × T / 60`` takes in any T s.

    It starts full.  Pure: no I/O, no sleeping; time comes from ``clock`` (a clock stepping backwards
    counts as no time passing).

    Args:
        capacity: the most tokens it holds (the burst), >= 1.
        per_minute: refill rate in tokens per minute, > 0.
        clock: seconds, e.g. ``time.time``.

    Raises:
        ValueError: capacity < 1 or per_minute <= 0.
    """

    def __init__(self, capacity: int, per_minute: float, clock: Clock) -> None:
        if capacity < 1 or not per_minute > 0:
            raise ValueError(f"capacity must be >= 1 and per_minute > 0, got {capacity}, {per_minute}")
        self.capacity = capacity
        self.per_minute = per_minute
        self._clock = clock
        self._tokens = float(capacity)
        self._at = clock()
        self._not_before = -math.inf  # a server's Retry-After: no token before this time

    @property
    def max_per_minute(self) -> float:
        """The most takes in any 60 s: ``capacity + per_minute``."""
        return self.capacity + self.per_minute

    def _refill(self) -> None:
        now = self._clock()
        if now > self._at:
            self._tokens = min(float(self.capacity), self._tokens + (now - self._at) * self.per_minute / 60)
        self._at = now

    def wait_s(self, count: int = 1) -> float:
        """Seconds until ``count`` tokens are there (0 if they are now)."""
        self._refill()
        held_s = self._not_before - self._at
        missing = count - self._tokens
        refill_s = 0.0 if missing <= 1e-9 else missing * 60 / self.per_minute
        return max(refill_s, held_s) if held_s > 0 else refill_s

    def try_take(self, count: int = 1) -> float:
        """Take ``count`` tokens if they are there and return 0; otherwise take none and return the wait
        in s."""
        wait = self.wait_s(count)
        if wait == 0.0:
            self._tokens -= count
        return wait

    def hold_until(self, t_s: float) -> None:
        """No token before ``t_s`` (a server's ``Retry-After``); one token is there at ``t_s``."""
        self._refill()
        self._tokens = min(self._tokens, 1.0 - (t_s - self._at) * self.per_minute / 60)
        self._not_before = max(self._not_before, t_s)


# -- driver ---------------------------------------------------------------------------------------


class _RateLimited(Exception):
    """Not sent, or answered 429: the endpoint's budget is spent for ``wait_s`` seconds."""

    def __init__(self, message: str, wait_s: float) -> None:
        self.wait_s = wait_s
        super().__init__(message)


class _Blocked(Exception):
    """Easee blocked this IP (HTTP 403 "IP blocked"), now or earlier: nothing is sent any more."""


@dataclass(frozen=True, slots=True)
class _Held:
    """What the charger holds as far as this driver knows; ``None`` = unknown (send it)."""

    paused: bool | None = None
    dcc_a: int | None = None  #: dynamic charger current in A
    circuit_a: tuple[int, int, int] | None = None  #: dynamic circuit current P1..P3 in A


@dataclass(frozen=True, slots=True)
class _Write:
    """One request of a write and what the charger holds once it is accepted."""

    bucket: str
    path: str
    body: dict[str, int] | None
    after: _Held


class EaseeCharger:
    """An Easee charger driven through the Easee cloud (see the module docstring for the protocol).

    Requests go one after another over one keep-alive connection; proxies from the environment apply
    (this is a cloud API).

    Attributes:
        name: the configured device name, used in every error and log line.
        capabilities: whole amps, 0 or 6–32 A; phase switching as configured (circuit_current only).

    Args:
        config: the validated settings.
        name: device name for errors and logs.
        clock: Unix seconds (the daemon's clock): reading timestamps, token expiry, rate budgets.
        transport: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        config: Config,
        *,
        name: str,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.capabilities = ChargerCapabilities(
            current_step_a=1.0,
            min_current_a=MIN_CURRENT_A,
            max_current_a=MAX_CURRENT_A,
            phase_switching=config.phase_switching,
            on_off_only=False,
        )
        self._config = config
        self._clock = clock
        self._transport = transport
        self._base_url = config.url.rstrip("/")
        self._client: httpx.AsyncClient | None = None
        self._buckets = {key: TokenBucket(cap, rate, clock) for key, (cap, rate) in BUDGETS.items()}
        self._access: Secret | None = None
        self._refresh: Secret | None = None
        self._refresh_at = -math.inf  # when to refresh the access token
        self._auth_lock = asyncio.Lock()  # one login or refresh at a time
        self._login_refused: tuple[float, str] | None = None  # (until, message) after a refused login
        self._held = _Held()
        self._last_write_s = -math.inf
        self._cached: ChargerReading | None = None
        self._blocked: str | None = None  # the WritesBlocked message once Easee blocked this IP
        self._log = _log.bind(device=name)
        charger = config.charger_id
        self._state_path = f"/state/{charger}/observations?ids={','.join(str(i) for i in OBSERVATIONS)}"
        self._command_path = f"/api/chargers/{charger}/commands/"
        self._circuit_path = f"/api/sites/{config.site_id}/circuits/{config.circuit_id}/settings"

    def __repr__(self) -> str:
        return f"EaseeCharger({self.name!r}, url={self._base_url!r}, charger_id={self._config.charger_id!r})"

    # -- public -----------------------------------------------------------------------------------

    async def read(self) -> ChargerReading:
        """Read the charger's observations, at most every ``poll_interval_s``.

        Returns:
            See :func:`reading_from_observations` (power in W from kW, currents in A).  Inside
            ``poll_interval_s`` of the last poll, that poll's reading with its original ``timestamp_s``,
            without a request.

        Raises:
            DeviceUnavailable: no answer after retries (timeout, connection, HTTP 5xx); the state or login
                budget is spent or Easee answered 429 (the message says when to expect the next poll);
                Easee blocked this IP (HTTP 403; nothing is sent any more).
            DeviceProtocolError: login refused, access denied, unknown charger (404), malformed reply.
        """
        cached = self._cached
        fresh = cached is not None and self._clock() - cached.timestamp_s < self._config.poll_interval_s
        if self._blocked is None and cached is not None and fresh:
            return cached
        where = f"GET {self._base_url}{self._state_path}"
        try:
            response = await self._call("state", "GET", self._state_path)
        except (_RateLimited, _Blocked) as exc:
            raise DeviceUnavailable(self.name, str(exc)) from exc
        self._check(response, where)
        try:
            payload = response.json()
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{where}: {not_json(self._scrub(response.text))}") from exc
        try:
            reading = reading_from_observations(parse_observations(payload), timestamp_s=self._clock())
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{where}: {exc}") from exc
        self._cached = reading
        return reading

    async def apply(self, command: ChargerCommand) -> None:
        """Send what changed of ``command``: pause, or resume and a current in whole amps.

        ``current_a`` is floored to whole amps.  ``charger_current``: ``pause_charging``; from a paused
        or unknown state ``resume_charging`` then ``set_dynamic_charger_current`` (resume resets the
        dynamic current, §1.4 [EV]).  ``circuit_current``: the circuit settings with all three phases
        (P1 = current and P2 = P3 = 0 for ``phases`` 1 with ``phase_switching``, else all three = current;
        ``phases`` is ignored without it), then ``resume_charging`` if paused or unknown — the circuit
        first, so a resumed car never sees an old circuit limit.  Nothing is sent for what the charger
        already holds.  A write waits ``min_write_interval_s`` after the previous one unless it lowers the
        current or pauses; every request also needs a token of its endpoint's bucket.

        Raises:
            ValueError: the current is neither 0 nor 6–32 A after flooring (before any I/O).
            WriteDeferred: not sent now (minimum interval, bucket empty, or HTTP 429); ``retry_after_s``
                says when it would go.  Offer it again later.
            WritesBlocked: Easee blocked this IP (HTTP 403), now or earlier: nothing is sent any more.
            DeviceUnavailable: no answer after retries.
            DeviceProtocolError: login refused, access denied, 400 with the server's reason, unknown ids.
        """
        amps = math.floor(command.current_a + 1e-9)
        if amps != 0 and not MIN_CURRENT_A <= amps <= MAX_CURRENT_A:
            raise ValueError(
                f"{self.name}: current {command.current_a:g} A is neither 0 nor within "
                f"{MIN_CURRENT_A}–{MAX_CURRENT_A} A"
            )
        if self._blocked is not None:
            raise WritesBlocked(self.name, self._blocked)
        writes = self._plan(amps, command.phases)
        if not writes:
            return
        now = self._clock()
        early = self._total_a(writes[-1].after) < self._total_a(self._held)
        wait_s = self._last_write_s + self._config.min_write_interval_s - now
        if wait_s > 0 and not early:
            raise WriteDeferred(
                self.name,
                f"{amps} A not sent yet: min_write_interval_s {self._config.min_write_interval_s:g} s since "
                "the last write",
                retry_after_s=wait_s,
            )
        need = Counter(w.bucket for w in writes)
        wait_s = max(self._buckets[bucket].wait_s(count) for bucket, count in need.items())
        if wait_s > 0:
            raise WriteDeferred(
                self.name, f"{amps} A not sent yet: request budget spent ({', '.join(need)})", wait_s
            )
        self._last_write_s = now
        for write in writes:
            await self._send_write(write)
        self._log.debug("easee.applied", current_a=amps, phases=command.phases, requests=len(writes))

    def forget(self) -> None:
        """Forget the current and pause believed held: the next apply sends them again (Easee clears
        both on plug-in and on reboot)."""
        self._held = _Held()

    async def close(self) -> None:
        """Close the HTTP connection pool; tokens and budgets are kept. Safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- writes -----------------------------------------------------------------------------------

    def _plan(self, amps: int, phases: int) -> list[_Write]:
        held = self._held
        pause = self._command_path + "pause_charging"
        resume = self._command_path + "resume_charging"
        if amps == 0:
            return (
                [] if held.paused is True else [_Write("commands", pause, None, replace(held, paused=True))]
            )
        writes: list[_Write] = []
        if self._config.control == "charger_current":
            if held.paused is not False:
                held = replace(held, paused=False, dcc_a=None)
                writes.append(_Write("commands", resume, None, held))
            if held.dcc_a != amps:
                held = replace(held, dcc_a=amps)
                body = {"amps": amps, "minutes": 0}
                path = self._command_path + "set_dynamic_charger_current"
                writes.append(_Write("commands", path, body, held))
            return writes
        one_phase = self._config.phase_switching and phases == 1
        circuit = (amps, 0, 0) if one_phase else (amps, amps, amps)
        if held.circuit_a != circuit:
            held = replace(held, circuit_a=circuit)
            body = {f"dynamicCircuitCurrentP{i + 1}": a for i, a in enumerate(circuit)}
            writes.append(_Write("circuit_settings", self._circuit_path, body, held))
        if held.paused is not False:
            writes.append(_Write("commands", resume, None, replace(held, paused=False, dcc_a=None)))
        return writes

    def _total_a(self, held: _Held) -> float:
        """Amps offered summed over phases (charger_current: per phase), ``inf`` when unknown."""
        if held.paused is True:
            return 0.0
        offered = held.dcc_a if self._config.control == "charger_current" else held.circuit_a
        if held.paused is None or offered is None:
            return math.inf
        return float(offered if isinstance(offered, int) else sum(offered))

    async def _send_write(self, write: _Write) -> None:
        where = f"POST {self._base_url}{write.path}"
        try:
            response = await self._call(write.bucket, "POST", write.path, write.body)
        except _RateLimited as exc:
            raise WriteDeferred(self.name, str(exc), retry_after_s=exc.wait_s) from exc
        except _Blocked as exc:
            raise WritesBlocked(self.name, str(exc)) from exc
        except BaseException:
            self._held = _Held()  # it may have arrived: send everything next time
            raise
        try:
            self._check(response, where)
            self._check_json(response, where)
        except DeviceProtocolError:
            self._held = _Held()
            raise
        self._held = write.after
        self._log.debug("easee.sent", request=where, body=write.body, status=response.status_code)

    # -- HTTP -------------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._base_url,
                timeout=self._config.timeout_s,
                transport=self._transport,
                headers={"Accept": "application/json"},
            )
        return self._client

    def _scrub(self, text: str) -> str:
        """Server text for a message: at most 200 characters, any secret of ours replaced by ``***``."""
        text = text.strip()
        for secret in (self._config.password, self._access, self._refresh):
            if secret is not None and secret.reveal():
                text = text.replace(secret.reveal(), "***")
        return text[:200]

    def _block(self, where: str, text: str) -> _Blocked:
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
        return _Blocked(self._blocked)

    async def _send_once(
        self, bucket: str, method: str, path: str, body: object, authorized: bool
    ) -> httpx.Response:
        where = f"{method} {self._base_url}{path}"
        if self._blocked is not None:
            raise _Blocked(self._blocked)
        wait_s = self._buckets[bucket].try_take()
        if wait_s > 0:
            raise _RateLimited(f"{where}: not sent, {bucket} request budget spent for {wait_s:.0f} s", wait_s)
        headers = {"Authorization": f"Bearer {self._access.reveal()}"} if authorized and self._access else {}
        response = await self._http().request(method, path, json=body, headers=headers)
        if response.status_code >= 500:
            raise ServerError(response.status_code, self._scrub(response.text))
        return response

    async def _send(
        self, bucket: str, method: str, path: str, body: object = None, *, authorized: bool = True
    ) -> httpx.Response:
        """One request with retries of timeouts, connection errors and 5xx; each attempt takes a token.

        Returns any other response (2xx, 4xx) for the caller to judge.  Raises ``_RateLimited`` (budget
        spent before the first attempt, or 429: the bucket then waits for ``Retry-After``), ``_Blocked``
        (403 "IP blocked", now or earlier), ``DeviceUnavailable`` after the retries (also when the
        budget runs out between them: the message gives the failure, not the budget),
        ``DeviceProtocolError`` for a TLS failure (not retried); no httpx exception escapes.
        """
        where = f"{method} {self._base_url}{path}"
        attempts = self._config.retries + 1
        retrying = backoff_retrying(
            attempts=attempts,
            backoff_s=_BACKOFF_INITIAL_S,
            max_wait_s=_BACKOFF_MAX_S,
            retry=retry_transient,
            log=self._log,
            event="easee.retry",
            context=lambda state: {"request": f"{state.args[1]} {state.args[2]}"},
        )
        failed: list[BaseException] = []  # the failed attempts, for a budget spent between retries

        async def attempt(
            bucket: str, method: str, path: str, body: object, authorized: bool
        ) -> httpx.Response:
            try:
                return await self._send_once(bucket, method, path, body, authorized)
            except (httpx.TransportError, ServerError) as exc:
                failed.append(exc)
                raise

        try:
            response: httpx.Response = await retrying(attempt, bucket, method, path, body, authorized)
        except _RateLimited as exc:
            if not failed:
                raise
            raise self._unavailable(where, failed[-1], len(failed), f"; {exc}") from failed[-1]
        except (httpx.TransportError, ServerError) as exc:
            raise self._unavailable(where, exc, len(failed)) from exc
        except httpx.HTTPError as exc:
            raise DeviceProtocolError(self.name, f"{where}: {describe(exc)}") from exc
        if response.status_code == 429:
            header = response.headers.get("Retry-After")
            wait_s = parse_retry_after(header, self._clock())
            if wait_s is None:
                wait_s = DEFAULT_RETRY_AFTER_S
            self._buckets[bucket].hold_until(self._clock() + wait_s)
            self._log.warning(
                "easee.rate_limited", request=where, retry_after=header, wait_s=round(wait_s, 1)
            )
            raise _RateLimited(
                f"{where}: HTTP 429 Too Many Requests; nothing sent to this endpoint for {wait_s:.0f} s",
                wait_s,
            )
        if response.status_code == 403 and "blocked" in response.text.lower():
            raise self._block(where, self._scrub(response.text))
        return response

    def _check_json(self, response: httpx.Response, where: str) -> None:
        """A write's 2xx reply is empty or JSON (``{"device", "commandId", "ticks"}``); anything else (an
        HTML page from a proxy) does not confirm the command: ``DeviceProtocolError``."""
        if not response.content.strip():
            return
        try:
            response.json()
        except ValueError:
            raise DeviceProtocolError(
                self.name,
                f"{where}: HTTP {response.status_code} but {not_json(self._scrub(response.text))}; the "
                "command may not have reached the charger",
            ) from None

    def _unavailable(self, where: str, exc: BaseException, attempts: int, note: str = "") -> DeviceError:
        """The error for a request that failed ``attempts`` times, the last with ``exc``."""
        tls = tls_failure(exc)
        if tls is not None:
            return DeviceProtocolError(self.name, tls_message(where, tls))
        if isinstance(exc, httpx.TimeoutException):
            cause = f"no answer within {self._config.timeout_s:g} s"
        else:
            cause = self._scrub(describe(exc))
        return DeviceUnavailable(self.name, f"{where}: {cause} ({attempts} attempts){note}")

    def _check(self, response: httpx.Response, where: str) -> None:
        """Accept 2xx (202 carries ``ticks`` for SignalR, not used); raise ``DeviceProtocolError`` else."""
        status = response.status_code
        if 200 <= status < 300:
            return
        reason = self._scrub(response.text)
        charger = self._config.charger_id
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

    async def _call(self, bucket: str, method: str, path: str, body: object = None) -> httpx.Response:
        """An authorized request: a valid token first; on 401 one refresh or login and one retry."""
        await self._ensure_token()
        used = self._access
        response = await self._send(bucket, method, path, body)
        if response.status_code == 401:
            self._log.info("easee.token_rejected", request=f"{method} {path}")
            async with self._auth_lock:
                if self._access is used:  # not renewed meanwhile by another request
                    await self._reauthenticate()
            response = await self._send(bucket, method, path, body)
        return response

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
        where = f"POST {self._base_url}/api/accounts/login"
        self._access = self._refresh = None
        if self._login_refused is not None:
            until, message = self._login_refused
            if self._clock() < until:
                raise DeviceProtocolError(
                    self.name, f"{message}; next login attempt in {until - self._clock():.0f} s"
                )
        body = {"userName": self._config.username, "password": self._config.password.reveal()}
        response = await self._send("auth", "POST", "/api/accounts/login", body, authorized=False)
        if response.status_code in (400, 401, 403):
            message = (
                f"{where}: login refused (HTTP {response.status_code}): check charger.username and "
                f"charger.password ({self._scrub(response.text)})"
            )
            self._login_refused = (self._clock() + LOGIN_REFUSED_BACKOFF_S, message)
            raise DeviceProtocolError(self.name, message)
        expires_in_s = self._store_tokens(response, where)
        self._login_refused = None
        self._log.debug("easee.logged_in", expires_in_s=expires_in_s)

    def _store_tokens(self, response: httpx.Response, where: str) -> float:
        """Keep ``accessToken``/``refreshToken`` and return ``expiresIn`` in s; the token is refreshed
        ``REFRESH_MARGIN_S`` before it expires (at half its lifetime when that is under two minutes)."""
        self._check(response, where)
        try:
            payload: Any = response.json()
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{where}: {not_json(self._scrub(response.text))}") from exc
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
