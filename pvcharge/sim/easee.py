"""Easee cloud emulator: the parts of ``https://api.easee.com`` a PV controller uses, on loopback, backed by
a :class:`SiteModel`.

Emulated (reference ``chargers.md`` §1 and its checklist §1.8; sources [E-auth], [E-limits], [GEN], [P],
[EV] as keyed there):

- ``POST /api/accounts/login {"userName", "password"}`` → 200 ``{"accessToken", "expiresIn",
  "accessClaims", "tokenType": "Bearer", "refreshToken"}``; 400 for a wrong login (as the cloud answers
  it: pyeasee raises ``BadRequestException``) or a malformed body.
  ``POST /api/accounts/refresh_token {"accessToken", "refreshToken"}`` → a new pair (the old pair
  stops working); 401 for an unknown, used or revoked pair (§1.1).
- Every other call needs ``Authorization: Bearer <accessToken>``; 401 when it is missing, unknown or
  older than ``token_lifetime_s``.
- ``GET /state/{chargerId}/observations?ids=…`` → ``{"observations": [{"id", "dataType", "value",
  "timestamp"}]}`` for the known ids asked for (others left out), from ``site.state()``: 109
  chargerOpMode, **120 totalPower in kW**, 114 outputCurrent (the offered current while a car is
  connected, else 0), 48 dynamicChargerCurrent, 38 phaseMode (2, auto), 110 outputPhase (10 one phase,
  30 three, 0 not drawing), 111–113 dynamicCircuitCurrentP1–P3, 183–185 inCurrentT3–T5 (A per phase
  drawn) (§1.2).  ``GET /api/chargers/{id}/state`` answers 404: Easee removed it on 2026-09-01.
- ``POST /api/chargers/{id}/commands/{command}`` → 202 ``{"device", "commandId", "ticks"}``:
  ``set_dynamic_charger_current {"amps": 0–32, "minutes": n}`` sets the dynamic charger current (the TTL is
  accepted, not emulated); ``pause_charging`` sets it to 0, ``resume_charging`` back to 32 A (evcc waits
  for DCC = 32 after a resume [EV]); ``start_charging``/``stop_charging``/``toggle_charging`` are
  accepted without effect (authorization is not required here, §1.4 [GEN]).
- ``POST /api/chargers/{id}/settings`` with ``ChargerSettings`` keys (:data:`CHARGER_SETTINGS`; any
  other → 400): ``dynamicChargerCurrent`` (0–32 A) sets the dynamic charger current as the command does
  (evcc's way [EV]), ``maxChargerCurrent`` caps the charger (6–32 A), the others are stored and shown in
  ``config``; 202 ``[{"device", "commandId", "ticks"}]``, or 200 when nothing changed (§1.3, §1.8).
- What pyeasee 0.8.21 reads in ordinary use [P]: ``GET /api/chargers`` (its ``get_chargers``),
  ``GET /api/chargers/{id}/config``, ``/site``, ``GET /api/sites``, ``/api/sites/{id}?detailed=true``,
  ``/api/sites/{id}/state``, ``/api/accounts/products``; and ``POST``/``GET
  /api/sites/{site}/circuits/{circuit}/dynamicCurrent`` ``{"phase1..3", "timeToLive"}`` (floored to whole
  amps like the settings; the TTL is accepted, not emulated).
- ``POST /api/sites/{site}/circuits/{circuit}/settings`` with ``dynamicCircuitCurrentP1..P3`` (0–80 A,
  floored to whole amps; an omitted phase goes to 0 [ioBroker.easee#23]; any other key → 400) → 202
  ``[{"device", "commandId", "ticks"}]``, or 200 when nothing changed (§1.3, §1.8).
- The charger applies the lowest of its limits [E-limits]: the site is offered
  ``min(dynamic charger current, circuit limit, maxChargerCurrent, 32 A)`` on 1 phase when P2 = P3 = 0
  (circuit limit P1), otherwise on 3 (circuit limit ``min(P1, P2, P3)``) [EV].  From construction the
  charger holds 32 A on 3 phases: an Easee without limits charges a plugged-in car at full current.
- Rate limits (§1.6): a sliding 60-s window: ``settings_per_min`` for each settings path (charger settings,
  circuit settings, circuit ``dynamicCurrent``; published 20/min [GEN]); ``commands_per_min`` for the
  commands, which Easee does not publish: by default all commands of a charger count together (the
  harsher reading), with ``commands_share_budget=False`` each command path on its own.
  Over it: 429 with ``Retry-After`` in whole seconds until the window has room.
  After ``block_after_429s`` 429 answers within :data:`BLOCK_WINDOW_S`, every request answers 403 with the
  "IP blocked" text of §1.6 for the rest of the emulator's life.  Login and state reads are not limited
  (no published limit).
- ``chargerOpMode``: 1 no car; 3 the car draws; 2 AwaitingStart when offered < 6 A (paused or limited);
  4 Completed when the car is full; 6 ReadyToCharge otherwise (§1.2 table).

- A sleeping car (``CarParams(sleepy=True)``) wakes when the charger resumes from its own pause: after
  ``pause_charging``, the first write that offers 6 A or more again (``resume_charging``, or a dynamic
  charger current) calls :meth:`SiteModel.wake_car` — the wake-up sequence pvcharge's driver sends
  (issue #15: "Easee: pause then resume"; a modelling choice, unverified on hardware).  A pause by a
  dynamic current of 0 A, as the controller pauses, wakes nothing.
- :attr:`offers` records what the charger ran at: every change of the offered current, on ``clock``.

Not emulated: SignalR, TTLs, the reset of a pause on a new car connection, schedules, sessions, cloud
latency.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from pvcharge.sim.faults import Fault
from pvcharge.sim.http import LoopbackHttpServer
from pvcharge.sim.site import SiteModel, SiteState

MAX_CHARGER_A = 32  #: Easee Home/Charge maximum, A
MAX_CIRCUIT_A = 80  #: highest circuit value accepted, A (80 A: Easee Charge after a restart, §1.3 [E-lb])
MIN_CURRENT_A = 6  #: below this the car does not draw (IEC 61851)
BLOCK_WINDOW_S = 300.0  #: "sustained abuse": block_after_429s 429 answers within this many seconds
WINDOW_S = 60.0  #: rate-limit window, s
#: HTTP 403 body once the IP is blocked (chargers.md §1.6 [evcc#3835; easee_hass#117]).
BLOCKED_TEXT = (
    "Too many requests, please check your error handling and backoff logic. "
    "Your IP is registered in our systems and is now blocked."
)
#: totalPower (kW) under ``GARBAGE``: well-formed, impossible (a charger does not feed 7.4 kW back).
GARBAGE_TOTAL_POWER_KW = -7.4
_CIRCUIT_KEYS = ("dynamicCircuitCurrentP1", "dynamicCircuitCurrentP2", "dynamicCircuitCurrentP3")
_COMMANDS = (
    "set_dynamic_charger_current",
    "pause_charging",
    "resume_charging",
    "start_charging",
    "stop_charging",
    "toggle_charging",
)
#: ``ChargerSettings`` keys accepted by ``POST /api/chargers/{id}/settings`` (Easee OpenAPI [GEN];
#: those pyeasee sends [P]) and their initial values, besides ``dynamicChargerCurrent`` (the live
#: :attr:`EaseeEmulator.dynamic_charger_a`, which the commands change too).
CHARGER_SETTINGS: dict[str, object] = {
    "enabled": True,
    "enableIdleCurrent": False,
    "limitToSinglePhaseCharging": False,
    "lockToSinglePhaseCharging": False,
    "phaseMode": 2,
    "smartButtonEnabled": False,
    "smartCharging": False,
    "ledStripBrightness": 50,
    "maxChargerCurrent": 32,
}
#: the text of the cloud's 400 for a wrong login (unverified wording; the status is what clients act on).
WRONG_LOGIN_TITLE = "Invalid username or password"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, title: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"title": title, "status": status}, status=status, headers=headers)


def _number(value: object, name: str, high: float, low: float = 0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name}: expected a number within {low:g}–{high:g}, got {json.dumps(value)}")
    return float(value)


def _amps(value: object) -> float:
    """A current setting, checked by :func:`_setting`."""
    assert isinstance(value, int | float)
    return float(value)


def _setting(key: str, value: object) -> object:
    """A charger setting's value checked by its type (:data:`CHARGER_SETTINGS`); ``ValueError`` if not."""
    if key == "dynamicChargerCurrent":
        return _number(value, key, MAX_CHARGER_A)
    if key == "maxChargerCurrent":
        return _number(value, key, MAX_CHARGER_A, MIN_CURRENT_A)
    if key == "ledStripBrightness":
        return int(_number(value, key, 100))
    if key == "phaseMode":
        if value not in (1, 2, 3) or isinstance(value, bool):
            raise ValueError(f"phaseMode: expected 1, 2 or 3, got {json.dumps(value)}")
        return value
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false, got {json.dumps(value)}")
    return value


class EaseeEmulator(LoopbackHttpServer):
    """An HTTP server on loopback answering like the Easee cloud for one charger at the simulated site.

    Args:
        site: the simulated site; the emulator calls ``site.offer()`` on writes (and once at
            construction) and reads ``site.state()`` per observation request.
        host: a loopback address to listen on.
        port: TCP port, 0 for a free one (see :attr:`port` after :meth:`start`).
        username, password: the account login.
        charger_id, site_id, circuit_id: the ids of the charger, its site and its circuit.
        token_lifetime_s: ``expiresIn`` of access tokens, s on ``clock``.
        settings_per_min: requests per 60 s for each settings path.
        commands_per_min: command requests per 60 s.
        commands_share_budget: all commands of the charger count in one window (default, the harsher
            reading of an unpublished limit); ``False``: each command path has its own.
        block_after_429s: this many 429 answers within :data:`BLOCK_WINDOW_S` block the IP (403).
        clock: Unix seconds for tokens, rate windows and observation timestamps; share the driver's
            clock when it is simulated.
        tls: serve HTTPS with a throwaway certificate (see :class:`~pvcharge.sim.http.LoopbackHttpServer`),
            like the real ``https://api.easee.com``; plain HTTP by default.

    Fault knobs, settable at any time:
        faults: every fault of :data:`~pvcharge.sim.faults.HTTP_FAULTS` (see :mod:`pvcharge.sim.http`);
            ``STALE`` answers observations with the site state and timestamp of the moment it was set
            (commands still act); ``GARBAGE`` reports totalPower (120) as :data:`GARBAGE_TOTAL_POWER_KW`.
        reply_delay_s: seconds to wait before answering each request.
        fail_next: the next N requests answer HTTP 500.

    Attributes:
        requests: requests that reached the emulator (those answered by a fault of :attr:`faults` are
            only in :attr:`received`).
        writes: accepted command and settings requests.
        offers: ``(t_s, current_a, phases)`` at construction and at every change of what the charger
            offers the car (the lowest of its limits).
        count_429, count_403: answers with that status.
        request_log: the last 4096 requests as ``(t_s, method, path with query, status)``.
        issued_tokens: every access and refresh token handed out (for tests that check none leaks).
        dynamic_charger_a: the dynamic charger current, A.
        settings: the charger settings (:data:`CHARGER_SETTINGS`) but the dynamic charger current.
        circuit_a: the circuit dynamic currents P1..P3, whole A.

    Raises:
        ValueError: ``host`` is not a loopback address.
    """

    def __init__(
        self,
        site: SiteModel,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        username: str = "demo@example.com",
        password: str = "demo-password",
        charger_id: str = "EH000001",
        site_id: int = 1,
        circuit_id: int = 2,
        token_lifetime_s: float = 3600,
        settings_per_min: int = 20,
        commands_per_min: int = 10,
        commands_share_budget: bool = True,
        block_after_429s: int = 5,
        clock: Callable[[], float] = time.time,
        tls: bool = False,
    ) -> None:
        super().__init__(host, port, what="Easee", tls=tls)
        self.site = site
        self.charger_id = charger_id
        self.site_id = site_id
        self.circuit_id = circuit_id
        self.token_lifetime_s = token_lifetime_s
        self.settings_per_min = settings_per_min
        self.commands_per_min = commands_per_min
        self.commands_share_budget = commands_share_budget
        self.block_after_429s = block_after_429s
        self.clock = clock
        self.reply_delay_s = 0.0
        self.fail_next = 0
        self.requests = 0
        self.writes = 0
        self.count_429 = 0
        self.count_403 = 0
        self.request_log: deque[tuple[float, str, str, int]] = deque(maxlen=4096)
        self.issued_tokens: list[str] = []
        self.dynamic_charger_a = float(MAX_CHARGER_A)
        self.circuit_a = (MAX_CHARGER_A, MAX_CHARGER_A, MAX_CHARGER_A)
        self.settings = dict(CHARGER_SETTINGS)
        self.offers: list[tuple[float, float, int]] = []
        self._paused_by_command = False  # pause_charging since the last offer of 6 A or more
        self._username = username
        self._password = password
        self._access: dict[str, float] = {}  # access token → expiry on clock
        self._refresh: dict[str, str] = {}  # refresh token → its access token
        self._windows: dict[str, deque[float]] = {}  # endpoint → times of requests let through
        self._recent_429: deque[float] = deque()
        self._blocked = False
        self._ids = itertools.count(1)
        self._frozen: tuple[SiteState, float] | None = None  #: site state and its time under STALE
        self._offer()

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``: the driver's ``url`` setting."""
        return self.base_url

    def _application(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/api/accounts/login", self._login)
        app.router.add_post("/api/accounts/refresh_token", self._refresh_token)
        app.router.add_get("/state/{charger}/observations", self._observations)
        app.router.add_route("*", "/api/chargers/{charger}/state", self._removed)
        app.router.add_post("/api/chargers/{charger}/commands/{command}", self._command)
        app.router.add_post("/api/chargers/{charger}/settings", self._charger_settings)
        app.router.add_post("/api/sites/{site}/circuits/{circuit}/settings", self._circuit_settings)
        app.router.add_post("/api/sites/{site}/circuits/{circuit}/dynamicCurrent", self._dynamic_current)
        app.router.add_get("/api/sites/{site}/circuits/{circuit}/dynamicCurrent", self._get_dynamic_current)
        app.router.add_get("/api/chargers", self._chargers)
        app.router.add_get("/api/chargers/{charger}/config", self._config)
        app.router.add_get("/api/chargers/{charger}/site", self._charger_site)
        app.router.add_get("/api/sites", self._sites)
        app.router.add_get("/api/sites/{site}", self._site)
        app.router.add_get("/api/sites/{site}/state", self._site_state)
        app.router.add_get("/api/accounts/products", self._products)
        return app

    def _freeze(self) -> None:
        self._frozen = (self.site.state(), self.clock())

    def _thaw(self) -> None:
        self._frozen = None

    def expire_tokens(self) -> None:
        """Invalidate every access and refresh token now: the next call answers 401."""
        self._access.clear()
        self._refresh.clear()

    # -- plumbing ---------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests += 1
        response = await self._answer(request, handler)
        if response.status == 403:
            self.count_403 += 1
        self.request_log.append((self.clock(), request.method, request.path_qs, response.status))
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._blocked:
            return web.Response(status=403, text=BLOCKED_TEXT)
        if self.reply_delay_s > 0:
            await asyncio.sleep(self.reply_delay_s)
        if self.fail_next > 0:
            self.fail_next -= 1
            return _error(500, "injected fault")
        try:
            return await handler(request)
        except web.HTTPException as exc:  # the router's 404/405
            return _error(exc.status, exc.reason)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = self._access.get(token) if scheme.lower() == "bearer" else None
        return expiry is not None and self.clock() < expiry

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
        return _error(429, "Too Many Requests", headers={"Retry-After": str(retry_after)})

    async def _settings_body(self, request: web.Request, known: Collection[str]) -> dict[str, Any]:
        """A settings body: a JSON object of ``known`` keys (partial is fine); ``ValueError`` if not."""
        body = await self._json(request)
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object of settings")
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
        return body

    async def _json(self, request: web.Request) -> Any:
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

    # -- endpoints --------------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
        except ValueError as exc:
            return _error(400, str(exc))
        if not isinstance(body, dict) or not {"userName", "password"} <= body.keys():
            return _error(400, "expected userName and password")
        if body["userName"] != self._username or body["password"] != self._password:
            return _error(400, WRONG_LOGIN_TITLE)
        return self._tokens()

    async def _refresh_token(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
        except ValueError as exc:
            return _error(400, str(exc))
        if not isinstance(body, dict):
            return _error(400, "expected accessToken and refreshToken")
        refresh, access = body.get("refreshToken"), body.get("accessToken")
        if (
            not isinstance(refresh, str)
            or not isinstance(access, str)
            or self._refresh.get(refresh) != access
        ):
            return _error(401, "Invalid refresh token")
        del self._refresh[refresh]
        self._access.pop(access, None)
        return self._tokens()

    async def _removed(self, request: web.Request) -> web.Response:
        return _error(404, "Not Found: removed on 2026-09-01; use GET /state/{chargerId}/observations")

    async def _observations(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            wanted = [int(i) for i in request.query.get("ids", "").split(",") if i.strip()]
        except ValueError:
            return _error(400, "ids: expected comma-separated integers")
        known = self._observed()
        measured_s = self._frozen[1] if self._frozen is not None else self.clock()
        stamp = datetime.fromtimestamp(measured_s, UTC).isoformat().replace("+00:00", "Z")
        observations = [
            {"id": i, "dataType": known[i][0], "value": known[i][1], "timestamp": stamp}
            for i in wanted
            if i in known
        ]
        return web.json_response({"observations": observations})

    async def _command(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        command = request.match_info["command"]
        if command not in _COMMANDS:
            return _error(404, "Not Found")
        budget = f"commands {self.charger_id}" if self.commands_share_budget else request.path
        limited = self._limited(budget, self.commands_per_min)
        if limited is not None:
            return limited
        if command == "set_dynamic_charger_current":
            try:
                body = await self._json(request)
                if not isinstance(body, dict) or "amps" not in body:
                    raise ValueError('expected {"amps": A, "minutes": n}')
                amps = _number(body["amps"], "amps", MAX_CHARGER_A)
                _number(body.get("minutes", 0), "minutes", 60 * 24 * 365)
            except ValueError as exc:
                return _error(400, str(exc))
            self.dynamic_charger_a = amps
        elif command == "pause_charging":
            self.dynamic_charger_a = 0.0
            self._paused_by_command = True
        elif command == "resume_charging":
            self.dynamic_charger_a = float(MAX_CHARGER_A)
        self.writes += 1
        self._offer()
        return web.json_response(
            {"device": self.charger_id, "commandId": next(self._ids), "ticks": self._ticks()}, status=202
        )

    async def _charger_settings(self, request: web.Request) -> web.Response:
        refused = self._refused(request) or self._limited(request.path, self.settings_per_min)
        if refused is not None:
            return refused
        try:
            body = await self._settings_body(request, [*CHARGER_SETTINGS, "dynamicChargerCurrent"])
            changes = {key: _setting(key, value) for key, value in body.items()}
        except ValueError as exc:
            return _error(400, str(exc))
        self.writes += 1
        dynamic_a = _amps(changes.pop("dynamicChargerCurrent", self.dynamic_charger_a))
        if dynamic_a == self.dynamic_charger_a and all(self.settings[k] == v for k, v in changes.items()):
            return web.Response(status=200)
        self.settings.update(changes)
        self.dynamic_charger_a = dynamic_a
        self._offer()
        return self._accepted()

    async def _dynamic_current(self, request: web.Request) -> web.Response:
        refused = self._refused_circuit(request) or self._limited(request.path, self.settings_per_min)
        if refused is not None:
            return refused
        try:
            body = await self._json(request)
            if not isinstance(body, dict) or not {"phase1", "phase2", "phase3"} <= body.keys():
                raise ValueError('expected {"phase1": A, "phase2": A, "phase3": A, "timeToLive": minutes}')
            p1, p2, p3 = (
                math.floor(_number(body[k], k, MAX_CIRCUIT_A)) for k in ("phase1", "phase2", "phase3")
            )
            _number(body.get("timeToLive", 0), "timeToLive", 60 * 24 * 365)
        except ValueError as exc:
            return _error(400, str(exc))
        return self._set_circuit((p1, p2, p3))

    async def _get_dynamic_current(self, request: web.Request) -> web.Response:
        refused = self._refused_circuit(request)
        if refused is not None:
            return refused
        p1, p2, p3 = self.circuit_a
        return web.json_response({"phase1": p1, "phase2": p2, "phase3": p3})

    async def _chargers(self, request: web.Request) -> web.Response:
        return self._refused(request, charger=False) or web.json_response([self._charger_record()])

    async def _config(self, request: web.Request) -> web.Response:
        return self._refused(request) or web.json_response(self._charger_config())

    async def _charger_site(self, request: web.Request) -> web.Response:
        return self._refused(request) or web.json_response(self._site_record(detailed=True))

    async def _sites(self, request: web.Request) -> web.Response:
        return self._refused(request, charger=False) or web.json_response([self._site_record(detailed=False)])

    async def _site(self, request: web.Request) -> web.Response:
        refused = self._refused(request, charger=False)
        if refused is not None:
            return refused
        if request.match_info["site"] != str(self.site_id):
            return _error(404, "Site not found")
        return web.json_response(self._site_record(detailed=True))

    async def _site_state(self, request: web.Request) -> web.Response:
        refused = self._refused(request, charger=False)
        if refused is not None:
            return refused
        if request.match_info["site"] != str(self.site_id):
            return _error(404, "Site not found")
        charger = {
            "chargerID": self.charger_id,
            "chargerState": self._state(),
            "chargerConfig": self._charger_config(),
        }
        circuit = {"circuitID": self.circuit_id, "chargerStates": [charger]}
        return web.json_response({"siteId": self.site_id, "circuitStates": [circuit], "equalizerStates": []})

    async def _products(self, request: web.Request) -> web.Response:
        refused = self._refused(request, charger=False)
        if refused is not None:
            return refused
        site = self._site_record(detailed=True)
        product = {key: site[key] for key in ("id", "name", "circuits", "equalizers")}
        return web.json_response([product])

    async def _circuit_settings(self, request: web.Request) -> web.Response:
        refused = self._refused_circuit(request) or self._limited(request.path, self.settings_per_min)
        if refused is not None:
            return refused
        try:
            body = await self._settings_body(request, _CIRCUIT_KEYS)
            p1, p2, p3 = (math.floor(_number(body.get(k, 0), k, MAX_CIRCUIT_A)) for k in _CIRCUIT_KEYS)
        except ValueError as exc:
            return _error(400, str(exc))
        return self._set_circuit((p1, p2, p3))

    def _set_circuit(self, circuit: tuple[int, int, int]) -> web.Response:
        self.writes += 1
        if circuit == self.circuit_a:
            return web.Response(status=200)
        self.circuit_a = circuit
        self._offer()
        return self._accepted()

    def _accepted(self) -> web.Response:
        """202 ``[{"device", "commandId", "ticks"}]``: how settings are accepted (§1.4)."""
        reply = [{"device": self.charger_id, "commandId": next(self._ids), "ticks": self._ticks()}]
        return web.json_response(reply, status=202)

    def _refused(self, request: web.Request, *, charger: bool = True) -> web.Response | None:
        """401 without a valid token, 404 for another charger id; ``None`` when the request may go on."""
        if not self._authorized(request):
            return _error(401, "Unauthorized", headers={"WWW-Authenticate": "Bearer"})
        if charger and request.match_info["charger"] != self.charger_id:
            return _error(404, "Charger not found")
        return None

    def _refused_circuit(self, request: web.Request) -> web.Response | None:
        refused = self._refused(request, charger=False)
        if refused is None and (request.match_info["site"], request.match_info["circuit"]) != (
            str(self.site_id),
            str(self.circuit_id),
        ):
            return _error(404, "Circuit not found")
        return refused

    # -- records (shapes as pyeasee reads them [P]) ---------------------------------------------------

    def _charger_record(self) -> dict[str, Any]:
        return {
            "id": self.charger_id,
            "name": self.charger_id,
            "color": 1,
            "createdOn": "2024-03-01T10:00:00Z",
            "updatedOn": "2026-09-01T10:00:00Z",
            "backPlate": {"id": "BP" + self.charger_id[2:], "masterBackPlateId": "BP" + self.charger_id[2:]},
            "levelOfAccess": 1,
            "productCode": 1,
            "userRole": 1,
            "isTemporary": False,
        }

    def _site_record(self, *, detailed: bool) -> dict[str, Any]:
        site: dict[str, Any] = {
            "id": self.site_id,
            "siteKey": f"EMUL-{self.site_id:04d}",
            "name": "pvcharge emulated site",
            "levelOfAccess": 1,
            "address": {"street": "Loopback 1", "zip": "12700", "area": "Localhost", "country": {"id": "DE"}},
            "ratedCurrent": 35,
            "createdOn": "2024-03-01T10:00:00Z",
            "updatedOn": "2026-09-01T10:00:00Z",
        }
        if detailed:
            circuit = {
                "id": self.circuit_id,
                "siteId": self.site_id,
                "circuitPanelId": 1,
                "panelName": "1",
                "ratedCurrent": MAX_CHARGER_A,
                "fuse": MAX_CHARGER_A,
                "chargers": [self._charger_record()],
            }
            site.update(circuits=[circuit], equalizers=[])
        return site

    def _charger_config(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "isEnabled": settings["enabled"],
            "lockCablePermanently": False,
            "authorizationRequired": False,
            "remoteStartRequired": False,
            "smartButtonEnabled": settings["smartButtonEnabled"],
            "wiFiSSID": "pvcharge-emulator",
            "detectedPowerGridType": 1,
            "offlineChargingMode": 0,
            "circuitMaxCurrentP1": MAX_CHARGER_A,
            "circuitMaxCurrentP2": MAX_CHARGER_A,
            "circuitMaxCurrentP3": MAX_CHARGER_A,
            "enableIdleCurrent": settings["enableIdleCurrent"],
            "limitToSinglePhaseCharging": settings["limitToSinglePhaseCharging"],
            "phaseMode": settings["phaseMode"],
            "localNodeType": 1,  # Master
            "localAuthorizationRequired": False,
            "localRadioForAuthorizationRequired": False,
            "localPreAuthorizeEnabled": False,
            "localAuthorizeOfflineEnabled": False,
            "allowOfflineTxForUnknownId": False,
            "maxChargerCurrent": settings["maxChargerCurrent"],
            "ledStripBrightness": settings["ledStripBrightness"],
            "chargingSchedule": None,
        }

    def _state(self) -> dict[str, Any]:
        """The former ``ChargerStateDTO`` (§1.2), as ``sites/{id}/state`` still carries it."""
        observed = self._observed()
        names = {
            109: "chargerOpMode",
            120: "totalPower",
            114: "outputCurrent",
            48: "dynamicChargerCurrent",
            110: "outputPhase",
            111: "dynamicCircuitCurrentP1",
            112: "dynamicCircuitCurrentP2",
            113: "dynamicCircuitCurrentP3",
            183: "inCurrentT3",
            184: "inCurrentT4",
            185: "inCurrentT5",
        }
        state: dict[str, Any] = {name: observed[i][1] for i, name in names.items()}
        offered, _ = self._limit()
        reason = 0
        if offered < MIN_CURRENT_A:  # chargers.md §1.2: 2 dynamic circuit limit, 52 dynamic charger limit
            reason = 52 if self.dynamic_charger_a < MIN_CURRENT_A else 2
        state.update(reasonForNoCurrent=reason, isOnline=True, cableRating=MAX_CHARGER_A, errorCode=0)
        return state

    # -- device state -----------------------------------------------------------------------------

    def _ticks(self) -> int:
        """.NET ticks (100 ns since 0001-01-01) of now, as in a ``CommandResponse`` (§1.4)."""
        return int((self.clock() + 62_135_596_800) * 10_000_000)

    def _limit(self) -> tuple[float, int]:
        """The offered current per phase in A and the phases: the lowest of the charger's limits."""
        p1, p2, p3 = self.circuit_a
        phases, circuit = (1, p1) if p2 == 0 and p3 == 0 else (3, min(p1, p2, p3))
        max_a = _amps(self.settings["maxChargerCurrent"])
        return min(self.dynamic_charger_a, circuit, max_a, MAX_CHARGER_A), phases

    def _offer(self) -> None:
        current, phases = self._limit()
        if not self.offers or self.offers[-1][1:] != (current, phases):
            self.offers.append((self.clock(), current, phases))
        if self._paused_by_command and current >= MIN_CURRENT_A:  # resumed from its own pause
            self._paused_by_command = False
            self.site.wake_car()
        self.site.offer(current, phases)

    def _observed(self) -> dict[int, tuple[int, object]]:
        """Observation id → (dataType, value) now, or frozen under ``STALE`` (chargers.md §1.2)."""
        state = self._frozen[0] if self._frozen is not None else self.site.state()
        offered, _ = self._limit()
        drawing = state.car_connected and state.car_current_a > 0
        if not state.car_connected:
            op_mode = 1  # Disconnected
        elif drawing:
            op_mode = 3  # Charging
        elif offered < MIN_CURRENT_A:
            op_mode = 2  # AwaitingStart: paused or limited by the EVSE
        elif state.car_soc_pct >= self.site.car.soc_target_pct:
            op_mode = 4  # Completed
        else:
            op_mode = 6  # ReadyToCharge: waiting for the car
        drawn = [state.car_current_a if i < state.car_phases else 0.0 for i in range(3)]
        output_phase = {0: 0, 1: 10, 3: 30}.get(state.car_phases, 0)
        p1, p2, p3 = self.circuit_a
        power_kw = GARBAGE_TOTAL_POWER_KW if self.faults.active(Fault.GARBAGE) else state.car_power_w / 1000
        return {
            109: (4, op_mode),
            120: (3, power_kw),  # kW
            114: (3, offered if state.car_connected else 0.0),
            48: (3, self.dynamic_charger_a),
            38: (4, 2),
            110: (4, output_phase),
            111: (3, float(p1)),
            112: (3, float(p2)),
            113: (3, float(p3)),
            183: (3, drawn[0]),
            184: (3, drawn[1]),
            185: (3, drawn[2]),
        }
