"""Easee cloud emulator: the parts of ``https://api.easee.com`` a PV controller uses, on loopback, backed by
a :class:`SiteModel`.

Emulated (reference ``chargers.md`` §1 and its checklist §1.8; sources [E-auth], [E-limits], [GEN], [P],
[EV] as keyed there):

- ``POST /api/accounts/login``, ``POST /api/accounts/refresh_token``; every other call needs
  ``Authorization: Bearer <accessToken>`` (§1.1; the account and its tokens: :mod:`pvcharge.sim.easee_gate`).
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
- ``POST /api/chargers/{id}/settings`` with ``ChargerSettings`` keys
  (:data:`~pvcharge.sim.easee_charger.CHARGER_SETTINGS`; any other → 400): ``dynamicChargerCurrent``
  (0–32 A) sets the dynamic charger current as the command does (evcc's way [EV]),
  ``maxChargerCurrent`` caps the charger (6–32 A), the others are stored and shown in ``config``;
  202 ``[{"device", "commandId", "ticks"}]``, or 200 when nothing changed (§1.3, §1.8).
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
  Over it: 429 with ``Retry-After``; after ``block_after_429s`` 429 answers, 403 "IP blocked" for the
  rest of the emulator's life (the windows and the block: :mod:`pvcharge.sim.easee_gate`).  Login and state
  reads are not limited (no published limit).
- ``chargerOpMode``: 1 no car; 3 the car draws; 2 AwaitingStart when offered < 6 A (paused or limited);
  4 Completed when the car is full; 6 ReadyToCharge otherwise (§1.2 table).

- A sleeping car (``CarParams(sleepy=True)``) wakes when the charger resumes from its own pause: after
  ``pause_charging``, the first write that offers 6 A or more again (``resume_charging``, or a dynamic
  charger current) calls :meth:`SiteModel.wake_car` — the wake-up sequence pvcharge's driver sends
  (issue #15: "Easee: pause then resume"; a modelling choice, unverified on hardware).  A pause by a
  dynamic current of 0 A, as the controller pauses, wakes nothing.
- :attr:`offers` records what the charger ran at: every change of the offered current, on ``clock``.

The charger itself (its limits, settings, observations and records) is
:class:`~pvcharge.sim.easee_charger.EaseeCharger`, the login, tokens and rate windows are
:class:`~pvcharge.sim.easee_gate.EaseeGate`; the emulator inherits both and serves them.

Not emulated: SignalR, TTLs, the reset of a pause on a new car connection, schedules, sessions, cloud
latency.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from pvcharge.sim.easee_charger import (
    CHARGER_SETTINGS,
    MAX_CHARGER_A,
    EaseeCharger,
    as_amps,
    check_number,
    check_setting,
)
from pvcharge.sim.easee_gate import EaseeGate, error
from pvcharge.sim.http import Handler, LoopbackHttpServer
from pvcharge.sim.site import SiteModel

MAX_CIRCUIT_A = 80  #: highest circuit value accepted, A (80 A: Easee Charge after a restart, §1.3 [E-lb])
_CIRCUIT_KEYS = ("dynamicCircuitCurrentP1", "dynamicCircuitCurrentP2", "dynamicCircuitCurrentP3")
_COMMANDS = (
    "set_dynamic_charger_current",
    "pause_charging",
    "resume_charging",
    "start_charging",
    "stop_charging",
    "toggle_charging",
)


class EaseeEmulator(EaseeCharger, EaseeGate, LoopbackHttpServer):
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
        block_after_429s: this many 429 answers within
            :data:`~pvcharge.sim.easee_gate.BLOCK_WINDOW_S` block the IP (403).
        clock: Unix seconds for tokens, rate windows and observation timestamps; share the driver's
            clock when it is simulated.
        tls: serve HTTPS with a throwaway certificate (see :class:`~pvcharge.sim.http.LoopbackHttpServer`),
            like the real ``https://api.easee.com``; plain HTTP by default.

    Fault knobs, settable at any time:
        faults: every fault of :data:`~pvcharge.sim.faults.HTTP_FAULTS` (see :mod:`pvcharge.sim.http`);
            ``STALE`` answers observations with the site state and timestamp of the moment it was set
            (commands still act); ``GARBAGE`` reports totalPower (120) as
            :data:`~pvcharge.sim.easee_charger.GARBAGE_TOTAL_POWER_KW`.
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
        LoopbackHttpServer.__init__(self, host, port, what="Easee", tls=tls)
        EaseeGate.__init__(
            self,
            username=username,
            password=password,
            token_lifetime_s=token_lifetime_s,
            block_after_429s=block_after_429s,
        )
        self.settings_per_min = settings_per_min
        self.commands_per_min = commands_per_min
        self.commands_share_budget = commands_share_budget
        self.reply_delay_s = 0.0
        self.fail_next = 0
        self.requests = 0
        self.writes = 0
        self.count_403 = 0
        self.request_log: deque[tuple[float, str, str, int]] = deque(maxlen=4096)
        self._ids = itertools.count(1)
        EaseeCharger.__init__(
            self, site, charger_id=charger_id, site_id=site_id, circuit_id=circuit_id, clock=clock
        )

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
            return self._blocked_reply()
        if self.reply_delay_s > 0:
            await asyncio.sleep(self.reply_delay_s)
        if self.fail_next > 0:
            self.fail_next -= 1
            return error(500, "injected fault")
        try:
            return await handler(request)
        except web.HTTPException as exc:  # the router's 404/405
            return error(exc.status, exc.reason)

    async def _settings_body(self, request: web.Request, known: Collection[str]) -> dict[str, Any]:
        """A settings body: a JSON object of ``known`` keys (partial is fine); ``ValueError`` if not."""
        body = await self._json(request)
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object of settings")
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
        return body

    # -- endpoints --------------------------------------------------------------------------------

    async def _removed(self, request: web.Request) -> web.Response:
        return error(404, "Not Found: removed on 2026-09-01; use GET /state/{chargerId}/observations")

    async def _observations(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            wanted = [int(i) for i in request.query.get("ids", "").split(",") if i.strip()]
        except ValueError:
            return error(400, "ids: expected comma-separated integers")
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
            return error(404, "Not Found")
        budget = f"commands {self.charger_id}" if self.commands_share_budget else request.path
        limited = self._limited(budget, self.commands_per_min)
        if limited is not None:
            return limited
        if command == "set_dynamic_charger_current":
            try:
                body = await self._json(request)
                if not isinstance(body, dict) or "amps" not in body:
                    raise ValueError('expected {"amps": A, "minutes": n}')
                amps = check_number(body["amps"], "amps", MAX_CHARGER_A)
                check_number(body.get("minutes", 0), "minutes", 60 * 24 * 365)
            except ValueError as exc:
                return error(400, str(exc))
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
            changes = {key: check_setting(key, value) for key, value in body.items()}
        except ValueError as exc:
            return error(400, str(exc))
        self.writes += 1
        dynamic_a = as_amps(changes.pop("dynamicChargerCurrent", self.dynamic_charger_a))
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
                math.floor(check_number(body[k], k, MAX_CIRCUIT_A)) for k in ("phase1", "phase2", "phase3")
            )
            check_number(body.get("timeToLive", 0), "timeToLive", 60 * 24 * 365)
        except ValueError as exc:
            return error(400, str(exc))
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
            return error(404, "Site not found")
        return web.json_response(self._site_record(detailed=True))

    async def _site_state(self, request: web.Request) -> web.Response:
        refused = self._refused(request, charger=False)
        if refused is not None:
            return refused
        if request.match_info["site"] != str(self.site_id):
            return error(404, "Site not found")
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
            p1, p2, p3 = (math.floor(check_number(body.get(k, 0), k, MAX_CIRCUIT_A)) for k in _CIRCUIT_KEYS)
        except ValueError as exc:
            return error(400, str(exc))
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
            return error(401, "Unauthorized", headers={"WWW-Authenticate": "Bearer"})
        if charger and request.match_info["charger"] != self.charger_id:
            return error(404, "Charger not found")
        return None

    def _refused_circuit(self, request: web.Request) -> web.Response | None:
        refused = self._refused(request, charger=False)
        if refused is None and (request.match_info["site"], request.match_info["circuit"]) != (
            str(self.site_id),
            str(self.circuit_id),
        ):
            return error(404, "Circuit not found")
        return refused

    def _ticks(self) -> int:
        """.NET ticks (100 ns since 0001-01-01) of now, as in a ``CommandResponse`` (§1.4)."""
        return int((self.clock() + 62_135_596_800) * 10_000_000)
