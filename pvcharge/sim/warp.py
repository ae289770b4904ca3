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

The charger itself (its slots, what it offers the site, the control pilot, the phase switch and the
state it reports) is :class:`~pvcharge.sim.warp_charger.WarpCharger`, which the emulator inherits and
serves; this module holds the HTTP side: paths and methods, JSON bodies, the Digest login, faults.

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

from pvcharge.sim.http import LoopbackHttpServer
from pvcharge.sim.site import SiteModel
from pvcharge.sim.warp_charger import BadRequest, WarpCharger

_REALM = "warp3-emu"
_DIGEST_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


@dataclass(frozen=True)
class _Writable:
    """A writable state: its member names and the function that checks and stores a decoded body."""

    members: tuple[str, ...]
    store: Callable[[dict[str, Any]], None]


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class WarpEmulator(WarpCharger, LoopbackHttpServer):
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
            set (writes still act); ``GARBAGE`` answers ``iec61851_state``
            :data:`~pvcharge.sim.warp_charger.GARBAGE_IEC_STATE` and a meter power of
            :data:`~pvcharge.sim.warp_charger.GARBAGE_POWER_W`.
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
        WarpCharger.__init__(self, site, phases_connected=phases_connected, phase_switch=phase_switch)
        if (username is None) != (password is None):
            raise ValueError("username and password must be set together")
        LoopbackHttpServer.__init__(self, host, port, what="WARP", tls=tls)
        self.reply_delay_s = 0.0
        self.fail_next = 0
        self.online = True
        self.meter_phases = True
        self.cp_disconnect_supported = True
        self.request_log: deque[tuple[str, str]] = deque(maxlen=256)
        self._username = username
        self._password = password
        self._nonce = secrets.token_hex(16)
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
            except BadRequest as exc:
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
            raise BadRequest(f"Failed to deserialize JSON: {exc.msg}") from exc
        if not isinstance(value, dict):
            if len(target.members) != 1:
                raise BadRequest(f"expected a JSON object with {', '.join(target.members)}")
            value = {target.members[0]: value}
        missing = [m for m in target.members if m not in value]
        unknown = [k for k in value if k not in target.members]
        if missing or unknown:
            raise BadRequest(f"expected exactly the keys {', '.join(target.members)}")
        target.store(value)
