"""The control core: from a site reading and a charger reading to a charger command.

Pure: no I/O, no clock reads.  The caller passes ``now`` (seconds on the same clock that stamps the
readings), so the daemon, ``pvcharge replay`` and tests run the same code, a whole day in seconds.

PV mode, v1:

- ``available_w = car_power_w - grid_power_w - battery_power_w - grid_target_w``.  With the
  canonical signs this is *car power + export + battery charging power − grid target*; a
  discharging home battery (``battery_power_w > 0``) is subtracted, so the battery never feeds the car.
- the target current per phase is ``floor(available_w / (phases × voltage_v))`` in whole amps,
  clamped to ``[min_current_a, max_current_a]``;
- **start** only after ``available_w`` covered the minimum power (``min_current_a × phases ×
  voltage_v``) continuously for ``start_delay_s``; **stop** only after it was short continuously
  for ``stop_delay_s`` (until then the car holds ``min_current_a``);
- a missing or stale meter reading (older than ``max_age_s``) pauses the car at once and resets
  the start timer, so charging never continues on a dead meter.

Modes ``off`` (always pause) and ``fast`` (max current, needs no meter) complete v1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pvcharge.control.config import ChargePoint, ControlConfig, Mode, SiteConfig
from pvcharge.readings import ChargerCommand, ChargerReading, SiteReading


@dataclass(frozen=True)
class Decision:
    """The controller's answer for one cycle.

    Attributes:
        command: what the charger should do (``current_a`` 0 = pause).
        reason: one human-readable sentence with the numbers behind the decision.
        mode: the mode in force.
        available_w: the PV surplus the car may take in W (``None`` when not computed: off, fast,
            no fresh meter reading).
    """

    command: ChargerCommand
    reason: str
    mode: Mode
    available_w: float | None = None


class Controller:
    """PV-surplus controller for one charge point.

    Args:
        control: the ``control:`` settings (mode, delays, grid target, max age).
        charge_point: the charger's current limits and phases.
        site: site settings (voltage).

    Call :meth:`step` once per cycle.  The object keeps the start/stop timers between calls; it
    is not thread-safe and not shared between charge points.
    """

    def __init__(
        self, control: ControlConfig, charge_point: ChargePoint, site: SiteConfig | None = None
    ) -> None:
        self.control = control
        self.charge_point = charge_point
        self.site = site or SiteConfig()
        self.mode: Mode = control.mode
        self._on = False  # inside a charging session (offering current)
        self._surplus_since: float | None = None  # start of the current span with enough surplus
        self._short_since: float | None = None  # start of the current span without enough surplus

    @property
    def min_power_w(self) -> float:
        """Power in W at ``min_current_a`` on the configured phases."""
        cp = self.charge_point
        return cp.min_current_a * cp.phases * self.site.voltage_v

    def set_mode(self, mode: Mode) -> None:
        """Switch mode; timers restart so a new pv session waits its full start delay."""
        if mode != self.mode:
            self.mode = mode
            self._reset()

    def _reset(self) -> None:
        self._on = False
        self._surplus_since = None
        self._short_since = None

    def _pause(self, reason: str, available_w: float | None = None) -> Decision:
        return Decision(ChargerCommand(0.0, self.charge_point.phases), reason, self.mode, available_w)

    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision:
        """Decide the charger command for this cycle.

        Args:
            now: current time in s, on the clock that stamps the readings.
            site: the latest meter reading, or ``None`` if the meter has not answered yet.
            charger: the latest charger reading, or ``None`` if the charger did not answer; the car
                power is then taken as 0 W (which can only lower the surplus).

        Returns:
            The decision: command, reason, mode, available surplus.
        """
        cp = self.charge_point
        if self.mode == "off":
            self._reset()
            return self._pause("mode off")
        if self.mode == "fast":
            self._reset()
            return Decision(
                ChargerCommand(cp.max_current_a, cp.phases),
                f"mode fast: {cp.max_current_a:g} A on {cp.phases}p",
                self.mode,
            )

        # pv mode from here on
        if site is None:
            self._reset()
            return self._pause("no meter reading yet: paused (safe state)")
        age_s = now - site.timestamp_s
        if age_s > self.control.max_age_s:
            self._reset()
            return self._pause(
                f"meter reading stale: {age_s:.0f} s old > max_age_s {self.control.max_age_s:g} s: "
                "paused (safe state)"
            )

        car_w = charger.power_w if charger is not None else 0.0
        available_w = car_w - site.grid_power_w - site.battery_power_w - self.control.grid_target_w
        min_w = self.min_power_w
        if available_w >= min_w:
            self._short_since = None
            if self._surplus_since is None:
                self._surplus_since = now
        else:
            self._surplus_since = None
            if self._short_since is None:
                self._short_since = now

        if charger is not None and not charger.connected:
            self._on = False
            return self._pause("no vehicle connected", available_w)

        if not self._on:
            if self._surplus_since is None:
                return self._pause(
                    f"waiting for surplus: {available_w:.0f} W < min power {min_w:.0f} W", available_w
                )
            held_s = now - self._surplus_since
            if held_s < self.control.start_delay_s:
                return self._pause(
                    f"surplus {available_w:.0f} W >= {min_w:.0f} W for {held_s:.0f} s; "
                    f"start after {self.control.start_delay_s:g} s",
                    available_w,
                )
            self._on = True
            verb = "start"
        elif self._short_since is not None:
            short_s = now - self._short_since
            if short_s >= self.control.stop_delay_s:
                self._on = False
                return self._pause(
                    f"stop: surplus {available_w:.0f} W < min power {min_w:.0f} W for {short_s:.0f} s",
                    available_w,
                )
            return Decision(
                ChargerCommand(cp.min_current_a, cp.phases),
                f"surplus {available_w:.0f} W short of {min_w:.0f} W for {short_s:.0f} s: "
                f"holding {cp.min_current_a:g} A, stop after {self.control.stop_delay_s:g} s",
                self.mode,
                available_w,
            )
        else:
            verb = "pv"

        current_a = self._current_for(available_w)
        return Decision(
            ChargerCommand(current_a, cp.phases),
            f"{verb}: surplus {available_w:.0f} W -> {current_a:g} A on {cp.phases}p",
            self.mode,
            available_w,
        )

    def _current_for(self, available_w: float) -> float:
        """Whole amps per phase that fit ``available_w``, clamped to the charge point's limits."""
        cp = self.charge_point
        raw = math.floor(available_w / (cp.phases * self.site.voltage_v))
        return float(min(max(raw, cp.min_current_a), cp.max_current_a))
