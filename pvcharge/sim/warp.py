"""Tinkerforge WARP3 charger emulator: the local HTTP API on loopback, backed by a :class:`SiteModel`.

It emulates firmware since Nov 2024 (slot 8 always active) for the endpoints an external energy
manager uses (reference ``chargers.md`` §3.1–3.4; Tinkerforge esp32-firmware
``software/src/modules/{http,evse_common,power_manager}``; warp-charger ``api_doc_generator/evse.py``):

- ``GET <path>`` reads; writes go to ``<path>`` or ``<path>_update`` by PUT or POST with a JSON body,
  a one-member object may be sent bare (body ``8000`` for ``evse/external_current``).
- Replies: 200 (JSON on reads, empty on writes), 400/404/405 with a plain-text reason, 500 for an
  injected fault, 401 with a Digest challenge when a login is configured.
- ``evse/state.allowed_charging_current`` (mA) is the minimum over the active slots: 0 incoming cable
  and 1 outgoing cable (32000 each), 5 global current (32000), 8 external current.  After a write to
  slot 8 the site is offered ``allowed_charging_current / 1000`` A.
- Slot 8 starts blocked at 0 mA (firmware default ``external_defaults.current``); writing
  ``evse/external_enabled {"enabled": false}`` sets it to 32000 mA.
- ``evse/phase_auto_switch`` ``{"enabled": bool}`` (R/W, starts true) is stored only: the emulator never
  switches by itself.  ``evse/low_level_state`` has the phase fields only: ``phases_current`` (1/3),
  ``phases_requested``, ``phases_state`` (0 idle, 1–7 a switch in progress, §3.3), ``phases_info``
  (bit 0: single-phase car).

Phase switching (``phase_switch=True``; chargers.md §3.3, §3.4): ``info/features`` lists
``phase_switch`` and these endpoints exist (404 otherwise, like a box not set up for it at boot):

- ``power_manager/state`` ``{"config_error_flags": 0, "external_control": n}``: 0 available, 1 idle
  before the first request (as §3.4 step 2 reads it; §3.3 and the firmware call 1 "disabled"),
  2 unavailable (knob ``external_control_unavailable``), 3 switching;
  ``power_manager/low_level_state`` ``{"is_3phase": bool}``.
- ``power_manager/external_control`` ``{"phases_wanted": 0|1|3}`` (0: nothing requested yet).  A write
  of 1 or 3 starts a switch when it differs from ``phases_current``.  400 with a plain-text reason for
  another value ("Invalid value for phases_wanted! Only 1 or 3 are allowed."), while
  ``external_control`` is 2, for a *different* request during a switch, and for 3 while ``phases_info``
  bit 0 is set (knob ``phases_info_single_phase_car``); the same request during a switch is ignored.
  The reasons are worded after the firmware's log lines (``power_manager.cpp``), the 400s follow §3.4.
- A switch walks ``phases_state`` 1→7, ``PHASE_STEP_S`` each, then 0 with the new ``phases_current``,
  and offers the site the external current on the new phases (``SiteModel.offer`` pauses a drawing car
  for 30 s, the emulator's stand-in for stop, CP disconnect and reconnect).  Until then the site keeps
  its offer: the car draws on the old phases during the walk.  The walk follows the site's clock
  (``SiteModel.state().t_s``) and is brought up to date whenever a request arrives, so the site sees
  the new phases at the first request after the walk ended.

Control-pilot disconnect (chargers.md §3.2's ``cp_disconnect`` feature; warp-charger
``api_doc_generator/evse.py`` ``control_pilot_disconnect``; W-fw ``evse_v2``): ``info/features`` lists
``cp_disconnect`` and ``evse/control_pilot_disconnect`` ``{"disconnect": bool}`` is R/W.  While it is true
the car is offered 0 A (it sees an unplugged cable); setting it back to false offers the allowed current
again and wakes a sleeping car (:meth:`SiteModel.wake_car`) — the wake-up evcc and openWB send.

Knobs: ``cp_disconnect_supported = False`` leaves ``cp_disconnect`` out of ``info/features`` (a WARP1);
``management_enabled = True`` answers CP writes 200 but ignores them, as the firmware does while its
charge management is on.

Not emulated: WebSocket ``/ws``, automatic phase switching, ``clear_on_disconnect``, other slots and
endpoints.
HTTP Digest follows RFC 7616 with MD5 and ``qop=auth`` only; one nonce serves the emulator's
lifetime and the nonce count is not checked (no replay protection: loopback test double only).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pvcharge.sim.faults import Fault
from pvcharge.sim.http import LoopbackHttpServer
from pvcharge.sim.site import SiteModel, SiteState

#: valid external currents: 0 (blocked) or this range, in mA (chargers.md §3.2).
MIN_CURRENT_MA = 6000
MAX_CURRENT_MA = 32000
_UINT16_MAX = 65535  # writes above are rejected with 400, below are stored unchecked (chargers.md §3.4)

_SLOT_COUNT = 18  # slots 0..17, chargers.md §3.2
_SLOT_INCOMING_CABLE = 0
_SLOT_OUTGOING_CABLE = 1
_SLOT_GLOBAL = 5
_SLOT_EXTERNAL = 8
_CABLE_MA = 32000

#: how long each ``phases_state`` 1..7 of a switch lasts, in simulated s (7 s in all).
PHASE_STEP_S = 1.0
_PHASES_STATE_LAST = 7

#: ``iec61851_state`` under ``GARBAGE``: no such state (chargers.md §3.3 knows 0–4).
GARBAGE_IEC_STATE = 7
#: ``meter/values.power`` under ``GARBAGE``, in W: a charger does not feed 5 kW back.
GARBAGE_POWER_W = -5000.0

_REALM = "warp3-emu"
_DIGEST_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


class _BadRequest(Exception):
    """A write the firmware would reject with HTTP 400; the message is the plain-text reason."""


@dataclass(frozen=True)
class _Switch:
    """A phase switch in progress: to ``phases``, started at site time ``started_s``."""

    phases: int
    started_s: float


@dataclass(frozen=True)
class _Writable:
    """A writable state: its member names and the function that checks and stores a decoded body."""

    members: tuple[str, ...]
    store: Callable[[dict[str, Any]], None]


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _uint16(body: dict[str, Any], name: str) -> int:
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise _BadRequest(f"{name}: expected an integer, got {json.dumps(value)}")
    if not 0 <= value <= _UINT16_MAX:
        raise _BadRequest(f"{name}: value {value} out of range (Uint16, 0..{_UINT16_MAX})")
    return value


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body[name]
    if not isinstance(value, bool):
        raise _BadRequest(f"{name}: expected a boolean, got {json.dumps(value)}")
    return value


class WarpEmulator(LoopbackHttpServer):
    """An HTTP server on loopback that answers like a WARP3 charger at the simulated site.

    Args:
        site: the simulated site; the emulator calls ``site.offer()`` on writes and reads
            ``site.state()`` per request.  Whoever owns the clock calls ``site.advance()``.
        host: a loopback address to listen on.
        port: TCP port, 0 for a free one (see :attr:`port` after :meth:`start`).
        username, password: require HTTP Digest login when both are set.
        phases_connected: phases the charger is wired with (1 or 3); the car draws on at most these
            (``evse/phases_connected``, reference chargers.md §3.2).
        phase_switch: emulate a WARP3 set up for external phase switching (see the module docstring);
            needs ``phases_connected`` 3.
        tls: serve HTTPS with a throwaway certificate (see :class:`~pvcharge.sim.http.LoopbackHttpServer`);
            plain HTTP (as the WARP serves) by default.

    Fault knobs, settable at any time:
        faults: every fault of :data:`~pvcharge.sim.faults.HTTP_FAULTS` (see :mod:`pvcharge.sim.http`);
            ``STALE`` answers ``evse/state`` and ``meter/*`` with the site state of the moment it was
            set (writes still act); ``GARBAGE`` answers ``iec61851_state`` :data:`GARBAGE_IEC_STATE` and
            a meter power of :data:`GARBAGE_POWER_W`.
        reply_delay_s: seconds to wait before answering each request.
        fail_next: the next N requests answer HTTP 500.
        online: ``False`` drops every request's connection without an answer.
        external_control_unavailable: ``power_manager/state.external_control`` reads 2 and
            ``phases_wanted`` writes answer 400.
        phases_info_single_phase_car: ``phases_info`` bit 0 is set and a request for 3 phases answers 400.
        meter_phases: ``False`` answers ``meter/phases`` 404, like a box whose meter does not report
            the phases (``meter/values`` still answers).
        cp_disconnect_supported: ``False`` leaves ``cp_disconnect`` out of ``info/features``.
        management_enabled: ``True`` ignores writes to ``evse/control_pilot_disconnect`` (answered 200).

    Attributes:
        request_log: the last 256 requests that reached the emulator, as ``(method, path)`` (those
            answered by a fault of :attr:`faults` are only in :attr:`received`).
        switch_log: every phase switch started, as ``(site time in s, phases switched to)``.
        cp_log: every change of ``evse/control_pilot_disconnect``, as ``(site time in s, disconnect)``.

    Raises:
        ValueError: ``host`` is not a loopback address, only one of username/password is set, or
            ``phase_switch`` with ``phases_connected`` 1.
    """

    def __init__(
        self,
        site: SiteModel,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        username: str | None = None,
        password: str | None = None,
        phases_connected: int = 3,
        phase_switch: bool = False,
        tls: bool = False,
    ) -> None:
        if phases_connected not in (1, 3):
            raise ValueError(f"phases_connected must be 1 or 3, got {phases_connected}")
        if phase_switch and phases_connected != 3:
            raise ValueError("phase_switch needs phases_connected 3 (chargers.md §3.4: phases_connected > 1)")
        self.phases_connected = phases_connected
        if (username is None) != (password is None):
            raise ValueError("username and password must be set together")
        super().__init__(host, port, what="WARP", tls=tls)
        self.site = site
        self.reply_delay_s = 0.0
        self.fail_next = 0
        self.online = True
        self.external_control_unavailable = False
        self.phases_info_single_phase_car = False
        self.meter_phases = True
        self.cp_disconnect_supported = True
        self.management_enabled = False
        self.request_log: deque[tuple[str, str]] = deque(maxlen=256)
        self.switch_log: list[tuple[float, int]] = []
        self.cp_log: list[tuple[float, bool]] = []
        self._cp_disconnected = False
        self._username = username
        self._password = password
        self._nonce = secrets.token_hex(16)
        self._external_ma = 0
        self._external_enabled = True
        self._global_ma = 32000
        self._phase_auto_switch = True
        self._phases_current = phases_connected
        self._phases_wanted = 0
        self._switch: _Switch | None = None
        self._frozen: SiteState | None = None  #: the site state under STALE
        self._readers: dict[str, Callable[[], object]] = {
            "evse/state": self._evse_state,
            "evse/slots": self._slots,
            "evse/external_current": lambda: {"current": self._external_ma},
            "evse/external_enabled": lambda: {"enabled": self._external_enabled},
            "evse/global_current": lambda: {"current": self._global_ma},
            "meter/values": self._meter_values,
            "meter/phases": self._meter_phases,
            "info/name": lambda: {
                "name": "warp3-emu",
                "type": "warp3",
                "display_type": "WARP3 Charger (pvcharge emulator)",
                "uid": "emu",
            },
            "info/features": lambda: [
                "evse",
                "meter",
                "meters",
                *(["cp_disconnect"] if self.cp_disconnect_supported else []),
                *(["phase_switch"] if phase_switch else []),
            ],
            "evse/control_pilot_disconnect": lambda: {"disconnect": self._cp_disconnected},
            "evse/low_level_state": self._low_level_state,
            "evse/phase_auto_switch": lambda: {"enabled": self._phase_auto_switch},
        }
        self._writers: dict[str, _Writable] = {
            "evse/external_current": _Writable(("current",), self._store_external_current),
            "evse/external_enabled": _Writable(("enabled",), self._store_external_enabled),
            "evse/phase_auto_switch": _Writable(("enabled",), self._store_phase_auto_switch),
            "evse/control_pilot_disconnect": _Writable(("disconnect",), self._store_cp_disconnect),
        }
        if phase_switch:
            self._readers["power_manager/state"] = lambda: {
                "config_error_flags": 0,
                "external_control": self._external_control(),
            }
            self._readers["power_manager/low_level_state"] = lambda: {"is_3phase": self._phases_current == 3}
            self._readers["power_manager/external_control"] = lambda: {"phases_wanted": self._phases_wanted}
            self._writers["power_manager/external_control"] = _Writable(
                ("phases_wanted",), self._store_phases_wanted
            )

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``."""
        return self.base_url

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        return app

    def _freeze(self) -> None:
        self._frozen = self.site.state()

    def _thaw(self) -> None:
        self._frozen = None

    def _state(self) -> SiteState:
        """The site state the box reports: live, or frozen under ``STALE``."""
        return self._frozen if self._frozen is not None else self.site.state()

    # -- request handling -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.request_log.append((request.method, path))
        self._follow_switch()
        if not self.online:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp's path for a vanished client: no answer, no error log
        if self.reply_delay_s > 0:
            await asyncio.sleep(self.reply_delay_s)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500, text="injected fault")
        if self._username is not None and not self._authorized(request):
            challenge = f'Digest realm="{_REALM}", qop="auth", algorithm=MD5, nonce="{self._nonce}"'
            return web.Response(status=401, text="Unauthorized", headers={"WWW-Authenticate": challenge})

        if path == "meter/phases" and not self.meter_phases:
            return web.Response(status=404, text=f"No such path: /{path}")
        base = path.removesuffix("_update")
        if request.method == "GET" and path in self._readers:
            return web.json_response(self._readers[path]())
        if request.method in ("PUT", "POST") and base in self._writers:
            try:
                self._write(self._writers[base], await request.text())
            except _BadRequest as exc:
                return web.Response(status=400, text=str(exc))
            return web.Response(status=200)
        if path in self._readers:
            allowed = "GET, PUT, POST" if path in self._writers else "GET"
            return web.Response(status=405, text="Method not allowed", headers={"Allow": allowed})
        if base in self._writers:
            return web.Response(status=405, text="Method not allowed", headers={"Allow": "PUT, POST"})
        return web.Response(status=404, text=f"No such path: /{path}")

    def _authorized(self, request: web.Request) -> bool:
        """Check an RFC 7616 Digest ``Authorization`` header (MD5, ``qop=auth``)."""
        scheme, _, rest = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "digest":
            return False
        params = {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _DIGEST_PARAM.finditer(rest)}
        required = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if any(key not in params for key in required):
            return False
        if (
            params["username"] != self._username
            or params["realm"] != _REALM
            or params["nonce"] != self._nonce
            or params["uri"] != request.path_qs
            or params["qop"] != "auth"
            or params.get("algorithm", "MD5").upper() != "MD5"
        ):
            return False
        ha1 = _md5(f"{self._username}:{_REALM}:{self._password}")
        ha2 = _md5(f"{request.method}:{params['uri']}")
        expected = _md5(f"{ha1}:{self._nonce}:{params['nc']}:{params['cnonce']}:auth:{ha2}")
        return hmac.compare_digest(expected, params["response"].lower())

    def _write(self, target: _Writable, text: str) -> None:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _BadRequest(f"Failed to deserialize JSON: {exc.msg}") from exc
        if not isinstance(value, dict):
            if len(target.members) != 1:
                raise _BadRequest(f"expected a JSON object with {', '.join(target.members)}")
            value = {target.members[0]: value}
        missing = [m for m in target.members if m not in value]
        unknown = [k for k in value if k not in target.members]
        if missing or unknown:
            raise _BadRequest(f"expected exactly the keys {', '.join(target.members)}")
        target.store(value)

    # -- device state -----------------------------------------------------------------------------

    def _store_external_current(self, body: dict[str, Any]) -> None:
        self._external_ma = _uint16(body, "current")
        self._offer()

    def _store_external_enabled(self, body: dict[str, Any]) -> None:
        self._external_enabled = _bool(body, "enabled")
        if not self._external_enabled:
            self._external_ma = MAX_CURRENT_MA  # since Nov 2024: "false" sets slot 8 to 32 A
        self._offer()

    def _store_cp_disconnect(self, body: dict[str, Any]) -> None:
        disconnect = _bool(body, "disconnect")
        if disconnect == self._cp_disconnected or self.management_enabled:
            return
        self._cp_disconnected = disconnect
        self.cp_log.append((self.site.now, disconnect))
        if not disconnect:
            self.site.wake_car()  # the car saw an unplug and a plug-in
        self._offer()

    def _active_slots(self) -> dict[int, int]:
        """Active slot index → its ``max_current`` in mA."""
        return {
            _SLOT_INCOMING_CABLE: _CABLE_MA,
            _SLOT_OUTGOING_CABLE: _CABLE_MA,
            _SLOT_GLOBAL: self._global_ma,
            _SLOT_EXTERNAL: self._external_ma,
        }

    def _slots(self) -> object:
        active = self._active_slots()
        return [
            {
                "max_current": active.get(i, MAX_CURRENT_MA),
                "active": i in active,
                "clear_on_disconnect": False,
            }
            for i in range(_SLOT_COUNT)
        ]

    def _allowed_ma(self) -> int:
        """``allowed_charging_current``: the minimum over the active slots, in mA."""
        return min(self._active_slots().values())

    def _offer(self) -> None:
        """Offer the site the allowed current on the current phases; not during a phase switch."""
        if self._switch is None:
            current_a = 0.0 if self._cp_disconnected else self._allowed_ma() / 1000
            self.site.offer(current_a, self._phases_current)

    def _evse_state(self) -> object:
        state = self._state()
        allowed_ma = self._allowed_ma()
        drawing = state.car_connected and state.car_current_a > 0
        if not state.car_connected:
            iec, charger = 0, 0  # A, not connected
        elif drawing:
            iec, charger = 2, 3  # C, charging
        elif allowed_ma >= MIN_CURRENT_MA:
            iec, charger = 1, 2  # B, ready to charge
        else:
            iec, charger = 1, 1  # B, waiting for release
        if self.faults.active(Fault.GARBAGE):
            iec = GARBAGE_IEC_STATE
        return {
            "iec61851_state": iec,
            "charger_state": charger,
            "contactor_state": 3 if drawing else 1,  # 3: live before and after, 1: only before
            "contactor_error": 0,
            "allowed_charging_current": allowed_ma,
            "error_state": 0,
            "lock_state": 0,  # fixed cable: no socket lock
            "dc_fault_current_state": 0,
        }

    def _meter_values(self) -> object:
        power_w = GARBAGE_POWER_W if self.faults.active(Fault.GARBAGE) else self._state().car_power_w
        energy_kwh = self.site.energy.car_wh / 1000
        return {"power": power_w, "energy_rel": energy_kwh, "energy_abs": energy_kwh}

    def _meter_phases(self) -> object:
        phases = self._state().car_phases
        return {
            "phases_connected": [i < self.phases_connected for i in range(3)],
            "phases_active": [i < phases for i in range(3)],
        }

    # -- phase switching --------------------------------------------------------------------------

    def _store_phase_auto_switch(self, body: dict[str, Any]) -> None:
        self._phase_auto_switch = _bool(body, "enabled")

    def _phases_state(self) -> int:
        """0 idle, else 1..7 by the time since the switch started (after :meth:`_follow_switch`)."""
        if self._switch is None:
            return 0
        elapsed_s = self.site.state().t_s - self._switch.started_s
        return min(_PHASES_STATE_LAST, 1 + int(elapsed_s // PHASE_STEP_S))

    def _follow_switch(self) -> None:
        """End a switch whose walk is over: new ``phases_current``, and the site gets the offer."""
        switch = self._switch
        if switch is None:
            return
        if self.site.state().t_s - switch.started_s >= _PHASES_STATE_LAST * PHASE_STEP_S:
            self._switch = None
            self._phases_current = switch.phases
            self._offer()

    def _external_control(self) -> int:
        if self.external_control_unavailable:
            return 2
        if self._switch is not None:
            return 3
        return 1 if self._phases_wanted == 0 else 0

    def _low_level_state(self) -> object:
        return {
            "phases_current": self._phases_current,
            "phases_requested": self._switch.phases if self._switch else self._phases_current,
            "phases_state": self._phases_state(),
            "phases_info": 1 if self.phases_info_single_phase_car else 0,
        }

    def _store_phases_wanted(self, body: dict[str, Any]) -> None:
        phases = body["phases_wanted"]
        if not isinstance(phases, int) or isinstance(phases, bool) or phases not in (1, 3):
            raise _BadRequest("Invalid value for phases_wanted! Only 1 or 3 are allowed.")
        if self.external_control_unavailable:
            raise _BadRequest("Phase switching is currently unavailable.")
        if self._switch is not None:
            if phases == self._switch.phases:
                return  # the same request while busy is ignored
            raise _BadRequest("Phase switching in progress.")
        if phases == 3 and self.phases_info_single_phase_car:
            raise _BadRequest("Can't switch to three phases: the vehicle charges on one phase only.")
        self._phases_wanted = phases
        if phases != self._phases_current:
            started_s = self.site.state().t_s
            self._switch = _Switch(phases, started_s)
            self.switch_log.append((started_s, phases))
