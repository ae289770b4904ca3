"""SENEC.Home emulator: the local ``lala.cgi`` JSON interface on loopback, backed by the site model.

Protocol facts as in the project reference ``meters.md`` §2 (sources: mchwalisz/pysenec [S1],
marq24/ha-senec-v3 [S2], nobl/ioBroker.senec [S3]; evcc [S4]):

- ``POST /lala.cgi`` with a JSON object of sections; each variable asked with ``""`` is answered with
  its encoded value, a section asked with ``{}`` is answered with all its variables (§2.1 [S1, S2]).
  Unknown variables answer ``VARIABLE_NOT_FOUND`` (§2.2, §4).
- Encodings (§2.2 [S1, S3]): floats as ``fl_`` + 8 upper-case hex digits of the big-endian float32
  (:func:`encode_float`), integers as ``u8_``…``i3_`` + two's complement hex (:func:`encode_int`).
- HTTPS with a certificate for 127.0.0.1/localhost/::1 from a throwaway CA made with ``trustme`` at the
  first :meth:`SenecEmulator.start` (current firmware serves HTTPS only with a private-CA certificate,
  §2.1 [S3]); ``tls=False`` serves plain HTTP like firmware before Aug 2023.

Sections served, computed from one ``site.state()`` per request: every variable pysenec 0.3.0's
``Senec.update()`` asks for (vendor signs, §2.3; encodings and example values from the real capture
in pysenec's ``tests/cassettes/test_update.yaml`` [S1] and the variable tables of ha-senec-v3's
``docs/DEVELOPER_DOCUMENTATION.md``, firmware 0826 [S2]):

==============================  ======  ====================================================
``ENERGY``                      type    value
==============================  ======  ====================================================
``GUI_GRID_POW``                fl      ``grid_power_w`` (+ = import)
``GUI_INVERTER_POWER``          fl      ``pv_power_w``
``GUI_BAT_DATA_POWER``          fl      ``-battery_power_w`` (+ = charging) [S4]
``GUI_BAT_DATA_FUEL_CHARGE``    fl      ``battery_soc_pct``
``GUI_HOUSE_POW``               fl      house incl. car: ``pv + grid + battery``
``STAT_STATE``                  u8      :func:`stat_state` (13 BATTERY FULL, 14 CHARGE, … [S1])
``GUI_BAT_DATA_VOLTAGE``        fl      :func:`battery_voltage_v` (V)
``GUI_BAT_DATA_CURRENT``        fl      ``GUI_BAT_DATA_POWER`` / voltage (A, + = charging)
``GUI_CHARGING_INFO``           u8      1 while charging, else 0
``GUI_BOOSTING_INFO``           u8      1 while discharging, else 0 (both captures: 1 with the
                                        battery discharging, ``CHARGING_INFO`` 0)
``STAT_LIMITED_NET_SKEW``       u8      0
``GUI_BAT_DATA_OA_CHARGING``    –       not served: ``VARIABLE_NOT_FOUND``, as in the capture
==============================  ======  ====================================================

``STATISTIC`` (fl, kWh; firmware 0826 answers it empty [S2], older firmware such as the capture's
serves lifetime totals): ``LIVE_PV_GEN``, ``LIVE_GRID_IMPORT``, ``LIVE_GRID_EXPORT``,
``LIVE_BAT_CHARGE``, ``LIVE_BAT_DISCHARGE``: :data:`LIFETIME_KWH` plus what the site's
``energy`` tally (:class:`~pvcharge.sim.site.EnergyTally`, when the state source has one, as
``SiteModel`` does) counted; ``LIVE_HOUSE_CONS`` = PV + import − export + discharge − charge.
``TEMPMEASURE`` (fl, °C): ``BATTERY_TEMP``, ``CASE_TEMP``, ``MCU_TEMP`` of :data:`TEMPERATURES_C`.
``PV1``: ``POWER_RATIO`` u3 100 (%; no feed-in limitation).  ``PWR_UNIT`` (optional power units,
SENEC.Heat and the like; none installed): ``POWER_L1``…``POWER_L3``, each a list of six ``fl`` 0.
``PM1OBJ1`` (the grid meter): ``FREQ`` fl 50 Hz, ``U_AC`` 3 × fl 230 V, ``P_AC`` 3 × fl
``grid_power_w / 3`` (+ = import), ``I_AC`` 3 × fl ``|P_AC| / U_AC``, ``P_TOTAL`` fl
``grid_power_w`` (equal to ``GUI_GRID_POW``, as in the capture).  ``PM1OBJ2`` (a second meter,
absent): the same variables, all 0, as in both sources.

Unknown sections are answered ``{"OBJECT_NOT_FOUND": ""}`` in their place, as firmware 0826 does
(ha-senec-v3's documentation of ``BAT1OBJ2`` [S2]); unknown variables ``VARIABLE_NOT_FOUND``.
Emulator choices where the reference says nothing: a body that is not a JSON object of objects gets
HTTP 400; writes (a variable sent with a value) are not emulated: the variable is answered with its
current value, unchanged.  Not emulated either: the FACTORY cookie and form-urlencoded variant of
newer firmware (§2.1 [S2]).
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Literal, Protocol

from aiohttp import web

from pvcharge.sim.faults import Fault
from pvcharge.sim.http import LoopbackHttpServer
from pvcharge.sim.site import EnergyTally, SiteState

IntKind = Literal["u8", "u1", "u3", "u6", "i8", "i1", "i3"]

#: integer prefix → (bits, signed) (reference §2.2 [S3]).
_INT_KINDS: dict[str, tuple[int, bool]] = {
    "u8": (8, False),
    "u1": (16, False),
    "u3": (32, False),
    "u6": (64, False),
    "i8": (8, True),
    "i1": (16, True),
    "i3": (32, True),
}

#: battery power below this magnitude counts as idle for ``STAT_STATE``, in W.
IDLE_W = 5.0
#: idle at or above this SoC reads BATTERY FULL, at or below :data:`EMPTY_SOC_PCT` BATTERY EMPTY, in %.
FULL_SOC_PCT = 99.0
EMPTY_SOC_PCT = 11.0
#: battery voltage at 0 % SoC and its rise per % SoC, in V: a line through the two sources' samples
#: (51.49 V at 43.9 % [S1], 54.97 V at 82.8 % [S2]).
VOLTAGE_EMPTY_V = 47.5
VOLTAGE_PER_PCT_V = 0.09
#: lifetime totals in kWh before the simulated site's energy is added: about the capture's [S1].
LIFETIME_KWH = {
    "LIVE_PV_GEN": 8733.0,
    "LIVE_GRID_IMPORT": 7829.0,
    "LIVE_GRID_EXPORT": 2743.0,
    "LIVE_BAT_CHARGE": 1981.0,
    "LIVE_BAT_DISCHARGE": 1910.0,
}
#: ``TEMPMEASURE`` values in °C, about ha-senec-v3's example [S2].
TEMPERATURES_C = {"BATTERY_TEMP": 30.0, "CASE_TEMP": 38.0, "MCU_TEMP": 48.0}
GRID_FREQUENCY_HZ = 50.0
PHASE_VOLTAGE_V = 230.0
POWER_UNITS = 6  #: list length of the PWR_UNIT variables [S1]

Encoded = str | list[str]  #: one encoded variable: a value or a list of values


class StateSource(Protocol):
    """Anything that tells what the site measures now, e.g. ``SiteModel``."""

    def state(self) -> SiteState: ...


def encode_float(value: float) -> str:
    """``value`` as ``fl_`` + 8 upper-case hex digits of its big-endian float32 (``448.0`` → ``fl_43E00000``).

    Raises:
        OverflowError: ``value`` is finite but beyond the float32 range.
    """
    return "fl_" + struct.pack(">f", value).hex().upper()


def encode_int(value: int, kind: IntKind) -> str:
    """``value`` as ``<kind>_`` + upper-case hex, two's complement if signed (-1, "i1" → ``i1_FFFF``).

    Raises:
        ValueError: ``value`` does not fit the kind's range.
    """
    bits, signed = _INT_KINDS[kind]
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= value <= high:
        raise ValueError(f"{value} does not fit {kind} ({low}..{high})")
    return f"{kind}_{value & ((1 << bits) - 1):0{bits // 4}X}"


def stat_state(state: SiteState) -> int:
    """The ``STAT_STATE`` code for ``state`` (names from reference §2.3 [S1]).

    Charging → 14 CHARGE; discharging → 17 PV + DISCHARGE with PV, else 16 DISCHARGE; idle (battery
    within ±:data:`IDLE_W`) → 13 BATTERY FULL, 15 BATTERY EMPTY or 21 OWN CONSUMPTION by SoC.
    """
    if state.battery_power_w <= -IDLE_W:
        return 14
    if state.battery_power_w >= IDLE_W:
        return 17 if state.pv_power_w > 0 else 16
    if state.battery_soc_pct >= FULL_SOC_PCT:
        return 13
    if state.battery_soc_pct <= EMPTY_SOC_PCT:
        return 15
    return 21


def battery_voltage_v(soc_pct: float) -> float:
    """The battery voltage served at ``soc_pct`` (%), in V (see :data:`VOLTAGE_EMPTY_V`)."""
    return VOLTAGE_EMPTY_V + VOLTAGE_PER_PCT_V * soc_pct


def energy_section(state: SiteState) -> dict[str, str]:
    """All ``ENERGY`` variables of the emulator, encoded, for ``state`` (vendor signs, see the module)."""
    charge_w = -state.battery_power_w  # vendor sign: + = charging
    voltage_v = battery_voltage_v(state.battery_soc_pct)
    return {
        "STAT_STATE": encode_int(stat_state(state), "u8"),
        "GUI_BAT_DATA_POWER": encode_float(charge_w),
        "GUI_INVERTER_POWER": encode_float(state.pv_power_w),
        "GUI_HOUSE_POW": encode_float(state.pv_power_w + state.grid_power_w + state.battery_power_w),
        "GUI_GRID_POW": encode_float(state.grid_power_w),
        "GUI_BAT_DATA_FUEL_CHARGE": encode_float(state.battery_soc_pct),
        "GUI_CHARGING_INFO": encode_int(int(charge_w >= IDLE_W), "u8"),
        "GUI_BOOSTING_INFO": encode_int(int(charge_w <= -IDLE_W), "u8"),
        "GUI_BAT_DATA_VOLTAGE": encode_float(voltage_v),
        "GUI_BAT_DATA_CURRENT": encode_float(charge_w / voltage_v),
        "STAT_LIMITED_NET_SKEW": encode_int(0, "u8"),
    }


def statistic_section(energy: EnergyTally) -> dict[str, str]:
    """``STATISTIC``: lifetime totals in kWh, :data:`LIFETIME_KWH` plus ``energy`` (Wh)."""
    added_wh = {
        "LIVE_PV_GEN": energy.pv_wh,
        "LIVE_GRID_IMPORT": energy.grid_import_wh,
        "LIVE_GRID_EXPORT": energy.grid_export_wh,
        "LIVE_BAT_CHARGE": energy.battery_charge_wh,
        "LIVE_BAT_DISCHARGE": energy.battery_discharge_wh,
    }
    kwh = {name: LIFETIME_KWH[name] + added_wh[name] / 1000.0 for name in LIFETIME_KWH}
    house_kwh = (
        kwh["LIVE_PV_GEN"]
        + kwh["LIVE_GRID_IMPORT"]
        - kwh["LIVE_GRID_EXPORT"]
        + kwh["LIVE_BAT_DISCHARGE"]
        - kwh["LIVE_BAT_CHARGE"]
    )
    return {name: encode_float(value) for name, value in (kwh | {"LIVE_HOUSE_CONS": house_kwh}).items()}


def meter_section(grid_power_w: float) -> dict[str, Encoded]:
    """``PM1OBJ1``: the three-phase grid meter measuring ``grid_power_w`` (+ = import), shared equally
    by the phases."""
    phase_w = grid_power_w / 3
    return {
        "FREQ": encode_float(GRID_FREQUENCY_HZ),
        "U_AC": [encode_float(PHASE_VOLTAGE_V)] * 3,
        "I_AC": [encode_float(abs(phase_w) / PHASE_VOLTAGE_V)] * 3,
        "P_AC": [encode_float(phase_w)] * 3,
        "P_TOTAL": encode_float(grid_power_w),
    }


def _no_meter() -> dict[str, Encoded]:
    """``PM1OBJ2``: the variables of :func:`meter_section`, all 0, as an absent meter reads."""
    zero = encode_float(0.0)
    return {name: [zero] * len(v) if isinstance(v, list) else zero for name, v in meter_section(0.0).items()}


#: section name → its variables for a state and the site's energy tally, encoded.
SECTIONS: dict[str, Callable[[SiteState, EnergyTally], Mapping[str, Encoded]]] = {
    "ENERGY": lambda state, _: energy_section(state),
    "STATISTIC": lambda _, energy: statistic_section(energy),
    "TEMPMEASURE": lambda _, __: {name: encode_float(c) for name, c in TEMPERATURES_C.items()},
    "PV1": lambda _, __: {"POWER_RATIO": encode_int(100, "u3")},
    "PWR_UNIT": lambda _, __: {f"POWER_L{n}": [encode_float(0.0)] * POWER_UNITS for n in (1, 2, 3)},
    "PM1OBJ1": lambda state, _: meter_section(state.grid_power_w),
    "PM1OBJ2": lambda _, __: _no_meter(),
}


class _BadRequest(Exception):
    """A body the emulator answers with HTTP 400; the message is the plain-text reason."""


class SenecEmulator(LoopbackHttpServer):
    """An HTTPS (or HTTP) server on loopback answering ``POST /lala.cgi`` like a SENEC.Home.

    Args:
        site: the state source, read once per request.
        host: a loopback address (or ``localhost``).
        port: TCP port, 0 for a free one (see :attr:`port` after :meth:`start`; a restart reuses it).
        tls: serve HTTPS with a throwaway certificate (default); ``False`` for plain HTTP.

    Fault knobs, settable at any time:
        faults: every fault of :data:`~pvcharge.sim.faults.HTTP_FAULTS` (see :mod:`pvcharge.sim.http`);
            ``STALE`` answers with the site state of the moment it was set, ``GARBAGE`` reports the SoC
            as ``garbage_soc_pct``.
        garbage_soc_pct: the SoC under ``GARBAGE``, in %: NaN (``fl_7FC00000``, the default) or e.g. 250.
        reply_delay_s: seconds to wait before answering each request.
        fail_next: the next N requests answer HTTP 500.

    Attributes:
        request_count: requests that reached ``/lala.cgi`` (any method, ``fail_next`` included; those
            answered by a fault of :attr:`faults` are only in :attr:`received`).

    Raises:
        ValueError: ``host`` is not a loopback address.
    """

    def __init__(
        self, site: StateSource, host: str = "127.0.0.1", port: int = 0, *, tls: bool = True
    ) -> None:
        super().__init__(host, port, what="SENEC", tls=tls)
        self.site = site
        self.reply_delay_s = 0.0
        self.fail_next = 0
        self.request_count = 0
        self.garbage_soc_pct = math.nan
        self._frozen: tuple[SiteState, EnergyTally] | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``https://127.0.0.1:40123`` (``http://`` with ``tls=False``)."""
        return self.base_url

    def _freeze(self) -> None:
        self._frozen = self._measure()

    def _measure(self) -> tuple[SiteState, EnergyTally]:
        """The site's state now, and its energy tally (a copy; zeros if the source keeps none)."""
        state = self.site.state()
        energy = getattr(self.site, "energy", None)
        return state, replace(energy) if isinstance(energy, EnergyTally) else EnergyTally()

    def _thaw(self) -> None:
        self._frozen = None

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        return app

    # -- request handling -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["path"] != "lala.cgi":
            return web.Response(status=404, text="Not Found")
        self.request_count += 1
        if request.method != "POST":
            return web.Response(status=405, text="Method Not Allowed", headers={"Allow": "POST"})
        body = await request.text()
        state, energy = self._frozen or self._measure()  # measured on arrival, however late the reply
        if self.faults.active(Fault.GARBAGE):
            state = replace(state, battery_soc_pct=self.garbage_soc_pct)
        if self.reply_delay_s > 0:
            await asyncio.sleep(self.reply_delay_s)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500, text="injected fault")
        try:
            answer = _answer(body, state, energy)
        except _BadRequest as exc:
            return web.Response(status=400, text=str(exc))
        return web.Response(text=json.dumps(answer, separators=(",", ":")), content_type="application/json")


def _answer(body: str, state: SiteState, energy: EnergyTally) -> dict[str, object]:
    """The reply to request ``body`` (JSON text) for ``state`` and ``energy``: the structure echoed,
    encoded.

    Raises:
        _BadRequest: the body is not a JSON object of objects.
    """
    try:
        request = json.loads(body)
    except json.JSONDecodeError as exc:
        raise _BadRequest(f"malformed JSON: {exc.msg}") from exc
    if not isinstance(request, dict):
        raise _BadRequest("expected a JSON object of sections")
    reply: dict[str, object] = {}
    for section, variables in request.items():
        if not isinstance(variables, dict):
            raise _BadRequest(f"section {section}: expected an object")
        make = SECTIONS.get(section)
        if make is None:
            reply[section] = {"OBJECT_NOT_FOUND": ""}
            continue
        known = make(state, energy)
        names = variables or known
        reply[section] = {name: known.get(name, "VARIABLE_NOT_FOUND") for name in names}
    return reply
