"""The phase logic of the control core: when a charge point with ``phases: auto`` switches 1p/3p.

Pure: no I/O, no clock reads; :class:`pvcharge.control.controller.Controller` owns one
:class:`PhaseSwitch` per charge point, feeds it each meter reading and acts on its answers.

**Phases** (``phases: auto``). With 16 A, one phase tops out at 3680 W and three phases start at 4140 W: a
dead band, where neither fits and every threshold on the instantaneous surplus flaps. So pvcharge compares
outcomes instead: for each reading it scores what the best whole-amp current on 3 phases and on 1 phase
would have achieved (PV captured minus ``battery_weight`` × energy drawn beyond the surplus) and sums the
difference. The evidence for the other phase count is what it would have gained over the recent stretch
where it did best (ending now, at most ``phase_window_s`` long, and only since the last switch, so what
favoured that switch never counts against it). It switches to 3 phases when that passes
``phase_switch_gain_wh`` and to 1 phase when it passes ``phase_down_gain_wh`` (more: a dip on 3 phases
costs some battery, a peak on 1 phase is lost for good), each multiplied by ``phase_switch_gain_growth``
for every switch in the last hour, so a large gain acts within minutes while flapping weather makes
switching dearer. A shade on 3 phases has a cheaper way down: once min current on 3 phases has drawn
``phase_down_deficit_wh`` beyond the surplus since the surplus last covered it, the car goes to 1 phase,
however many switches came before (the battery pays for every minute on 3 phases; the way back up still
needs the growing evidence). A session start forgets the evidence gathered while paused (a paused car without
surplus "would have done better" on 1 phase). On top, switches are at least ``phase_switch_interval_s`` apart
and at most ``phase_switches_per_hour``. A session starts on 3 phases only if the surplus covered their
minimum for as long as a start looks (pv: the last ``start_fraction`` of the cloud window; minpv: all of
it). A car seen drawing on one phase while offered three is treated as a 1-phase car until it is
unplugged. A switch is one command (new phases and the current for them); pausing the car around it is the
charger's sequence (WARP3 stops charging, switches its contactors and reconnects the car; the simulated
car pauses 30 s), so a switch costs no extra start.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from pvcharge.control.config import ControlConfig
from pvcharge.control.window import TimeWindow
from pvcharge.readings import ChargerReading


def phase_gain_w(surplus_w: float, car_w: Callable[[int], float], battery_weight: float) -> float:
    """How much better 3 phases would do than 1 at ``surplus_w`` (W): W of PV captured minus
    ``battery_weight`` × W drawn beyond the surplus; ``car_w(phases)`` is the car's power (W) at its best
    whole-amp current on ``phases``."""

    def value(phases: int) -> float:
        power_w = car_w(phases)
        over_w = max(0.0, power_w - max(surplus_w, 0.0))
        return min(power_w, max(surplus_w, 0.0)) - battery_weight * over_w

    return value(3) - value(1)


class PhaseSwitch:
    """The phase state of one charge point: the phases commanded, the evidence for the other count,
    the 3-phase deficit, the switch clock and caps, and whether the car draws on one phase only.

    Args:
        control: the ``control:`` settings (phase window, gains, switch interval and cap).
        phases: the phases to begin with (1 or 3).

    Times are seconds on the clock that stamps the readings; energies in Wh.
    """

    def __init__(self, control: ControlConfig, phases: int) -> None:
        self.control = control
        self.phases = phases  #: the phases commanded (1 or 3)
        self.switches: deque[float] = deque()  #: times of phase switches in the last hour
        # the running sum of how much better 3p would have done than 1p (Wh), over the phase window: its
        # rise from the window's minimum is the evidence for 3p, its fall from the maximum that for 1p
        self._score_wh = 0.0
        self._gain = TimeWindow(control.phase_window_s)
        self.deficit_wh = 0.0  #: min current on 3p beyond the surplus since it last covered it, Wh
        self.vehicle_one_phase = False  #: the vehicle's profile allows one phase only
        self.one_phase_car = False  #: the car is treated as a 1-phase car (until it is unplugged)
        self._one_phase_seen = 0

    def reconfigure(self, control: ControlConfig, vehicle_one_phase: bool) -> None:
        """Take new settings; the evidence window takes the new length."""
        self.control = control
        self.vehicle_one_phase = vehicle_one_phase
        self.one_phase_car = self.one_phase_car or vehicle_one_phase
        self._gain.length_s = control.phase_window_s

    @property
    def effective(self) -> int:
        """The phases the car draws on: 1 for a 1-phase car, else the phases commanded."""
        return 1 if self.one_phase_car else self.phases

    def unplugged(self) -> None:
        """The car left: the next one is a 1-phase car only if the vehicle profile says so."""
        self.one_phase_car, self._one_phase_seen = self.vehicle_one_phase, 0

    def detect_one_phase_car(self, charger: ChargerReading) -> None:
        """Count charging readings on 1 phase while 3 are offered; the third in a row marks a 1-phase car."""
        if self.phases == 3 and charger.phases == 1:
            self._one_phase_seen += 1
            if self._one_phase_seen >= 3:
                self.one_phase_car = True
        else:
            self._one_phase_seen = 0

    @property
    def has_evidence(self) -> bool:
        """Whether any score entered the evidence window since it was last cleared."""
        return bool(self._gain.count)

    def add(self, t_s: float, gain_w: float, dt_s: float) -> None:
        """Add one reading's score: ``gain_w`` (:func:`phase_gain_w`) for the ``dt_s`` it stands for."""
        self._score_wh += gain_w * dt_s / 3600.0
        self._gain.add(t_s, self._score_wh)

    def track_deficit(self, short_w: float, charging_3p: bool, dt_s: float) -> None:
        """Add what a car at min current on 3 phases draws beyond the surplus (``short_w`` W, for
        ``dt_s``) since the surplus last covered that power; 0 when it does, or when the car is not
        charging on 3 phases (a 1-phase car on a 3-phase setting draws 1-phase power: no deficit of 3)."""
        if charging_3p and short_w > 0:
            self.deficit_wh += short_w * dt_s / 3600.0
        else:
            self.deficit_wh = 0.0

    def clear(self) -> None:
        """Forget the evidence (stale meter data)."""
        self._gain.clear()

    def restart_evidence(self, last_reading_t: float) -> None:
        """Forget the phase evidence so far (after a switch or at a session start); the score at the
        last reading (``-inf``: none) is where the new evidence starts."""
        self._gain.clear()
        if last_reading_t > -math.inf:
            self._gain.add(last_reading_t, self._score_wh)

    def allowed(self, now: float) -> bool:
        """Whether a switch may happen now: ``phase_switch_interval_s`` since the last one and fewer
        than ``phase_switches_per_hour`` in the last hour."""
        while self.switches and self.switches[0] <= now - 3600:
            self.switches.popleft()
        if len(self.switches) >= self.control.phase_switches_per_hour:
            return False
        return not self.switches or now - self.switches[-1] >= self.control.phase_switch_interval_s

    def switch_to(self, now: float, phases: int, last_reading_t: float) -> None:
        """Command ``phases`` from ``now`` on (see :meth:`restart_evidence` for ``last_reading_t``)."""
        self.phases = phases
        self.switches.append(now)
        self.deficit_wh = 0.0
        # the evidence for the next switch starts here: what favoured this one cannot count against it
        self.restart_evidence(last_reading_t)

    def due(self) -> tuple[int, str] | None:
        """The phases to switch to and why, when the other phase count would have done better, over the
        stretch ending now (within the phase window and since the last switch) where it did best, by more
        than ``phase_switch_gain_wh`` (to 3p) or ``phase_down_gain_wh`` (to 1p), times
        ``phase_switch_gain_growth`` ** (switches in the last hour), or when the 3-phase deficit reached
        ``phase_down_deficit_wh``; ``None`` when there is no evidence yet or it is not enough.  The
        switch interval and the hourly cap are :meth:`allowed`'s."""
        g, c = self._gain, self.control
        if not self.has_evidence:
            return None
        growth = c.phase_switch_gain_growth ** len(self.switches)
        if self.phases == 3 and 0 < c.phase_down_deficit_wh <= self.deficit_wh:
            return 1, (
                f"min current on 3p drew {self.deficit_wh:.0f} Wh beyond the surplus "
                f"(phase_down_deficit_wh {c.phase_down_deficit_wh:g} Wh)"
            )
        if self.phases == 3:
            phases, better_wh, need_wh = 1, g.max - self._score_wh, c.phase_down_gain_wh * growth
        elif not self.one_phase_car:
            phases, better_wh, need_wh = 3, self._score_wh - g.min, c.phase_switch_gain_wh * growth
        else:
            return None
        if better_wh <= need_wh:
            return None
        return phases, f"{phases}p would have done {better_wh:.0f} Wh better (needed {need_wh:.0f} Wh)"
