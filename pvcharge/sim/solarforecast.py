"""Loopback emulators of the solar forecast services the planner reads (pvcharge.planning.forecast):
Open-Meteo's ``/v1/forecast`` (15-min tilted irradiance) and forecast.solar's ``/estimate`` (hourly
watts), in their response formats, from one :class:`Sky`.

forecast.solar's free tier allows 12 requests an hour per IP: the emulator counts requests over the
last hour on its clock and answers the 13th with HTTP 429, its JSON error message and a
``Retry-After`` until the oldest request leaves the hour (the header is this emulator's assumption;
the client also copes without it). Other faults (timeouts, 5xx, cut-off bodies) come from
:class:`~pvcharge.sim.http.LoopbackHttpServer`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web

from pvcharge.sim.http import LoopbackHttpServer

SLOT_S = 900
#: forecast.solar's free tier: requests per hour per IP.
FORECAST_SOLAR_LIMIT = 12


class Sky:
    """Irradiance on a plane facing the sun's noon (W/m²) over a day: a half sine from ``sunrise_h`` to
    ``sunset_h`` (UTC hours) peaking at ``peak_w_m2``, times ``clearness(t_s)`` (1: clear); air at
    ``air_temp_c``."""

    def __init__(
        self,
        *,
        sunrise_h: float = 7.0,
        sunset_h: float = 15.5,
        peak_w_m2: float = 600.0,
        air_temp_c: float = 3.0,
        clearness: Callable[[float], float] = lambda t_s: 1.0,
    ) -> None:
        self.sunrise_h = sunrise_h
        self.sunset_h = sunset_h
        self.peak_w_m2 = peak_w_m2
        self.air_temp_c = air_temp_c
        self.clearness = clearness

    def gti_w_m2(self, t_s: float) -> float:
        hour = (t_s % 86400) / 3600
        if not self.sunrise_h < hour < self.sunset_h:
            return 0.0
        phase = (hour - self.sunrise_h) / (self.sunset_h - self.sunrise_h)
        return round(self.peak_w_m2 * math.sin(math.pi * phase) * self.clearness(t_s), 1)


class OpenMeteoEmulator(LoopbackHttpServer):
    """``GET /v1/forecast?latitude=&longitude=&tilt=&azimuth=&minutely_15=...&forecast_days=N
    &timeformat=unixtime``: 15-min values from the start of today (UTC) for ``forecast_days``;
    ``global_tilted_irradiance`` at ``t`` is the mean over ``[t - 900, t)``."""

    def __init__(
        self, sky: Sky, host: str = "127.0.0.1", port: int = 0, *, clock: Callable[[], float]
    ) -> None:
        super().__init__(host, port, what="Open-Meteo")
        self.sky = sky
        self._clock = clock

    @property
    def url(self) -> str:
        return self.base_url + "/v1/forecast"

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/forecast", self._forecast)
        return app

    async def _forecast(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            latitude, longitude = float(query["latitude"]), float(query["longitude"])
            days = int(query.get("forecast_days", "7"))
        except (KeyError, ValueError):
            return web.json_response(
                {"error": True, "reason": "Parameter latitude/longitude missing"}, status=400
            )
        start_s = int(self._clock()) // 86400 * 86400
        times = list(range(start_s + SLOT_S, start_s + days * 86400 + SLOT_S, SLOT_S))
        gti = [round((self.sky.gti_w_m2(t - SLOT_S) + self.sky.gti_w_m2(t)) / 2, 1) for t in times]
        return web.json_response(
            {
                "latitude": latitude,
                "longitude": longitude,
                "generationtime_ms": 0.5,
                "utc_offset_seconds": 0,
                "timezone": "GMT",
                "timezone_abbreviation": "GMT",
                "elevation": 120.0,
                "minutely_15_units": {
                    "time": "unixtime",
                    "global_tilted_irradiance": "W/m²",
                    "temperature_2m": "°C",
                },
                "minutely_15": {
                    "time": times,
                    "global_tilted_irradiance": gti,
                    "temperature_2m": [self.sky.air_temp_c] * len(times),
                },
            }
        )


class ForecastSolarEmulator(LoopbackHttpServer):
    """``GET /estimate/{lat}/{lon}/{dec}/{az}/{kwp}?time=utc``: today's and tomorrow's hourly watts
    (UTC), from the sky at 85 % performance ratio, sunrise and sunset as extra points at 0 W; 12
    requests an hour, then 429."""

    def __init__(
        self, sky: Sky, host: str = "127.0.0.1", port: int = 0, *, clock: Callable[[], float]
    ) -> None:
        super().__init__(host, port, what="forecast.solar")
        self.sky = sky
        self._clock = clock
        self._recent: deque[float] = deque()

    @property
    def url(self) -> str:
        return self.base_url

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/estimate/{lat}/{lon}/{dec}/{az}/{kwp}", self._estimate)
        app.router.add_get("/{key}/estimate/{lat}/{lon}/{dec}/{az}/{kwp}", self._estimate)  # a paid key
        return app

    async def _estimate(self, request: web.Request) -> web.Response:
        now_s = self._clock()
        while self._recent and self._recent[0] <= now_s - 3600:
            self._recent.popleft()
        if len(self._recent) >= FORECAST_SOLAR_LIMIT:
            wait_s = math.ceil(self._recent[0] + 3600 - now_s)
            return web.json_response(
                {
                    "result": None,
                    "message": {
                        "code": 429,
                        "type": "error",
                        "text": "Rate limit for API calls reached.",
                        "ratelimit": {"period": 3600, "limit": FORECAST_SOLAR_LIMIT, "remaining": 0},
                    },
                },
                status=429,
                headers={"Retry-After": str(wait_s)},
            )
        self._recent.append(now_s)
        try:
            kwp = float(request.match_info["kwp"])
        except ValueError:
            return web.json_response(
                {"result": None, "message": {"code": 400, "type": "error", "text": "kwp"}}, status=400
            )
        day_s = int(now_s) // 86400 * 86400
        watts: dict[str, int] = {}
        for day in (day_s, day_s + 86400):
            points = [day + self.sky.sunrise_h * 3600]
            points += [day + h * 3600 for h in range(24) if self.sky.sunrise_h < h < self.sky.sunset_h]
            points.append(day + self.sky.sunset_h * 3600)
            for t in points:
                stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
                watts[stamp] = round(kwp * self.sky.gti_w_m2(t) * 0.85)
        return web.json_response(
            {
                "result": {"watts": watts},
                "message": {
                    "code": 0,
                    "type": "success",
                    "text": "",
                    "info": {"timezone": "UTC"},
                    "ratelimit": {
                        "period": 3600,
                        "limit": FORECAST_SOLAR_LIMIT,
                        "remaining": FORECAST_SOLAR_LIMIT - len(self._recent),
                    },
                },
            }
        )
