"""The control core: from a site reading and a charger reading to a charger command.

Pure: no I/O, no clock reads.  The caller passes ``now`` (seconds on the same clock that stamps the
readings), so the daemon, ``pvcharge replay``, the benchmarks and tests run the same code.

**Surplus.** ``available_w = car power − (grid − grid_target) − battery term``: with the canonical
signs this is *car power + export + battery charging power − grid target*.  The battery term follows
the battery policy: a charging battery counts as surplus (``car_first``, or ``battery_first`` once its
SoC reached ``battery_first_soc_pct``); a discharging battery is subtracted, so it never feeds the car,
unless ``battery_to_car`` opts in (down to ``battery_to_car_min_soc_pct``).  Grid power inside
``±deadzone_w`` counts as 0.  Each meter reading enters the filters once, by its timestamp: a slow
meter read twice is not counted twice; and not at all while the charger reading predates the last
command change (a slowly polled cloud charger would pair the old car power with the new grid power).

**Cloud filter.** A window of ``cloud_filter`` seconds over the surplus.  A paused car starts only if
the *minimum* over the window's last ``start_fraction`` covers its minimum power (the surplus was there
that long) and ``min_off_s`` has passed; a charging car stops only if the window *maximum* stayed below
its minimum power (short the whole window) and ``min_on_s`` has passed.  In between it holds min current.

**Following.** Inside a session the current is the whole amps that fit the surplus, damped by energy
(written rarely, no hunting around an amp boundary): :mod:`pvcharge.control.following`.  If the car
imports from the grid (battery empty or at its limit) for ``grid_tolerance_s``, it is turned down or
paused whatever the cloud filter says.

**Phases** (``phases: auto``): when to switch 1p/3p (the evidence score, the deficit switch, the switch
clock and caps, the 1-phase car) is :mod:`pvcharge.control.phases`; the controller feeds it each reading
and carries out its switches.  On top, the shade rule (:meth:`Controller._shade_due`): at min current on
3 phases a shade that the last hour's shades say will be long (:mod:`pvcharge.control.shade`) sends the
car to 1 phase before the deficit switch would, and it comes back once the shade is over.

**Stale data.** A meter reading older than ``max_age_s`` (or none) sends the car to the safe state at
once (pause; ``min_current`` keeps min current in ``minpv`` and ``fast``), clears the filters, and says
why; in every mode but ``off``, ``fast`` included.

**Fuse.** With ``site.max_grid_current_a`` every command is capped so that no phase imports more than the
fuse: :mod:`pvcharge.control.fuse`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pvcharge.control.config import ChargePoint, ControlConfig, Mode, SiteConfig
from pvcharge.control.following import RECENT_S, Following
from pvcharge.control.fuse import FuseWindow, car_currents_a, fuse_headroom_a
from pvcharge.control.phases import PhaseSwitch, phase_gain_w
from pvcharge.control.shade import ShadeSpells
from pvcharge.control.vehicle import Vehicle, narrow
from pvcharge.control.window import TimeWindow
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading, SiteReading

CAR_SETTLE_MAX_S = 30.0  #: the longest a stale charger reading holds back new meter readings, in s
SHADE_OVER_S = 90.0  #: after a switch to 1p for a shade, 3p return once the surplus covered them this long, s


def _surplus_span_s(control: ControlConfig) -> float:
    """How far back the controller reads the surplus, in s: the longest of its spans."""
    return max(control.window_s, RECENT_S, control.up_hold_s, SHADE_OVER_S)


@dataclass(frozen=True)
class Decision:
    """The controller's answer for one cycle.

    Attributes:
        command: what the charger should do (``current_a`` 0 = pause; ``phases`` 1 or 3).
        reason: one human-readable sentence with the numbers behind the decision.
        mode: the mode in force.
        available_w: the surplus the car may take in W (``None`` when not computed: off, fast, stale).
    """

    command: ChargerCommand
    reason: str
    mode: Mode
    available_w: float | None = None


class Controller:
    """PV-surplus controller for one charge point.

    Args:
        control: the ``control:`` settings.
        charge_point: the installation's current limits and phases (``auto`` = 1p/3p switching).
        site: site settings (voltage).
        capabilities: what the charger can do (its driver's ``capabilities``): its current range
            narrows the charge point's; an ``on_off_only`` charger charges at a fixed current
            (``max_current_a``), so it starts only when the surplus covered that fixed power for the last
            ``start_fraction`` of the cloud window and stops when it was short of it for the whole window.
        vehicle: the car's profile (:mod:`pvcharge.control.vehicle`): its 3-phase minimum, the phases it
            allows (they narrow the charge point's), ``never_stop``, ``no_phase_switch``.

    Call :meth:`step` once per cycle (or :meth:`propose` then :meth:`commit`, as
    :class:`pvcharge.control.site.SiteController` does).  The object keeps timers and filters between
    calls; it is not thread-safe and not shared between charge points.
    """

    def __init__(
        self,
        control: ControlConfig,
        charge_point: ChargePoint,
        site: SiteConfig | None = None,
        capabilities: ChargerCapabilities | None = None,
        vehicle: Vehicle | None = None,
    ) -> None:
        self._caps = capabilities or ChargerCapabilities()
        self.vehicle = vehicle or Vehicle()
        # the surplus, W: the cloud window and the shorter or longer spans read from its end (a start's
        # start_window_s, RECENT_S, up_hold_s)
        self._surplus = TimeWindow(_surplus_span_s(control))
        self._dt_s = 0.0  # seconds the newest reading stands for (its distance to the previous one)
        # the phases commanded, the evidence for the other count, the switch clock, the 1-phase car
        self._phasing = PhaseSwitch(control, 1 if charge_point.phases == "auto" else int(charge_point.phases))
        # the shades below min current on 3 phases: how long the current one will likely last
        self._shade = ShadeSpells()
        self._shade_switched = False  # the last phase switch was to 1p for a shade (_shade_due)
        self._last_reading_t = -math.inf
        self._available_w: float | None = None
        self._last_command: ChargerCommand | None = None
        self._changed_at = -math.inf  # when the command last changed
        # the session's current and the energy evidence for changing it
        self._following = Following(control, self._surplus)
        self._reset_session()
        self._off_since = -math.inf
        self._fuse_window = FuseWindow()  # fuse headroom per phase, A
        self.mode: Mode = control.mode
        self.reconfigure(control, charge_point, site, self.vehicle)

    def reconfigure(
        self,
        control: ControlConfig,
        charge_point: ChargePoint,
        site: SiteConfig | None = None,
        vehicle: Vehicle | None = None,
    ) -> None:
        """Take new settings (a reloaded config) without losing the session: a charging car goes on
        charging, the filters keep their samples (their windows take the new lengths), the mode becomes
        ``control.mode``.  The charger's capabilities stay; so does the vehicle unless one is given."""
        if vehicle is not None:
            self.vehicle = vehicle
        charge_point, vehicle_one_phase = narrow(charge_point, self.vehicle)
        self._phasing.reconfigure(control, vehicle_one_phase)
        self._following.reconfigure(control)
        self.control = control
        self.charge_point = charge_point
        self.site = site or SiteConfig()
        caps = self._caps
        #: the current range both the installation and the charger allow, in A
        self.min_current_a = max(charge_point.min_current_a, caps.min_current_a)
        self.max_current_a = max(self.min_current_a, min(charge_point.max_current_a, caps.max_current_a))
        #: the lowest current per phase on 3 phases (the vehicle's, e.g. 8 A for a Renault Zoe), in A
        self.min_current_3p_a = min(
            max(self.min_current_a, self.vehicle.min_current_3p_a or 0.0), self.max_current_a
        )
        #: a charger that can only start and stop charges at a fixed current: max_current_a
        self.on_off_only = caps.on_off_only
        self.auto_phases = charge_point.phases == "auto"
        if not self.auto_phases:
            self._phasing.phases = int(charge_point.phases)
        self._surplus.length_s = _surplus_span_s(control)
        self.set_mode(control.mode)

        v = self.site.voltage_v
        min_3p = 3 * self.min_current_3p_a * v
        max_1p = self.max_current_a * v
        #: a session starts on 3 phases only if the surplus covered this (W) for as long as a start looks
        self.phase_up_w = min_3p if max_1p < min_3p else min_3p + 3 * v

    def phase_gain_w(self, surplus_w: float) -> float:
        """How much better 3 phases would do than 1 at this surplus: W of PV captured minus
        ``battery_weight`` × W drawn beyond the surplus, each at its best whole-amp current."""
        return phase_gain_w(
            surplus_w,
            lambda phases: self.power_w(self._fit(surplus_w, phases), phases),
            self.control.battery_weight,
        )

    # -- small helpers ------------------------------------------------------------------------
    def _reset_session(self) -> None:
        self._on = False
        self._on_since = -math.inf
        self._following.reset()
        self._import_since: float | None = None

    def _stop_session(self, now: float) -> None:
        self._reset_session()
        self._off_since = now

    def set_mode(self, mode: Mode) -> None:
        """Switch mode; a pv session then starts through its cloud filter again."""
        if mode != self.mode:
            self.mode = mode
            if self._on:
                self._stop_session(-math.inf)

    @property
    def phases(self) -> int:
        """The phases currently commanded (1 or 3)."""
        return self._phasing.phases

    def _eff_phases(self) -> int:
        return self._phasing.effective

    def power_w(self, current_a: float, phases: int) -> float:
        """Charging power in W at ``current_a`` per phase on ``phases``."""
        return current_a * phases * self.site.voltage_v

    @property
    def lowest_a(self) -> float:
        """The lowest current a charging car is offered at its phases now: min current (on 3 phases the
        vehicle's ``min_current_3p_a``), or the fixed one (on/off only)."""
        return self.lowest_current_a(self._eff_phases())

    def lowest_current_a(self, phases: int) -> float:
        """The lowest current per phase a charging car is offered on ``phases``, in A."""
        if self.on_off_only:
            return self.max_current_a
        return self.min_current_3p_a if phases == 3 else self.min_current_a

    def _fit(self, available_w: float, phases: int) -> float:
        """Whole amps per phase that fit ``available_w``, clamped to the charge point's limits."""
        if self.on_off_only:
            return float(self.max_current_a)
        raw = math.floor(available_w / (phases * self.site.voltage_v) + 1e-9)
        return float(min(max(raw, self.lowest_current_a(phases)), self.max_current_a))

    def _decision(self, current_a: float, reason: str) -> Decision:
        return Decision(ChargerCommand(current_a, self.phases), reason, self.mode, self._available_w)

    def available_w(self, site: SiteReading, charger: ChargerReading | None) -> float:
        """The surplus the car may take in W, under the battery policy (see the module docstring)."""
        c = self.control
        car_w = charger.power_w if charger is not None else 0.0
        grid_w = site.grid_power_w - c.grid_target_w
        if c.deadzone_w > 0:
            grid_w = 0.0 if abs(grid_w) <= c.deadzone_w else grid_w - math.copysign(c.deadzone_w, grid_w)
        battery_w = site.battery_power_w
        soc = site.battery_soc_pct
        if battery_w < 0:  # charging: surplus unless the battery comes first
            counts = c.battery_policy == "car_first" or (soc is not None and soc >= c.battery_first_soc_pct)
            battery_term = battery_w if counts else 0.0
        else:  # discharging: subtracted unless the user opted in
            allowed = c.battery_to_car and (soc is None or soc >= c.battery_to_car_min_soc_pct)
            battery_term = 0.0 if allowed else battery_w
        return car_w - grid_w - battery_term

    def _switch_to(self, now: float, phases: int) -> None:
        self._phasing.switch_to(now, phases, self._last_reading_t)
        self._shade_switched = False

    def _restart_evidence(self) -> None:
        """Forget the phase evidence so far (after a switch or at a session start)."""
        self._phasing.restart_evidence(self._last_reading_t)

    # -- the decision -------------------------------------------------------------------------
    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision:
        """Decide the charger command for this cycle.

        Args:
            now: current time in s, on the clock that stamps the readings.
            site: the latest meter reading (``None`` if the meter never answered).
            charger: the latest charger reading, or ``None`` if the charger did not answer; the car
                power is then taken as 0 W (which can only lower the surplus).
        """
        return self.commit(now, self.propose(now, site, charger))

    def propose(
        self,
        now: float,
        site: SiteReading | None,
        charger: ChargerReading | None,
        *,
        extra_w: float = 0.0,
    ) -> Decision:
        """The first half of :meth:`step`: the decision before the site's limits; :meth:`commit` it in
        the same cycle.

        Args:
            extra_w: power in W the site adds to this car's surplus beyond the meter's (> 0: other cars'
                power it may take, < 0: power other cars were just given); see
                :mod:`pvcharge.control.site`.
        """
        return self._fuse(now, site, charger, self._step(now, site, charger, extra_w))

    def commit(self, now: float, decision: Decision, cap_a: float = math.inf, why: str = "") -> Decision:
        """The second half of :meth:`step`: cap ``decision`` at ``cap_a`` per phase (a site limit: the
        fuse or a circuit shared with other loadpoints, ``why`` says which) the way the fuse caps it, and
        take the result as the command sent."""
        decision = self._cap(now, decision, cap_a, why)
        if decision.command != self._last_command:
            self._last_command, self._changed_at = decision.command, now
        return decision

    def _step(
        self, now: float, site: SiteReading | None, charger: ChargerReading | None, extra_w: float = 0.0
    ) -> Decision:
        if self.mode == "off":
            self._stop_session(-math.inf)
            self._available_w = None
            return self._decision(0.0, "mode off")
        if charger is not None and not charger.connected:
            self._reset_session()
            self._off_since = -math.inf  # a newly plugged car need not wait out min_off_s
            self._phasing.unplugged()
        elif charger is not None and charger.charging:
            self._phasing.detect_one_phase_car(charger)

        # fresh data? (in every mode but off: fast needs no surplus, but no full current on a dead meter)
        what = self._stale(now, site)
        if what:
            self._surplus.clear()
            self._fuse_window.clear()
            self._phasing.clear()
            self._shade.clear()
            self._available_w = None
            self._last_reading_t = -math.inf
            if self.mode in ("minpv", "fast") and self.control.safe_state == "min_current":
                return self._decision(self.lowest_a, f"{what}: safe state, min current")
            if self._on:
                self._stop_session(now)
            return self._decision(0.0, f"{what}: safe state, paused")
        if self.mode == "fast":
            self._reset_session()
            self._available_w = None
            if (
                self.auto_phases
                and self._phasing.phases != 3
                and not self._phasing.one_phase_car
                and self._phasing.allowed(now)
                and not (self.vehicle.no_phase_switch and charger is not None and charger.charging)
            ):
                self._switch_to(now, 3)
            return self._decision(
                self.max_current_a, f"mode fast: {self.max_current_a:g} A on {self.phases}p"
            )
        assert site is not None  # not stale
        # A charger reading from before the last command change, next to a meter reading from after it,
        # would pair the old car power with the new grid power (cloud chargers are polled slowly): such
        # a pair does not enter the filters, for at most CAR_SETTLE_MAX_S.
        stale_car = (
            charger is not None
            and charger.timestamp_s < self._changed_at <= site.timestamp_s
            and site.timestamp_s - self._changed_at <= CAR_SETTLE_MAX_S
        )
        new = site.timestamp_s > self._last_reading_t and not stale_car
        if new:
            gap_s = site.timestamp_s - self._last_reading_t
            self._dt_s = min(gap_s, 2 * self.control.interval_s)
            self._last_reading_t = site.timestamp_s
            self._available_w = self.available_w(site, charger) + extra_w
            self._surplus.add(site.timestamp_s, self._available_w)
            if self.auto_phases:
                self._phasing.add(site.timestamp_s, self.phase_gain_w(self._available_w), self._dt_s)
                min_3p_w = self.power_w(self.lowest_current_a(3), 3)
                short_w = min_3p_w - self._available_w
                self._phasing.track_deficit(short_w, self._on and self._eff_phases() == 3, self._dt_s)
                self._shade.add(site.timestamp_s, self._available_w, min_3p_w)
        else:
            self._dt_s = 0.0  # the same reading again (a slow meter): it counts once
        available = self._available_w
        if available is None:  # only a reading from before the last outage: wait for a new one
            return self._decision(0.0, "waiting for a new meter reading")

        if charger is not None and not charger.connected:
            return self._decision(0.0, "no vehicle connected")
        if self.mode == "minpv":
            return self._minpv(now, available)
        return self._pv(now, site, available)

    def _stale(self, now: float, site: SiteReading | None) -> str:
        """Why the meter data cannot be used (``""`` if it is fresh)."""
        if site is None:
            return "no meter reading yet"
        if now - site.timestamp_s > self.control.max_age_s:
            age_s = now - site.timestamp_s
            return f"meter reading stale: {age_s:.0f} s old > max_age_s {self.control.max_age_s:g} s"
        return ""

    def fuse_headroom_a(self, site: SiteReading, charger: ChargerReading | None, phases: int) -> float:
        """The most current per phase the car may draw on ``phases`` so that no phase imports more
        than ``site.max_grid_current_a`` (``inf`` without a limit); see
        :func:`pvcharge.control.fuse.fuse_headroom_a`."""
        limit = self.site.max_grid_current_a
        if limit is None:
            return math.inf
        return fuse_headroom_a(limit, self.site.voltage_v, site, charger, phases, self._eff_phases())

    def car_currents_a(self, charger: ChargerReading | None) -> tuple[float, float, float]:
        """The car's own current on L1–L3 in A: the charger's phase currents, else its power spread over
        the phases it draws on, L1 first (no charger reading: 0 A)."""
        return car_currents_a(charger, self._eff_phases(), self.site.voltage_v)

    def _fuse(
        self, now: float, site: SiteReading | None, charger: ChargerReading | None, decision: Decision
    ) -> Decision:
        """Cap the command at the fuse headroom: down at once, back up only after it stayed higher
        for ``FUSE_RELEASE_S``; below min current the car pauses."""
        if self.site.max_grid_current_a is None or site is None or self._stale(now, site):
            return decision
        command = decision.command
        if self._fuse_window.is_new(site):
            self._fuse_window.add(site, self.fuse_headroom_a(site, charger, command.phases))
        headroom = self._fuse_window.headroom_a
        limit = self.site.max_grid_current_a
        why = f"fuse limit: {limit:g} A per phase leaves the car {max(headroom, 0):.1f} A"
        return self._cap(now, decision, headroom, why)

    def _cap(self, now: float, decision: Decision, cap_a: float, why: str) -> Decision:
        """``decision`` lowered to the whole amps within ``cap_a``; below the lowest current the car
        pauses (its session stops, so ``min_off_s`` applies)."""
        command = decision.command
        cap = math.floor(cap_a + 1e-9) if math.isfinite(cap_a) else cap_a
        if command.current_a <= cap:
            return decision
        current = float(cap) if cap >= self.lowest_a and not self.on_off_only else 0.0
        if current == 0.0 and self._on:
            self._stop_session(now)
        reason = f"{why} ({decision.reason})"
        return Decision(ChargerCommand(current, command.phases), reason, decision.mode, decision.available_w)

    def _pv(self, now: float, site: SiteReading, available: float) -> Decision:
        c, s = self.control, self._surplus
        if not self._on:
            wait_s = self._off_since + c.min_off_s - now
            if wait_s > 0:
                return self._decision(0.0, f"paused: min off time, {wait_s:.0f} s left")
            if not s.spans(c.start_window_s):
                return self._decision(0.0, f"cloud filter filling: surplus {available:.0f} W")
            start_min_w = s.min_over(c.start_window_s)
            phases = self._phasing.phases
            if self.auto_phases and self._phasing.allowed(now):
                phases = 3 if start_min_w >= self.phase_up_w and not self._phasing.one_phase_car else 1
            n = 1 if self._phasing.one_phase_car else phases
            need_w = self.power_w(self.lowest_current_a(n), n)
            if start_min_w < need_w:
                return self._decision(
                    0.0,
                    f"waiting: surplus {available:.0f} W, window min {start_min_w:.0f} W < {need_w:.0f} W",
                )
            if phases != self._phasing.phases:
                self._switch_to(now, phases)
            # what a paused car "would have done" (min current through the night) is no evidence
            self._restart_evidence()
            self._on, self._on_since = True, now
            level = self._following.level_a = self._recent_level()
            return self._decision(
                level,
                f"start: surplus >= {need_w:.0f} W for {c.start_window_s:g} s "
                f"-> {level:g} A on {self.phases}p",
            )

        # charging: grid import beyond the tolerance overrides the cloud filter
        p = self._eff_phases()
        min_w = self.power_w(self.lowest_a, p)
        importing = site.grid_power_w - c.grid_target_w > c.deadzone_w
        if importing and available < self.power_w(self._following.level_a, p):
            self._import_since = self._import_since if self._import_since is not None else now
        else:
            self._import_since = None
        n = 1 if self.auto_phases and not self.vehicle.no_phase_switch else p
        lowest_w = self.power_w(self.lowest_current_a(n), n)
        if self._import_since is not None and now - self._import_since >= c.grid_tolerance_s:
            self._import_since = None
            if available < min_w:
                if (
                    self._phasing.phases == 3
                    and available >= lowest_w
                    and self._phasing.allowed(now)
                    and not self.vehicle.no_phase_switch
                ):
                    self._switch_to(now, 1)
                    level = self._following.level_a = self._fit(available, 1)
                    return self._decision(
                        level, f"switch to 1p: importing from the grid for {c.grid_tolerance_s:g} s"
                    )
                if self.vehicle.never_stop:
                    level = self._following.level_a = self.lowest_a
                    return self._decision(
                        level, f"never_stop: importing from the grid for {c.grid_tolerance_s:g} s, min"
                    )
                self._stop_session(now)
                return self._decision(0.0, f"stop: importing from the grid for {c.grid_tolerance_s:g} s")

        # stop for lack of surplus (the lowest power this charge point can offer)
        window_max_w = s.max_over(c.window_s)
        if window_max_w < lowest_w and not self.vehicle.never_stop:
            on_s = now - self._on_since
            if on_s >= c.min_on_s:
                self._stop_session(now)
                return self._decision(
                    0.0,
                    f"stop: surplus below {lowest_w:.0f} W for {c.window_s:g} s (max {window_max_w:.0f} W)",
                )

        switched = self._switch_phases(now)
        if switched is not None:
            return switched
        return self._follow(available)

    def _switch_phases(self, now: float) -> Decision | None:
        """Carry out the switch :meth:`_phases_due` names, if any; the current is then what the surplus
        supported over ``RECENT_S`` on the new phases."""
        due = self._phases_due(now)
        if due is None:
            return None
        phases, why, for_shade = due
        self._switch_to(now, phases)
        self._shade_switched = for_shade
        level = self._following.level_a = self._recent_level()
        return self._decision(level, f"switch to {phases}p: {why}")

    def _phases_due(self, now: float) -> tuple[int, str, bool] | None:
        """The phases to switch to, why, and whether it is for a shade (:meth:`_shade_due`), when
        :meth:`PhaseSwitch.due <pvcharge.control.phases.PhaseSwitch.due>` or the shade rule says so and a
        switch is allowed now; ``None`` otherwise."""
        if not (self.auto_phases and self._phasing.has_evidence and self._phasing.allowed(now)):
            return None
        if self.vehicle.no_phase_switch:  # the phases were chosen at the start
            return None
        shade = self._shade_due()
        due = self._phasing.due() or shade or self._shade_over()
        if due is None:
            return None
        return due[0], due[1], due is shade

    def _recent_level(self) -> float:
        """Whole amps per phase that the surplus supported over the last ``RECENT_S`` on the phases in
        effect (a start's or a phase switch's first current)."""
        return self._fit(self._surplus.min_over(RECENT_S), self._eff_phases())

    def _shade_due(self) -> tuple[int, str] | None:
        """To 1 phase when min current on 3 phases has drawn ``shade_switch_min_wh`` beyond the surplus
        in this shade and the rest of the shade, as long as the last hour's shades suggest
        (:mod:`pvcharge.control.shade`), would draw more beyond the surplus and beyond 1-phase minimum
        than ``shade_switch_cost_wh`` is worth (× ``battery_weight``); ``None`` otherwise."""
        c = self.control
        if (
            c.shade_switch_cost_wh <= 0
            or self._phasing.phases != 3
            or self._phasing.one_phase_car
            or self._available_w is None
            or self._following.level_a > self.lowest_current_a(3)
            or self._phasing.deficit_wh < c.shade_switch_min_wh
        ):
            return None
        rest_s = self._shade.expected_rest_s(self._last_reading_t)
        if rest_s is None:
            return None
        covered_w = max(self._available_w, self.power_w(self.lowest_current_a(1), 1))
        over_wh = (self.power_w(self.lowest_current_a(3), 3) - covered_w) * rest_s / 3600.0
        if c.battery_weight * over_wh < c.shade_switch_cost_wh:
            return None
        return 1, (
            f"the shade likely lasts {rest_s:.0f} s more: min current on 3p would draw {over_wh:.0f} Wh "
            f"more than on 1p (shade_switch_cost_wh {c.shade_switch_cost_wh:g} Wh)"
        )

    def _shade_over(self) -> tuple[int, str] | None:
        """Back to 3 phases after a switch for a shade (:meth:`_shade_due`) once the shade is over (the
        surplus covered 3-phase minimum for :data:`pvcharge.control.shade.BRIGHT_GAP_S`) and covered a
        start on 3 phases (``phase_up_w``) for ``SHADE_OVER_S``: the shade was the reason to leave 3
        phases, so the way back needs no evidence beyond its end."""
        s = self._surplus
        if not self._shade_switched or self._phasing.phases != 1 or self._phasing.one_phase_car:
            return None
        if self._shade.dark:
            return None
        if not s.spans(SHADE_OVER_S) or s.min_over(SHADE_OVER_S) < self.phase_up_w:
            return None
        return 3, f"the shade is over: surplus >= {self.phase_up_w:.0f} W for {SHADE_OVER_S:g} s"

    def _follow(self, available: float) -> Decision:
        """Follow the surplus at the current phases (:mod:`pvcharge.control.following`)."""
        p = self._eff_phases()
        current_a, reason = self._following.step(
            available, self._dt_s, self.phases, lambda w: self._fit(w, p), lambda a: self.power_w(a, p)
        )
        return self._decision(current_a, reason)

    def _minpv(self, now: float, available: float) -> Decision:
        """At least min current, the surplus on top (same damping and phase rules as pv)."""
        if not self._on:
            self._on, self._on_since = True, now
            if self.auto_phases and self._phasing.allowed(now):
                s, window_s = self._surplus, self.control.window_s
                phases = 3 if s.spans(window_s) and s.min_over(window_s) >= self.phase_up_w else 1
                if phases != self._phasing.phases:
                    self._switch_to(now, phases)
            self._restart_evidence()
            level = self._following.level_a = self._fit(available, self._eff_phases())
            return self._decision(level, f"minpv: start at {level:g} A on {self.phases}p")
        switched = self._switch_phases(now)
        if switched is not None:
            return switched
        return self._follow(available)
