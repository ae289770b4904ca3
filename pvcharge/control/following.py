"""The damped current following of the control core: inside a session, the whole amps that fit the surplus.

Pure: no I/O, no clock reads; :class:`pvcharge.control.controller.Controller` owns one :class:`Following`
per charge point, sets its level at a start, a phase switch or a turn-down for grid import, and asks it
at every other reading of a charging session for the current at the phases the car draws on.

**Following.** Inside a session the current is the whole amps that fit the surplus, damped by energy
rather than by time: it falls once the car has drawn ``down_energy_wh`` more than the surplus (a drop of
several kW acts on the next reading, a 1 A excess after a few minutes), and rises once a higher current
would have taken ``up_energy_wh`` more, or once the surplus held a higher level for the whole last
``up_hold_s`` by at least ``up_hold_min_w`` (a 1 A rise on three phases would otherwise wait a minute for
its energy; smaller rises are not worth a write each), to what the surplus supported all that while, over
the last :data:`RECENT_S` or over ``up_hold_s`` (at most ``max_step_up_a`` per change). So the charger is
written rarely, the car does not hunt around an amp boundary, and it draws little from the battery.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pvcharge.control.config import ControlConfig
from pvcharge.control.window import TimeWindow

RECENT_S = 30.0  #: the surplus minimum of this last span sets the current at a start or phase switch, s


class Following:
    """The current level of one charging session and the energy evidence for changing it.

    Args:
        control: the ``control:`` settings (``down_energy_wh``, ``up_energy_wh``, ``up_hold_s``,
            ``up_hold_min_w``, ``max_step_up_a``).
        surplus: the controller's surplus window (W, by the readings' timestamps in s): filled by the
            controller, only read here.

    Currents are per phase in A, powers in W, energies in Wh.
    """

    def __init__(self, control: ControlConfig, surplus: TimeWindow) -> None:
        self.control = control
        self._surplus = surplus
        self.level_a = 0.0  #: the current per phase the session runs at, A (0: no session)
        self._over_wh = 0.0  # overdraw energy (car above surplus) since the current level became too high
        self._gain_wh = 0.0  # energy a higher level would have taken since the surplus rose above it
        self._run_min_w = math.inf  # lowest surplus since it rose above the current level

    def reconfigure(self, control: ControlConfig) -> None:
        """Take new settings; the level and the evidence so far stay."""
        self.control = control

    def reset(self) -> None:
        """The session ended (or a new one begins): level 0 A, no evidence."""
        self.level_a = 0.0
        self._over_wh = 0.0
        self._gain_wh = 0.0
        self._run_min_w = math.inf

    def step(
        self,
        available_w: float,
        dt_s: float,
        phases: int,
        fit: Callable[[float], float],
        power_w: Callable[[float], float],
    ) -> tuple[float, str]:
        """Damped tracking of the surplus by energy: the current falls once the car has drawn
        ``down_energy_wh`` more than the surplus, and rises once a higher current would have taken
        ``up_energy_wh`` more, to what the surplus supported all that time.

        Args:
            available_w: this reading's surplus, W.
            dt_s: the seconds this reading stands for (0: a reading counted before).
            phases: the phases commanded (1 or 3), for the reason.
            fit: the whole amps per phase that fit a power (W) on the phases the car draws on, within the
                charge point's limits.
            power_w: the car's power (W) at a current per phase (A) on the phases it draws on.

        Returns:
            the current per phase to command (A; the new :attr:`level_a`) and the reason, one sentence
            whose kind (before its first colon) is ``down``, ``holding …``, ``up`` or ``pv``.
        """
        c = self.control
        target = fit(available_w)
        level = self.level_a
        hours = dt_s / 3600.0
        if target < level:
            self._gain_wh, self._run_min_w = 0.0, math.inf
            self._over_wh += (power_w(level) - available_w) * hours
            if self._over_wh >= c.down_energy_wh:
                self.level_a, self._over_wh = target, 0.0
                return target, f"down: surplus {available_w:.0f} W -> {target:g} A on {phases}p"
            return level, (
                f"holding {level:g} A: {self._over_wh:.1f} Wh over the surplus of {c.down_energy_wh:g} Wh"
            )
        self._over_wh = 0.0
        if target > level:
            self._run_min_w = min(self._run_min_w, available_w)
            self._gain_wh += (power_w(target) - power_w(level)) * hours
            # a level at least up_hold_min_w higher that the surplus held for the whole last up_hold_s
            # counts as enough evidence too, so a 1 A rise on 3 phases (690 W) does not wait a minute
            s, hold_s = self._surplus, c.up_hold_s
            held_a = fit(s.min_over(hold_s)) if hold_s > 0 and s.spans(hold_s) else 0.0
            held = held_a > level and power_w(held_a - level) >= c.up_hold_min_w
            if self._gain_wh >= c.up_energy_wh or held:
                # supported all the run, or the last 30 s (or all of up_hold_s)
                floor_w = max(self._run_min_w, s.min_over(RECENT_S))
                if held:
                    floor_w = max(floor_w, s.min_over(hold_s))
                supported = min(fit(floor_w), level + c.max_step_up_a)
                self._gain_wh, self._run_min_w = 0.0, math.inf
                if supported > level:
                    self.level_a = supported
                    return supported, f"up: surplus {available_w:.0f} W -> {supported:g} A on {phases}p"
        else:
            self._gain_wh, self._run_min_w = 0.0, math.inf
        return level, f"pv: surplus {available_w:.0f} W, {level:g} A on {phases}p"
