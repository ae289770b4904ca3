"""AlphaESS Open API emulator: the cloud's read endpoints for one system, on loopback, over plain HTTP.

Protocol as in the project reference ``meters.md`` §3 (sources [A1] alphaess-developer/alphacloud_open_api,
[A2] CharlesGillanders/alphaess-openAPI, [A3] springfall2008/batpred, [A4]
CharlesGillanders/homeassistant-alphaESS) and its emulator checklist §4:

- ``GET /api/getLastPowerData?sysSn=`` and ``GET /api/getEssList``.
- Every reply is HTTP 200 with ``{"code", "msg", "expMsg", "data", "extra"}`` (§3.2), except the
  emulator's own: 500 for an injected fault, 404 for an unknown path, 405 for a method other than GET.
- Checks, in this order: headers ``appId`` (6012), ``timeStamp`` (6011), ``sign`` (6010) present; the
  ``timeStamp`` a whole number within ±300 s of ``clock()`` (6006); ``sign`` = SHA-512 hex of appId +
  appSecret + timeStamp with the configured appId and appSecret (6007; an unknown appId fails the same
  way); at most one request per ``min_interval_s`` (6053, counting the rejected ones too); ``sysSn``
  present (6001) and the configured one (6002, "SN not bound to the user"); ``offline`` (6042).
  The order and the 6053 rule are the emulator's choice: AlphaESS publishes neither (§3.4).

``getLastPowerData`` follows ``site.state()`` (§3.3): ``ppv`` (all on string 1), ``pgrid`` (+ import,
split evenly on ``pgridDetail.pmeterL1..3``), ``pbat`` (+ discharge), ``soc``, ``pload = ppv + pgrid +
pbat``, ``pev`` = the car's power (on ``pevDetail.ev1Power``), ``prealL1..3`` = (ppv + pbat) / 3.
Powers are whole watts as floats (``11.0``), SoC has one decimal, as in the reference example.

Not emulated: the other endpoints (write endpoints, ``getOneDayPowerBySn``, the wallbox), ``expMsg``
texts the real server sends, its real rate limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from pvcharge.sim.site import SiteModel

MAX_CLOCK_SKEW_S = 300  #: accepted ``timeStamp`` window, ± s (meters.md §3.1 [A3])

#: ``msg`` of each error the emulator sends; 6053's is verbatim from alphaess-openAPI#7 (meters.md §3.2).
MESSAGES: dict[int, str] = {
    6001: "Parameter error",
    6002: "SN not bound to the user",
    6006: "Timestamp error",
    6007: "Sign verification error",
    6010: "Sign is empty",
    6011: "timestamp is empty",
    6012: "AppId is empty",
    6042: "System offline",
    6053: "The maximum number of requests has been reached",
}


def _envelope(code: int, data: Any = None, exp_msg: str | None = None) -> web.Response:
    msg = "Success" if code == 200 else MESSAGES[code]
    return web.json_response({"code": code, "msg": msg, "expMsg": exp_msg, "data": data, "extra": None})


def _w(value: float) -> float:
    """Whole watts as a float, like the cloud's ``11.0``."""
    return float(round(value))


class AlphaEssEmulator:
    """An HTTP server on loopback that answers like the AlphaESS Open API for one system at ``site``.

    Args:
        site: the simulated site, read per request (``site.state()``).
        host: a loopback IP address to listen on.
        port: TCP port, 0 for a free one (see :attr:`port` after :meth:`start`).
        app_id, app_secret: the credentials the emulator accepts.
        sys_sn: the serial of the one system bound to them.
        min_interval_s: requests closer together than this are answered 6053, in s.
        clock: Unix seconds for the ``timeStamp`` window and ``min_interval_s``; give it the driver's
            clock when the demo compresses time.

    Fault knobs, settable at any time:
        offline: answer ``getLastPowerData`` with 6042 (system offline).
        null_data: answer ``getLastPowerData`` with every field ``null`` (the Storion-S5 case, §3.3).
        reply_delay_s: seconds to wait before answering each request.
        fail_next: the next N requests answer HTTP 500.

    Attributes:
        request_count: requests that reached the emulator, rejected ones included.

    Raises:
        ValueError: ``host`` is not a loopback IP address.
    """

    def __init__(
        self,
        site: SiteModel,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        app_id: str = "pvcharge-demo",
        app_secret: str = "demo-secret",
        sys_sn: str = "AL2002321010043",
        min_interval_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"the AlphaESS emulator listens on loopback only, e.g. 127.0.0.1; got {host!r}")
        self.site = site
        self.host = host
        self.app_id = app_id
        self.sys_sn = sys_sn
        self.min_interval_s = min_interval_s
        self.offline = False
        self.null_data = False
        self.reply_delay_s = 0.0
        self.fail_next = 0
        self.request_count = 0
        self._app_secret = app_secret
        self._clock = clock
        self._port = port
        self._last_request_s = -math.inf
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"AlphaEssEmulator(url={self.url!r}, app_id={self.app_id!r}, sys_sn={self.sys_sn!r})"

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; the real one once started (a restart reuses it)."""
        return self._port

    @property
    def url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:40123/api``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}/api"

    async def start(self) -> None:
        """Listen on ``host:port``."""
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the listening socket and all connections. Safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- request handling -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.request_count += 1
        if self.reply_delay_s > 0:
            await asyncio.sleep(self.reply_delay_s)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500, text="injected fault")
        endpoints = {"api/getLastPowerData": self._last_power_data, "api/getEssList": self._ess_list}
        endpoint = endpoints.get(request.match_info["path"])
        if endpoint is None:
            return web.Response(status=404, text=f"No such path: {request.path}")
        if request.method != "GET":
            return web.Response(status=405, text="Method not allowed", headers={"Allow": "GET"})
        rejected = self._check(request)
        if rejected is not None:
            return rejected
        return endpoint(request)

    def _check(self, request: web.Request) -> web.Response | None:
        """The error envelope for a request failing the signature, timestamp or rate checks, else None."""
        app_id = request.headers.get("appId", "")
        timestamp = request.headers.get("timeStamp", "")
        signature = request.headers.get("sign", "")
        for code, value in ((6012, app_id), (6011, timestamp), (6010, signature)):
            if not value:
                return _envelope(code)
        now = self._clock()
        if not timestamp.isdigit() or abs(int(timestamp) - now) > MAX_CLOCK_SKEW_S:
            return _envelope(6006)
        expected = hashlib.sha512(f"{self.app_id}{self._app_secret}{timestamp}".encode()).hexdigest()
        if app_id != self.app_id or not hmac.compare_digest(signature, expected):
            return _envelope(6007)
        too_fast = now - self._last_request_s < self.min_interval_s
        self._last_request_s = now
        if too_fast:
            return _envelope(6053)
        return None

    def _last_power_data(self, request: web.Request) -> web.Response:
        sys_sn = request.query.get("sysSn")
        if not sys_sn:
            return _envelope(6001, exp_msg="sysSn is required")
        if sys_sn != self.sys_sn:
            return _envelope(6002)
        if self.offline:
            return _envelope(6042)
        if self.null_data:
            return _envelope(200, dict.fromkeys(self._power_data(), None))
        return _envelope(200, self._power_data())

    def _power_data(self) -> dict[str, Any]:
        state = self.site.state()
        ppv, pgrid, pbat = _w(state.pv_power_w), _w(state.grid_power_w), _w(state.battery_power_w)
        pev = _w(state.car_power_w)
        real_phase = _w((ppv + pbat) / 3)
        grid_phase = _w(pgrid / 3)
        return {
            "ppv": ppv,
            "ppvDetail": {"ppv1": ppv, "ppv2": 0.0, "ppv3": 0.0, "ppv4": 0.0, "pmeterDc": 0.0},
            "soc": round(state.battery_soc_pct, 1),
            "pev": pev,
            "pevDetail": {"ev1Power": pev, "ev2Power": None, "ev3Power": None, "ev4Power": None},
            "prealL1": real_phase,
            "prealL2": real_phase,
            "prealL3": real_phase,
            "pgrid": pgrid,
            "pgridDetail": {"pmeterL1": grid_phase, "pmeterL2": grid_phase, "pmeterL3": grid_phase},
            "pload": ppv + pgrid + pbat,
            "pbat": pbat,
        }

    def _ess_list(self, request: web.Request) -> web.Response:
        """One ``getEssList`` item (fields per meters.md §3.3; model names and sizes illustrative)."""
        state = self.site.state()
        capacity_kwh = self.site.battery.capacity_wh / 1000 if self.site.battery else 0.0
        item = {
            "sysSn": self.sys_sn,
            "popv": 10.0,
            "minv": "SMILE-G3-S5",
            "poinv": 5.0,
            "cobat": capacity_kwh,
            "mbat": "SMILE-G3-BAT-10.1P",
            "surplusCobat": round(capacity_kwh * state.battery_soc_pct / 100, 1),
            "usCapacity": 100.0,
            "emsStatus": "Normal",
        }
        return _envelope(200, [item])
