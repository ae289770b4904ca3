"""The ``data`` of the AlphaESS Open API emulator's read replies: what the system reports of the
simulated site, in the cloud's field names, units and rounding (``meters.md`` §3.3, §3.5; shapes and
units from [A2] CharlesGillanders/alphaess-openAPI ``docs/API.md``, live-captured examples).

``getLastPowerData`` (:func:`power_data`) follows the site state: ``ppv`` (all on string 1), ``pgrid``
(+ import, split evenly on ``pgridDetail.pmeterL1..3``), ``pbat`` (+ discharge), ``soc``, ``pload = ppv +
pgrid + pbat``, ``pev`` = the car's power (on ``pevDetail.ev1Power``), ``prealL1..3`` = (ppv + pbat) / 3.
Powers are whole watts as floats (``11.0``), SoC has one decimal, energies kWh with two decimals, as in
the reference examples.  The day's energy is the site model's tally since it started (:func:`day_wh`).

Pure functions; the server (endpoints, errors, the wallbox) is :mod:`pvcharge.sim.alphaess`, its
signature and budget checks :mod:`pvcharge.sim.alphaess_gate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from pvcharge.sim.site import EnergyTally, SiteState


def w(value: float) -> float:
    """Whole watts as a float, like the cloud's ``11.0``."""
    return float(round(value))


def kwh(wh: float) -> float:
    """Wh as kWh with two decimals, like the cloud's ``14.41``."""
    return round(wh / 1000, 2)


def power_data(state: SiteState) -> dict[str, Any]:
    """``getLastPowerData``'s ``data`` for the site ``state`` (module docstring)."""
    ppv, pgrid, pbat = w(state.pv_power_w), w(state.grid_power_w), w(state.battery_power_w)
    pev = w(state.car_power_w)
    real_phase = w((ppv + pbat) / 3)
    grid_phase = w(pgrid / 3)
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


def ess_item(sys_sn: str, state: SiteState, capacity_kwh: float) -> dict[str, Any]:
    """One ``getEssList`` item (fields per meters.md §3.3; model names and sizes illustrative).

    Args:
        sys_sn: the system's serial; state: the site state (its battery SoC); capacity_kwh: the home
            battery's capacity, in kWh (0 without one).
    """
    return {
        "sysSn": sys_sn,
        "popv": 10.0,
        "minv": "SMILE-G3-S5",
        "poinv": 5.0,
        "cobat": capacity_kwh,
        "mbat": "SMILE-G3-BAT-10.1P",
        "surplusCobat": round(capacity_kwh * state.battery_soc_pct / 100, 1),
        "usCapacity": 100.0,
        "emsStatus": "Normal",
    }


def day_wh(tally: EnergyTally) -> dict[str, float]:
    """The simulated day's energy in Wh from the site model's ``tally``: ``pv``, ``load``, ``export``,
    ``import``, ``charge``, ``discharge`` (the home battery) and ``car``."""
    return {
        "pv": tally.pv_wh,
        "load": tally.house_wh,
        "export": tally.grid_export_wh,
        "import": tally.grid_import_wh,
        "charge": tally.battery_charge_wh,
        "discharge": tally.battery_discharge_wh,
        "car": tally.car_wh,
    }


def sum_data(day: Mapping[str, float]) -> dict[str, Any]:
    """``getSumDataForCustomer``'s ``data``: today's totals in kWh from ``day`` (:func:`day_wh`);
    lifetime, income and the rest ``null``, as on an account without a tariff ([A2] ``docs/API.md``)."""
    return {
        "epvtoday": kwh(day["pv"]),
        "epvtotal": None,
        "eload": kwh(day["load"]),
        "eoutput": kwh(day["export"]),
        "einput": kwh(day["import"]),
        "echarge": kwh(day["charge"]),
        "edischarge": kwh(day["discharge"]),
        "todayIncome": None,
        "totalIncome": None,
        "eselfConsumption": None,
        "eselfSufficiency": None,
        "treeNum": None,
        "carbonNum": None,
        "moneyType": None,
    }


def one_date_energy(sys_sn: str, query_date: str, day: Mapping[str, float]) -> dict[str, Any]:
    """``getOneDateEnergyBySn``'s ``data``: the totals of ``day`` (:func:`day_wh`) in kWh, for any
    ``query_date`` (the emulator keeps one day); no grid charging."""
    return {
        "sysSn": sys_sn,
        "theDate": query_date,
        "eCharge": kwh(day["charge"]),
        "epv": kwh(day["pv"]),
        "eOutput": kwh(day["export"]),
        "eInput": kwh(day["import"]),
        "eGridCharge": 0.0,
        "eDischarge": kwh(day["discharge"]),
        "eChargingPile": kwh(day["car"]),
    }


def one_day_power(sys_sn: str, state: SiteState, utc_offset_s: float) -> dict[str, Any]:
    """One ``getOneDayPowerBySn`` sample: the present one, ``uploadTime`` local (``utc_offset_s``, s),
    powers in W, ``cbat`` in % ([A2] ``docs/API.md`` field names)."""
    local = timezone(timedelta(seconds=utc_offset_s))
    return {
        "sysSn": sys_sn,
        "uploadTime": datetime.fromtimestamp(state.t_s, local).strftime("%Y-%m-%d %H:%M:%S"),
        "ppv": w(state.pv_power_w),
        "load": w(state.house_power_w + state.car_power_w),
        "cbat": round(state.battery_soc_pct, 1),
        "feedIn": w(max(0.0, -state.grid_power_w)),
        "gridCharge": w(max(0.0, state.grid_power_w)),
        "pchargingPile": w(state.car_power_w),
    }


def periods(switch: str, prefix: str, soc_key: str, soc_pct: int) -> dict[str, Any]:
    """``{switch: 0, <prefix>f1: "00:00", <prefix>e1, <prefix>f2, <prefix>e2, soc_key: soc_pct}``: the
    switch off and both periods empty (f = from, e = end; [A2] ``docs/API.md``), as
    ``getChargeConfigInfo`` and ``getDisChargeConfigInfo`` answer."""
    empty = {f"{prefix}{end}{n}": "00:00" for n in (1, 2) for end in "fe"}
    return {switch: 0} | empty | {soc_key: soc_pct}
