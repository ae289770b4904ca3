"""AlphaESS Open API emulator: one system and its wallbox, on loopback, over plain HTTP.

Protocol as in the project references ``meters.md`` §3 (sources [A1] alphaess-developer/alphacloud_open_api,
[A2] CharlesGillanders/alphaess-openAPI, [A3] springfall2008/batpred, [A4]
CharlesGillanders/homeassistant-alphaESS) with its emulator checklist §4, and ``chargers.md`` §2.1 (the
wallbox, SMILE-EVCT11) with its checklist §2.3:

- ``GET /api/getLastPowerData?sysSn=`` and ``GET /api/getEssList`` (meters.md §3.3).
- What ``alphaessopenapi``'s ``getdata()`` asks besides (meters.md §3.1, §3.5; shapes and units from
  [A2] ``docs/API.md``, live-captured examples): ``getSumDataForCustomer?sysSn=`` (today's kWh totals,
  the rest ``null`` as on an account without a tariff), ``getOneDateEnergyBySn?sysSn=&queryDate=``
  (kWh totals of the day), ``getChargeConfigInfo`` and ``getDisChargeConfigInfo?sysSn=`` (grid charging
  and discharge time control off), ``getOneDayPowerBySn?sysSn=&queryDate=`` (one 5-minute sample: the
  present one), ``getTimeChargeBySn?sysSn=`` (6017, no operation permission, as [A2] saw on most
  systems).  The day's energy is the site model's tally since it started (the simulated day).
- The wallbox (chargers.md §2.1): ``GET getEvChargerConfigList?sysSn=`` →
  ``[{"evchargerSn", "evchargerModel": "SMILE-EVCT11"}]``; ``GET getEvChargerStatusBySn?sysSn=&evchargerSn=``
  → ``{"evchargerStatus": N}``; ``GET getEvChargerCurrentsBySn?sysSn=`` → ``{"currentsetting": A}`` (the
  household connection limit, not a charge setpoint); ``POST setEvChargerCurrentsBySn``
  ``{"sysSn", "currentsetting"}`` → ``null``; ``POST remoteControlEvCharger``
  ``{"sysSn", "evchargerSn", "controlMode"}`` (1 start, 0 stop) → ``null``.
- Every reply is HTTP 200 with ``{"code", "msg", "expMsg", "data", "extra"}`` (meters.md §3.2), except the
  emulator's own: 500 for an injected fault, 404 for an unknown path, 405 for the wrong method (reads
  are GET, the two setters POST, signed the same way, with a JSON body).
- Checks, in this order: the headers, the timestamp, the signature and the account's request budget
  (6012, 6011, 6010, 6006, 6007, 6053: :mod:`pvcharge.sim.alphaess_gate`); then the parameters: a POST
  body that is not a JSON object, a missing ``sysSn`` or ``evchargerSn``, a ``controlMode`` other than
  0/1 or a ``currentsetting`` outside 6–32 A (6001); a ``sysSn`` other than the configured one (6002, "SN
  not bound to the user"); an ``evchargerSn`` other than the configured one (6038); ``offline`` (6042,
  on every endpoint of the system); a start or stop the wallbox's state does not allow (6008, "Set
  failed").
  AlphaESS publishes neither the order, nor its rate limits (meters.md §3.4, chargers.md §2.1: none beyond
  6053; the HA integration paces POSTs at 30 s; a 2026 stress test saw more than 150 requests a minute
  pass, which the default budget allows), nor which of the two SN codes 6002/6038 a wrong
  ``evchargerSn`` gets, nor the answer to a start or stop in the wrong state (the HA integration only
  sends start in status 2, 4, 5 and stop in 3, 4, 5): all of these are the emulator's choices.

``getLastPowerData`` follows ``site.state()`` (§3.3); the replies' ``data`` (field names, units,
rounding) are :mod:`pvcharge.sim.alphaess_records`.

The wallbox's ``evchargerStatus`` (chargers.md §2.1 table) follows ``remoteControlEvCharger`` and the
simulated car: :class:`~pvcharge.sim.alphaess_wallbox.AlphaEssWallbox`, which the emulator inherits.

Not emulated: the other endpoints (battery setting writes, binding), ``expMsg`` texts the real server
sends, its real rate limits, more than one wallbox, the history of ``getOneDayPowerBySn``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeGuard

from aiohttp import web

from pvcharge.sim.alphaess_gate import AlphaEssGate, envelope
from pvcharge.sim.alphaess_records import (
    day_wh,
    ess_item,
    one_date_energy,
    one_day_power,
    periods,
    power_data,
    sum_data,
)
from pvcharge.sim.alphaess_wallbox import WALLBOX_MODEL, AlphaEssWallbox
from pvcharge.sim.faults import Fault
from pvcharge.sim.http import LoopbackHttpServer
from pvcharge.sim.site import SiteModel, SiteState

#: what ``GARBAGE`` puts into ``getLastPowerData``: well-formed JSON, impossible values (SoC 250 %, a
#: negative charging power).
GARBAGE_POWER_DATA: dict[str, Any] = {"soc": 250.0, "pev": -7400.0}
#: what ``GARBAGE`` answers as ``evchargerStatus``: no such code (chargers.md §2.1 documents 1–6, 9).
GARBAGE_STATUS = 42

Params = Mapping[str, Any]


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class AlphaEssEmulator(AlphaEssGate, AlphaEssWallbox, LoopbackHttpServer):
    """An HTTP server on loopback that answers like the AlphaESS Open API for one system at ``site``.

    Args:
        site: the simulated site, read per request (``site.state()``); the wallbox calls ``site.offer``.
        host: a loopback IP address to listen on.
        port: TCP port, 0 for a free one (see :attr:`port` after :meth:`start`).
        app_id, app_secret: the credentials the emulator accepts.
        sys_sn: the serial of the one system bound to them.
        evcharger_sn: the serial of its one wallbox.
        window_s: the account budget's window, in s: a request finding ``requests_per_window`` others
            (refused ones included) that arrived at most ``window_s`` before it is answered 6053.
        requests_per_window: requests, GETs and POSTs together, allowed inside any ``window_s``; the
            default, 150 a minute, is what a 2026 stress test saw pass (meters.md §3.4).  The wallbox
            driver asks two endpoints per poll, three with the charger list on its first poll, one
            more with an AlphaESS meter on the same system, plus its start/stop commands.
        min_write_interval_s: POSTs closer together than this are answered 6053 too, in s; 0 (the
            default): no such rule (the real limit is unpublished, chargers.md §2.1).
        wallbox_current_a: the current per phase the wallbox offers the car once started, in A: the
            setting in the AlphaESS app, which the Open API cannot change.
        wallbox_phases: the phases it offers them on, 1 or 3.
        clock: Unix seconds for the ``timeStamp`` window, the rate limits and ``FINISHING_S``; give it the
            driver's clock when the demo compresses time.
        tls: serve HTTPS with a throwaway certificate (see :class:`~pvcharge.sim.http.LoopbackHttpServer`),
            like the real ``https://openapi.alphaess.com``; plain HTTP by default.

    Fault knobs, settable at any time:
        faults: every fault of :data:`~pvcharge.sim.faults.HTTP_FAULTS` (see :mod:`pvcharge.sim.http`);
            ``STALE`` answers ``getLastPowerData``, ``getEssList`` and ``getEvChargerStatusBySn`` with the
            site state and wallbox status of the moment it was set (writes still act); ``GARBAGE``
            answers them with :data:`GARBAGE_POWER_DATA` merged in and ``evchargerStatus``
            :data:`GARBAGE_STATUS`.
        offline: answer every endpoint of the system (all but ``getEssList``) with 6042 (system offline).
        null_data: answer ``getLastPowerData`` with every field ``null`` (the Storion-S5 case, §3.3).
        reply_delay_s: seconds to wait before answering each request.
        fail_next: the next N requests answer HTTP 500.

    Attributes:
        household_current_a: ``currentsetting`` in A, the household connection limit (16 until a
            ``setEvChargerCurrentsBySn``); it does not limit the emulated car.
        request_count: requests that reached the emulator, rejected ones included (those answered by a
            fault of :attr:`faults` are only in :attr:`received`).
        too_fast: requests answered 6053.
        peak_in_window: the most requests the budget counted inside one ``window_s`` (each request with
            the ones before it in its window), refused ones included.
        writes: POST requests to ``remoteControlEvCharger`` and ``setEvChargerCurrentsBySn``, rejected
            ones included.

    Raises:
        ValueError: ``host`` is not a loopback IP address, ``requests_per_window`` < 1 or
            ``wallbox_phases`` not 1 or 3.
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
        evcharger_sn: str = "EV1102321010043",
        window_s: float = 60.0,
        requests_per_window: int = 150,
        min_write_interval_s: float = 0.0,
        wallbox_current_a: float = 16.0,
        wallbox_phases: int = 3,
        clock: Callable[[], float] = time.time,
        tls: bool = False,
    ) -> None:
        AlphaEssGate.__init__(
            self,
            app_id=app_id,
            app_secret=app_secret,
            window_s=window_s,
            requests_per_window=requests_per_window,
            min_write_interval_s=min_write_interval_s,
            clock=clock,
        )
        AlphaEssWallbox.__init__(
            self, site, wallbox_current_a=wallbox_current_a, wallbox_phases=wallbox_phases
        )
        LoopbackHttpServer.__init__(self, host, port, what="AlphaESS", tls=tls)
        self.sys_sn = sys_sn
        self.evcharger_sn = evcharger_sn
        self.household_current_a = 16
        self.offline = False
        self.null_data = False
        self.reply_delay_s = 0.0
        self.fail_next = 0
        self.request_count = 0
        self.writes = 0
        self._frozen: tuple[SiteState, int] | None = None  #: site state and wallbox status under STALE
        #: path → (method, handler of the query or JSON body)
        self._endpoints: dict[str, tuple[str, Callable[[Params], web.Response]]] = {
            "api/getLastPowerData": ("GET", self._last_power_data),
            "api/getEssList": ("GET", self._ess_list),
            "api/getSumDataForCustomer": ("GET", self._sum_data),
            "api/getOneDateEnergyBySn": ("GET", self._one_date_energy),
            "api/getOneDayPowerBySn": ("GET", self._one_day_power),
            "api/getChargeConfigInfo": ("GET", self._charge_config),
            "api/getDisChargeConfigInfo": ("GET", self._discharge_config),
            "api/getTimeChargeBySn": ("GET", self._time_charge),
            "api/getEvChargerConfigList": ("GET", self._ev_charger_list),
            "api/getEvChargerStatusBySn": ("GET", self._ev_charger_status),
            "api/getEvChargerCurrentsBySn": ("GET", self._ev_charger_currents),
            "api/setEvChargerCurrentsBySn": ("POST", self._set_ev_charger_currents),
            "api/remoteControlEvCharger": ("POST", self._remote_control),
        }

    def __repr__(self) -> str:
        return f"AlphaEssEmulator(url={self.url!r}, app_id={self.app_id!r}, sys_sn={self.sys_sn!r})"

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:40123/api``."""
        return f"{self.base_url}/api"

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        return app

    def _freeze(self) -> None:
        self._frozen = (self.site.state(), self.wallbox_status())

    def _thaw(self) -> None:
        self._frozen = None

    def _state(self) -> SiteState:
        """The site state the system reports: live, or frozen under ``STALE``."""
        return self._frozen[0] if self._frozen is not None else self.site.state()

    # -- request handling -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.request_count += 1
        if self.reply_delay_s > 0:
            await asyncio.sleep(self.reply_delay_s)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500, text="injected fault")
        endpoint = self._endpoints.get(request.match_info["path"])
        if endpoint is None:
            return web.Response(status=404, text=f"No such path: {request.path}")
        method, handler = endpoint
        if request.method != method:
            return web.Response(status=405, text="Method not allowed", headers={"Allow": method})
        if method == "POST":
            self.writes += 1
        rejected = self._check(request)
        if rejected is not None:
            return rejected
        if method == "GET":
            return handler(request.query)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return envelope(6001, exp_msg="the request body must be a JSON object")
        return handler(body)

    def _system_error(self, params: Params) -> web.Response | None:
        """6001 without ``sysSn``, 6002 for another system's, else None."""
        sys_sn = params.get("sysSn")
        if not sys_sn:
            return envelope(6001, exp_msg="sysSn is required")
        if sys_sn != self.sys_sn:
            return envelope(6002)
        return None

    def _wallbox_error(self, params: Params) -> web.Response | None:
        """As :meth:`_system_error`, then 6001 without ``evchargerSn``, 6038 for another wallbox's."""
        error = self._system_error(params)
        if error is not None:
            return error
        evcharger_sn = params.get("evchargerSn")
        if not evcharger_sn:
            return envelope(6001, exp_msg="evchargerSn is required")
        if evcharger_sn != self.evcharger_sn:
            return envelope(6038)
        return None

    def _last_power_data(self, params: Params) -> web.Response:
        error = self._system_read(params)
        if error is not None:
            return error
        if self.null_data:
            return envelope(200, dict.fromkeys(power_data(self._state()), None))
        data = power_data(self._state())
        if self.faults.active(Fault.GARBAGE):
            data |= GARBAGE_POWER_DATA
        return envelope(200, data)

    def _ess_list(self, params: Params) -> web.Response:
        """One ``getEssList`` item (:func:`~pvcharge.sim.alphaess_records.ess_item`)."""
        state = self._state()
        capacity_kwh = self.site.battery.capacity_wh / 1000 if self.site.battery else 0.0
        return envelope(200, [ess_item(self.sys_sn, state, capacity_kwh)])

    def _system_read(self, params: Params) -> web.Response | None:
        """:meth:`_system_error`, then 6042 while ``offline``, else None."""
        error = self._system_error(params)
        if error is not None:
            return error
        return envelope(6042) if self.offline else None

    def _day_error(self, params: Params) -> web.Response | None:
        """As :meth:`_system_read`, and 6001 without a ``queryDate`` of the form ``yyyy-MM-dd``."""
        error = self._system_read(params)
        if error is not None:
            return error
        try:
            datetime.strptime(str(params.get("queryDate", "")), "%Y-%m-%d")
        except ValueError:
            return envelope(6001, exp_msg="queryDate must be yyyy-MM-dd")
        return None

    def _day_wh(self) -> dict[str, float]:
        """The simulated day's energy in Wh: the site model's tally since it started."""
        self._state()  # brings the model up to the clock
        return day_wh(self.site.energy)

    def _sum_data(self, params: Params) -> web.Response:
        """Today's totals (:func:`~pvcharge.sim.alphaess_records.sum_data`)."""
        error = self._system_read(params)
        if error is not None:
            return error
        return envelope(200, sum_data(self._day_wh()))

    def _one_date_energy(self, params: Params) -> web.Response:
        """The day's totals for any ``queryDate`` (:func:`~pvcharge.sim.alphaess_records.one_date_energy`)."""
        error = self._day_error(params)
        if error is not None:
            return error
        return envelope(200, one_date_energy(self.sys_sn, params["queryDate"], self._day_wh()))

    def _one_day_power(self, params: Params) -> web.Response:
        """One 5-minute sample, the present one (:func:`~pvcharge.sim.alphaess_records.one_day_power`)."""
        error = self._day_error(params)
        if error is not None:
            return error
        sample = one_day_power(self.sys_sn, self._state(), self.site.trace.utc_offset_s)
        return envelope(200, [sample])

    def _charge_config(self, params: Params) -> web.Response:
        """Grid charging off, both periods 00:00–00:00 (off), charging up to the battery's maximum."""
        battery = self.site.battery
        high_pct = round(battery.soc_max_pct) if battery else 100
        return self._periods(params, "gridCharge", "timeCha", "batHighCap", high_pct)

    def _discharge_config(self, params: Params) -> web.Response:
        """Discharge time control off, both periods off, the cut-off at the battery's minimum SoC."""
        battery = self.site.battery
        low_pct = round(battery.soc_min_pct) if battery else 10
        return self._periods(params, "ctrDis", "timeDis", "batUseCap", low_pct)

    def _periods(self, params: Params, switch: str, prefix: str, soc_key: str, soc_pct: int) -> web.Response:
        """The switch off and both periods empty (:func:`~pvcharge.sim.alphaess_records.periods`)."""
        error = self._system_read(params)
        if error is not None:
            return error
        return envelope(200, periods(switch, prefix, soc_key, soc_pct))

    def _time_charge(self, params: Params) -> web.Response:
        """6017 (no operation permission): what [A2] saw on most systems."""
        return self._system_read(params) or envelope(6017)

    # -- the wallbox ------------------------------------------------------------------------------

    def _ev_charger_list(self, params: Params) -> web.Response:
        error = self._system_read(params)
        if error is not None:
            return error
        return envelope(200, [{"evchargerSn": self.evcharger_sn, "evchargerModel": WALLBOX_MODEL}])

    def _ev_charger_status(self, params: Params) -> web.Response:
        error = self._wallbox_error(params)
        if error is not None:
            return error
        if self.offline:
            return envelope(6042)
        if self.faults.active(Fault.GARBAGE):
            return envelope(200, {"evchargerStatus": GARBAGE_STATUS})
        status = self._frozen[1] if self._frozen is not None else self.wallbox_status()
        return envelope(200, {"evchargerStatus": status})

    def _ev_charger_currents(self, params: Params) -> web.Response:
        error = self._system_read(params)
        if error is not None:
            return error
        return envelope(200, {"currentsetting": self.household_current_a})

    def _set_ev_charger_currents(self, body: Params) -> web.Response:
        """``{"sysSn", "currentsetting"}``: 6–32 A, as the HA integration allows (chargers.md §2.1)."""
        error = self._system_error(body)
        if error is not None:
            return error
        current = body.get("currentsetting")
        if not _is_int(current) or not 6 <= current <= 32:
            return envelope(6001, exp_msg="currentsetting must be a whole number of A within 6-32")
        if self.offline:
            return envelope(6042)
        self.household_current_a = current
        return envelope(200)

    def _remote_control(self, body: Params) -> web.Response:
        """``{"sysSn", "evchargerSn", "controlMode"}``: 1 starts, 0 stops (chargers.md §2.1)."""
        error = self._wallbox_error(body)
        if error is not None:
            return error
        mode = body.get("controlMode")
        if not _is_int(mode) or mode not in (0, 1):
            return envelope(6001, exp_msg="controlMode must be 1 (start) or 0 (stop)")
        if self.offline:
            return envelope(6042)
        return envelope(200) if self._control(mode) else envelope(6008)
