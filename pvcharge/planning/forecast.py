"""Solar forecasts for the planner: the expected PV surplus per 15-min slot, from Open-Meteo (irradiance
on each array's plane, turned into power here) or forecast.solar (power per array from the service).

Both need no key; arrays are given by latitude/longitude, tilt (0° flat, 90° vertical) and azimuth
(0° south, -90° east, 90° west; the convention of both services) and peak power.

Sources (checked 2026-08, /work/shared/reference/sources.md):

**Open-Meteo** (``GET https://api.open-meteo.com/v1/forecast``, https://open-meteo.com/en/docs; 600/min,
5000/h, 10000/day per IP, non-commercial): per array, ``minutely_15=global_tilted_irradiance,temperature_2m``
with ``tilt`` and ``azimuth``, ``timeformat=unixtime``. Its radiation values are means over the
*preceding* interval (the ``_instant`` variants are not), so the value at ``t`` is the slot
``[t - 900, t)``. Power model (the form of evcc's ``templates/definition/tariff/open-meteo.yaml``)::

    cell_temp_c = air_temp_c + 0.03 K·m²/W × gti_w_m2
    power_w = kwp × 1000 W/kWp × gti_w_m2 / (1000 W/m²) × performance_ratio
              × (1 − 0.004 /K × (cell_temp_c − 25 °C))

clamped to 0 and, summed over the arrays, to ``inverter_max_w``. ``kwp`` is rated at 1000 W/m² and 25 °C
cell temperature (standard test conditions). −0.004 /K is crystalline silicon's power temperature
coefficient (datasheets: −0.3 to −0.45 %/K; evcc's default ``alphatemp``). 0.03 K·m²/W is the cell
heating of the Ross model: NOCT 45 °C at 800 W/m² and 20 °C air gives (45 − 20) / 800 = 0.031; the
coefficients evcc lists by mounting (from Solar Energy 2020,
https://www.sciencedirect.com/science/article/pii/S0038092X20309107) run from 0.020 (well cooled) to
0.056 (on a sloped roof), so a hot roof array is over-estimated by up to (0.056 − 0.03) × 600 × 0.004
≈ 6 % at 600 W/m², which ``pv_factor`` covers. ``performance_ratio`` (default 0.85) covers inverter,
wiring, soiling and mismatch losses.

**forecast.solar** (``GET https://api.forecast.solar/estimate/{lat}/{lon}/{dec}/{az}/{kwp}?time=utc``,
https://doc.forecast.solar/api:estimate; 12 requests an hour per IP on the free tier, one per array,
hourly values): ``result.watts`` maps a time (``2026-12-07 09:00:00`` in UTC with ``time=utc``, or ISO
8601 with an offset) to the expected AC power in W at that instant; a slot gets the power linearly
interpolated at its middle, 0 outside the day the service gives.

The sources give PV power (summed over the arrays, clamped to ``inverter_max_w``); the planner counts
on the **surplus** = PV × the day's correction (:class:`PvCorrection`: measured ÷ forecast so far) −
``base_load_w`` (the house's typical draw), at least 0. A home battery that charges first is not
modelled; the planner's ``pv_factor`` margin covers such losses.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pvcharge.errors import DeviceProtocolError
from pvcharge.planning.planner import SLOT_S, slot_start
from pvcharge.planning.source import HttpSource, JsonGetter, SlotValues

OPEN_METEO_URL = "https://api.open-meteo.com/v1/forecast"
FORECAST_SOLAR_URL = "https://api.forecast.solar"
#: forecast.solar gives a value per hour of daylight (plus sunrise and sunset): a longer gap is a night, in s.
FORECAST_SOLAR_MAX_GAP_S = 3 * 3600
#: temperature coefficient of crystalline silicon power, per K above 25 °C cell temperature (module docstring)
TEMP_COEFF_PER_K = -0.004
#: cell heating above air per W/m² of irradiance, in K·m²/W (Ross model, NOCT; module docstring)
CELL_HEATING_K_PER_W_M2 = 0.03


@dataclass(frozen=True)
class Array:
    """One roof plane: position, orientation (tilt 0–90°, azimuth -180–180°, 0 = south) and size (kWp)."""

    latitude: float
    longitude: float
    tilt_deg: float
    azimuth_deg: float
    kwp: float


def array_power_w(kwp: float, gti_w_m2: float, air_temp_c: float, performance_ratio: float) -> float:
    """Expected AC power of an array (W) from the irradiance on its plane and the air temperature, by
    the model in the module docstring; 0 for no or negative irradiance."""
    if gti_w_m2 <= 0:
        return 0.0
    cell_temp_c = air_temp_c + CELL_HEATING_K_PER_W_M2 * gti_w_m2
    derate = 1 + TEMP_COEFF_PER_K * (cell_temp_c - 25)
    return max(0.0, kwp * gti_w_m2 * performance_ratio * derate)


def clamp_to_inverter(total_w: SlotValues, inverter_max_w: float | None) -> SlotValues:
    """PV power per slot, at most the inverter's AC limit."""
    cap = math.inf if inverter_max_w is None else inverter_max_w
    return {t: min(p, cap) for t, p in total_w.items()}


def surplus(pv_w: Mapping[int, float], base_load_w: float, factor: float = 1.0) -> SlotValues:
    """The surplus the planner counts on per slot: PV × ``factor`` (:class:`PvCorrection`) minus the
    base load, at least 0."""
    return {t: max(0.0, p * factor - base_load_w) for t, p in pv_w.items()}


class PvCorrection:
    """How far the forecast is off today: PV energy measured ÷ PV energy forecast over today's finished
    slots (local day), clamped to ``low``–``high``; 1 until the forecast for them reaches ``min_kwh``.

    Feed it the measured PV power (:meth:`measured`) and the forecast for each slot as it was when
    the slot was current (:meth:`expected`: a source's answer drops past slots).
    """

    def __init__(self, *, min_kwh: float = 1.0, low: float = 0.5, high: float = 1.5) -> None:
        self.min_kwh = min_kwh
        self.low = low
        self.high = high
        self._measured_kwh: dict[int, float] = {}
        self._expected_w: dict[int, float] = {}

    def measured(self, t_s: float, pv_w: float, dt_s: float) -> None:
        """``pv_w`` measured for ``dt_s`` up to ``t_s``."""
        slot = slot_start(t_s - dt_s / 2)
        self._measured_kwh[slot] = self._measured_kwh.get(slot, 0.0) + max(0.0, pv_w) * dt_s / 3.6e6

    def expected(self, slot_s: int, pv_w: float) -> None:
        self._expected_w.setdefault(slot_s, pv_w)

    def factor(self, now_s: float, day_start_s: float) -> float:
        """The factor for the rest of the day; drops what is older than ``day_start_s``."""
        for book in (self._measured_kwh, self._expected_w):
            for slot in [t for t in book if t < day_start_s]:
                del book[slot]
        done = [t for t in self._expected_w if t + SLOT_S <= now_s and t in self._measured_kwh]
        forecast_kwh = sum(self._expected_w[t] * SLOT_S / 3.6e6 for t in done)
        if forecast_kwh < self.min_kwh:
            return 1.0
        measured_kwh = sum(self._measured_kwh[t] for t in done)
        return min(self.high, max(self.low, measured_kwh / forecast_kwh))


class OpenMeteoForecast(HttpSource):
    """PV power per slot from Open-Meteo's tilted irradiance, one request per array."""

    def __init__(
        self,
        getter: JsonGetter,
        arrays: Sequence[Array],
        *,
        performance_ratio: float = 0.85,
        inverter_max_w: float | None = None,
        forecast_days: int = 2,
        url: str = OPEN_METEO_URL,
    ) -> None:
        super().__init__(getter)
        self._arrays = tuple(arrays)
        self._pr = performance_ratio
        self._inverter_max_w = inverter_max_w
        self._days = forecast_days
        self._url = url

    async def fetch(self, now_s: float) -> SlotValues:
        """PV power per slot (W, at most ``inverter_max_w``) from the current one on.

        Raises:
            DeviceUnavailable, RateLimited: see :meth:`JsonGetter.get`.
            DeviceProtocolError: an answer not in the documented shape.
        """
        total: SlotValues = {}
        for array in self._arrays:
            body = await self._getter.get(
                self._url,
                {
                    "latitude": array.latitude,
                    "longitude": array.longitude,
                    "tilt": array.tilt_deg,
                    "azimuth": array.azimuth_deg,
                    "minutely_15": "global_tilted_irradiance,temperature_2m",
                    "forecast_days": self._days,
                    "timeformat": "unixtime",
                },
            )
            for t, power_w in parse_open_meteo(body, array.kwp, self._pr, self.name).items():
                if t >= slot_start(now_s):
                    total[t] = total.get(t, 0.0) + power_w
        return clamp_to_inverter(total, self._inverter_max_w)


def parse_open_meteo(
    body: Any, kwp: float, performance_ratio: float, name: str = "forecast open-meteo"
) -> SlotValues:
    """Array power per slot (W) from an Open-Meteo answer; ``null`` values are left out.

    Raises:
        DeviceProtocolError: no ``minutely_15`` with ``time``, ``global_tilted_irradiance`` and
            ``temperature_2m`` lists of one length; an ``error`` answer (its ``reason`` quoted).
    """
    if isinstance(body, dict) and body.get("error"):
        raise DeviceProtocolError(name, f"Open-Meteo refused: {str(body.get('reason'))[:200]}")
    block = body.get("minutely_15") if isinstance(body, dict) else None
    if not isinstance(block, dict):
        raise DeviceProtocolError(name, "expected a 'minutely_15' object")
    times, gti, temp = block.get("time"), block.get("global_tilted_irradiance"), block.get("temperature_2m")
    if not (isinstance(times, list) and isinstance(gti, list) and isinstance(temp, list)) or not (
        len(times) == len(gti) == len(temp)
    ):
        raise DeviceProtocolError(
            name, "expected minutely_15.time, .global_tilted_irradiance and .temperature_2m of one length"
        )
    power: SlotValues = {}
    for t, irradiance, air_c in zip(times, gti, temp, strict=True):
        if irradiance is None or not isinstance(t, int | float):
            continue
        if not isinstance(irradiance, int | float) or not isinstance(air_c, int | float | None):
            raise DeviceProtocolError(name, f"at {t}: expected numbers, got {irradiance!r}, {air_c!r}")
        power[int(t) - SLOT_S] = array_power_w(
            kwp, irradiance, 25.0 if air_c is None else air_c, performance_ratio
        )
    return power


class ForecastSolarForecast(HttpSource):
    """PV power per slot from forecast.solar's estimate, one request per array; ``api_key`` (a paid
    plan's) goes in the path and is shown as ``***`` in every message."""

    def __init__(
        self,
        getter: JsonGetter,
        arrays: Sequence[Array],
        *,
        inverter_max_w: float | None = None,
        api_key: str | None = None,
        url: str = FORECAST_SOLAR_URL,
    ) -> None:
        super().__init__(getter)
        self._arrays = tuple(arrays)
        self._inverter_max_w = inverter_max_w
        self._base = url.rstrip("/") + (f"/{api_key}" if api_key else "")
        self._shown_base = url.rstrip("/") + ("/***" if api_key else "")

    async def fetch(self, now_s: float) -> SlotValues:
        """PV power per slot (W, at most ``inverter_max_w``) from the current one on, as far as the
        service forecasts.

        Raises:
            DeviceUnavailable, RateLimited: see :meth:`JsonGetter.get` (the free tier's 12 an hour).
            DeviceProtocolError: an answer not in the documented shape.
        """
        total: SlotValues = {}
        for a in self._arrays:
            plane = f"{a.latitude:g}/{a.longitude:g}/{a.tilt_deg:g}/{a.azimuth_deg:g}/{a.kwp:g}"
            body = await self._getter.get(
                f"{self._base}/estimate/{plane}",
                {"time": "utc"},
                shown_url=f"{self._shown_base}/estimate/{plane}",
            )
            for t, power_w in parse_forecast_solar(body, self.name).items():
                if t >= slot_start(now_s):
                    total[t] = total.get(t, 0.0) + power_w
        return clamp_to_inverter(total, self._inverter_max_w)


def parse_forecast_solar(body: Any, name: str = "forecast forecast.solar") -> SlotValues:
    """Power per slot (W) from a forecast.solar estimate: ``result.watts`` interpolated at each slot's
    middle between two given times at most :data:`FORECAST_SOLAR_MAX_GAP_S` apart, 0 across a longer
    gap (the night between one day's last time and the next day's first) and outside the answer, over
    the whole UTC days the answer touches. A solar day may span UTC midnight (a site far from UTC).

    Raises:
        DeviceProtocolError: no ``result.watts`` mapping, a time or value that does not parse; an
            error answer (``message.text`` quoted).
    """
    result = body.get("result") if isinstance(body, dict) else None
    watts = result.get("watts") if isinstance(result, dict) else None
    if not isinstance(watts, dict):
        message = body.get("message") if isinstance(body, dict) else None
        text = message.get("text") if isinstance(message, dict) else None
        raise DeviceProtocolError(name, f"expected result.watts{f' ({text})' if text else ''}")
    points: list[tuple[float, float]] = []
    for key, value in watts.items():
        try:
            when = datetime.fromisoformat(str(key))
            power_w = float(value)
        except (TypeError, ValueError) as exc:
            raise DeviceProtocolError(name, f"result.watts: bad entry {key!r}: {value!r}") from exc
        points.append(((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp(), power_w))
    points.sort()
    times = [t for t, _ in points]
    slots: SlotValues = {}
    if not points:
        return slots
    t = int(times[0]) // 86400 * 86400
    while t < int(times[-1]) // 86400 * 86400 + 86400:
        middle = t + SLOT_S / 2
        i = bisect_right(times, middle)
        slots[t] = 0.0
        if 0 < i < len(points):
            (t0, p0), (t1, p1) = points[i - 1], points[i]
            if t1 - t0 <= FORECAST_SOLAR_MAX_GAP_S:
                slots[t] = p0 + (p1 - p0) * (middle - t0) / (t1 - t0)
        t += SLOT_S
    return slots
