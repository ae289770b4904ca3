"""Peers' published algorithms as replay policies, for the benchmark's side-by-side table.

Behaviour and default numbers from ``shared/reference/peers.md`` (evcc at commit b29b49e3,
EaseeLoadBalancer's ``LoadShare.py``, WARP's power manager); no peer code is copied.  Each policy has the
``step(now, site, charger) -> Decision`` shape of :class:`pvcharge.control.Controller` and is called
every 5 s by the replay; a policy with a longer cycle (evcc: 30 s) holds its command in between.
"""

from __future__ import annotations

import math

from pvcharge.control import Decision
from pvcharge.readings import ChargerCommand, ChargerReading, SiteReading

VOLTAGE_V = 230.0
MIN_A, MAX_A = 6, 16


class SeedPolicy:
    """The seed formula, no hysteresis (EaseeLoadBalancer, peers.md / chargers.md §1.7).

    Every cycle: ``setpoint = car power + export + battery charging power``, with export and battery
    charging signed (import and discharge count negative: ``car − grid − battery``); 3 phases if that
    covers 3 × 6 A, else 1 phase if it covers 6 A, else pause; the current is the whole amps that fit,
    at most 16 A.
    """

    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision:
        if site is None:
            return Decision(ChargerCommand(0, 3), "no meter", "pv")
        car_w = charger.power_w if charger else 0.0
        setpoint = car_w - site.grid_power_w - site.battery_power_w
        for phases in (3, 1):
            current = min(MAX_A, math.floor(setpoint / (phases * VOLTAGE_V)))
            if current >= MIN_A:
                return Decision(ChargerCommand(current, phases), "seed", "pv", setpoint)
        return Decision(ChargerCommand(0, 3), "seed: pause", "pv", setpoint)


class EvccPolicy:
    """evcc's documented defaults for a PV loadpoint with automatic 1p/3p (peers.md §1).

    - cycle ``interval`` 30 s; ``sitePower = grid + battery`` (battery discharging > 0 counts as
      import), no residual power;
    - target current ``= effective current + (−sitePower) / (active phases × 230 V)``, floored to whole
      amps, clamped to 6–16 A (``pvMaxCurrent``, gain 1); effective current = offered current;
    - enable when the target reaches min current (export ≥ 1380 W 1p / 4140 W 3p), held 1 min;
    - disable only at min current, when ``sitePower >= 0`` (import) for 3 min; timers reset when the
      condition breaks;
    - phases down when ``available = charge power − sitePower`` < 4140 W for 3 min (at once when not
      charging); up when available > 3680 W (1p saturated) and >= 4140 W for 1 min (at once when not
      charging).
    """

    def __init__(
        self,
        interval_s: float = 30.0,
        enable_delay_s: float = 60.0,
        disable_delay_s: float = 180.0,
        phase_down_delay_s: float = 180.0,
        phase_up_delay_s: float = 60.0,
    ) -> None:
        self.interval_s = interval_s
        self.enable_delay_s = enable_delay_s
        self.disable_delay_s = disable_delay_s
        self.phase_down_delay_s = phase_down_delay_s
        self.phase_up_delay_s = phase_up_delay_s
        self._next = -math.inf
        self._command = ChargerCommand(0, 3)
        self._phases = 3  # unknown phases on a 1p3p charger are assumed 3p at startup
        self._enabled = False
        self._enable_since: float | None = None
        self._disable_since: float | None = None
        self._down_since: float | None = None
        self._up_since: float | None = None
        self._decision = Decision(self._command, "evcc: start", "pv")

    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision:
        if now < self._next:
            return self._decision
        self._next = now + self.interval_s
        if site is None:  # grid read failed: loadpoint not updated, current kept
            return self._decision
        site_power = site.grid_power_w + site.battery_power_w
        charge_w = charger.power_w if charger else 0.0
        charging = charger is not None and charger.charging
        available = charge_w - site_power
        self._scale_phases(now, available, charging)
        phases = self._phases
        effective = self._command.current_a if self._enabled else 0.0
        target = effective + (-site_power) / (phases * VOLTAGE_V)
        if not self._enabled:
            self._disable_since = None
            if target >= MIN_A:
                self._enable_since = self._enable_since if self._enable_since is not None else now
                if now - self._enable_since >= self.enable_delay_s:
                    self._enabled = True
                    self._enable_since = None
            else:
                self._enable_since = None
        else:
            self._enable_since = None
            if target < MIN_A and site_power >= 0:
                self._disable_since = self._disable_since if self._disable_since is not None else now
                if now - self._disable_since >= self.disable_delay_s:
                    self._enabled = False
                    self._disable_since = None
            else:
                self._disable_since = None
        current = min(MAX_A, max(MIN_A, math.floor(target))) if self._enabled else 0
        self._command = ChargerCommand(current, phases)
        self._decision = Decision(self._command, "evcc", "pv", available)
        return self._decision

    def _scale_phases(self, now: float, available: float, charging: bool) -> None:
        if self._phases == 3:
            self._up_since = None
            if available < 3 * VOLTAGE_V * MIN_A:
                self._down_since = self._down_since if self._down_since is not None else now
                if not charging or now - self._down_since >= self.phase_down_delay_s:
                    self._phases, self._down_since = 1, None
            else:
                self._down_since = None
        else:
            self._down_since = None
            if available / VOLTAGE_V > MAX_A and available >= 3 * VOLTAGE_V * MIN_A:
                self._up_since = self._up_since if self._up_since is not None else now
                if not charging or now - self._up_since >= self.phase_up_delay_s:
                    self._phases, self._up_since = 3, None
            else:
                self._up_since = None


class WarpPolicy:
    """The Tinkerforge WARP power manager's current design, as documented (peers.md §2.1).

    - allocation every ``interval_s`` 10 s; ``p_error = −grid − battery`` (a charging battery counts as
      surplus: PreferChargers, the default; a discharging one is subtracted), grid power within
      ±``deadzone_w`` (100 W) counts as 0 and larger values shrink by it;
    - adaptive P-controller: ``available = allocated + k·p_error``, k = 1 while nothing is allocated,
      else 0.5 if |p_error| < 1000 W, 0.75 if < 1500 W, 0.875 above;
    - cloud filter (medium, 240 s): a min/max window over ``available``; start only if the minimum cost
      (6 A on the phases it would start on) fits under the window minimum; stop only if the window
      maximum stayed below the 1-phase minimum; 3 phases when 3 × 6 A fits the window minimum, back to
      1 phase when the window maximum stayed below it;
    - ``hysteresis_s`` 210 s between any two of start, stop and phase switch;
    - the current is the whole amps of ``available`` on the active phases, 6–16 A.
    """

    def __init__(
        self,
        interval_s: float = 10.0,
        window_s: float = 240.0,
        hysteresis_s: float = 210.0,
        deadzone_w: float = 100.0,
    ) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self.hysteresis_s = hysteresis_s
        self.deadzone_w = deadzone_w
        self._next = -math.inf
        self._window: list[tuple[float, float]] = []
        self._allocated_w = 0.0
        self._on = False
        self._phases = 1
        self._last_change = -math.inf
        self._decision = Decision(ChargerCommand(0, 1), "warp: start", "pv")

    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision:
        if now < self._next:
            return self._decision
        self._next = now + self.interval_s
        if site is None:
            return self._decision
        grid_w = site.grid_power_w
        grid_w = 0.0 if abs(grid_w) <= self.deadzone_w else grid_w - math.copysign(self.deadzone_w, grid_w)
        error_w = -grid_w - site.battery_power_w
        if self._allocated_w <= 0:
            k = 1.0
        else:
            k = 0.5 if abs(error_w) < 1000 else 0.75 if abs(error_w) < 1500 else 0.875
        available = self._allocated_w + k * error_w
        self._window.append((now, available))
        while self._window[0][0] <= now - self.window_s:
            del self._window[0]
        full = now - self._window[0][0] >= self.window_s - self.interval_s
        low = min(v for _, v in self._window)
        high = max(v for _, v in self._window)
        min_1p, min_3p = MIN_A * VOLTAGE_V, 3 * MIN_A * VOLTAGE_V
        settled = now - self._last_change >= self.hysteresis_s
        if not self._on:
            if full and settled and low >= min_1p:
                self._on, self._last_change = True, now
                self._phases = 3 if low >= min_3p else 1
        elif settled and full:
            if high < min_1p:
                self._on, self._last_change = False, now
            elif self._phases == 1 and low >= min_3p:
                self._phases, self._last_change = 3, now
            elif self._phases == 3 and high < min_3p:
                self._phases, self._last_change = 1, now
        if self._on:
            current = min(MAX_A, max(MIN_A, math.floor(available / (self._phases * VOLTAGE_V))))
        else:
            current = 0
        self._allocated_w = current * self._phases * VOLTAGE_V
        self._decision = Decision(ChargerCommand(current, self._phases), "warp", "pv", available)
        return self._decision
