"""Several loadpoints on one site (pvcharge.control.site): priorities, sharing, modes, the fuse and
circuits, stale data; and a single loadpoint deciding exactly as the bare Controller."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvcharge.control import (
    ChargePoint,
    Circuit,
    ControlConfig,
    Controller,
    Decision,
    Loadpoint,
    SiteController,
)
from pvcharge.control.config import SiteConfig
from pvcharge.control.site import share_w
from pvcharge.readings import ChargerCommand, ChargerReading, SiteReading
from pvcharge.sim.replay import Policy, replay
from pvcharge.sim.trace import bundled_trace

V = 230.0
#: a quick controller: no cloud filter, no min on/off times, no damping, no dead zone
QUICK = ControlConfig(
    cloud_filter="off", min_on_s=0, min_off_s=0, up_energy_wh=0, down_energy_wh=0, deadzone_w=0
)


class Site:
    """A site without a battery whose cars draw what they are offered at once:
    ``grid = house + cars − pv``; a fixed-phase charge point draws on its phases."""

    def __init__(self, sc: SiteController, *, pv_w: float, house_w: float = 0.0) -> None:
        self.sc, self.pv_w, self.house_w, self.now = sc, pv_w, house_w, 0.0
        self.commands: dict[str, ChargerCommand] = {n: ChargerCommand(0.0, 3) for n in sc.controllers}
        self.plugged = set(sc.controllers)
        self.decisions: dict[str, Decision] = {}
        self.car_max_w: dict[str, float] = {}  # a car that limits itself to this

    def car_w(self, name: str) -> float:
        c = self.commands[name]
        offered_w = c.current_a * c.phases * V if name in self.plugged else 0.0
        return min(offered_w, self.car_max_w.get(name, offered_w))

    def readings(self, age_s: float = 0.0) -> tuple[SiteReading, dict[str, ChargerReading | None]]:
        cars_w = sum(self.car_w(n) for n in self.commands)
        site = SiteReading(self.house_w + cars_w - self.pv_w, self.pv_w, 0.0, None, self.now - age_s)
        chargers: dict[str, ChargerReading | None] = {
            n: ChargerReading(
                n in self.plugged,
                self.car_w(n) > 0,
                self.car_w(n),
                c.current_a,
                c.phases if self.car_w(n) > 0 else 0,
                self.now,
            )
            for n, c in self.commands.items()
        }
        return site, chargers

    def run(self, seconds: float, age_s: float = 0.0) -> dict[str, float]:
        """Cycle every 5 s; the currents commanded at the end."""
        end = self.now + seconds
        while self.now < end:
            self.now += 5.0
            site, chargers = self.readings(age_s)
            self.decisions = self.sc.step(self.now, site, chargers)
            self.commands = {n: d.command for n, d in self.decisions.items()}
        return {n: c.current_a for n, c in self.commands.items()}


def site_of(*loadpoints: Loadpoint, control: ControlConfig = QUICK, **site: Any) -> SiteController:
    return SiteController(control, SiteConfig(**site), loadpoints)


def lp(name: str, priority: int = 0, mode: Any = None, phases: Any = 3, **cp: Any) -> Loadpoint:
    return Loadpoint(name, ChargePoint(phases=phases, **cp), mode, priority)


def test_the_higher_priority_car_is_served_first() -> None:
    site = Site(site_of(lp("low", 0), lp("high", 1)), pv_w=9000)
    assert site.run(300) == {"low": 0.0, "high": 13.0}  # 9000 W / 690 W per A; 0 W left for low


def test_a_lower_priority_car_is_turned_down_and_paused_when_a_higher_one_arrives() -> None:
    site = Site(site_of(lp("low", 0), lp("high", 1)), pv_w=9000)
    site.plugged = {"low"}
    assert site.run(300)["low"] == 13.0  # alone, it takes the whole surplus
    site.plugged = {"low", "high"}
    assert site.run(300) == {"low": 0.0, "high": 13.0}


def test_equal_priorities_share_the_surplus_equally() -> None:
    site = Site(site_of(lp("a"), lp("b")), pv_w=10000)
    assert site.run(300) == {"a": 7.0, "b": 7.0}  # 5000 W each: 7 A on 3 phases


def test_equal_sharing_gives_what_one_car_leaves_to_the_other() -> None:
    site = Site(site_of(lp("a"), lp("b", max_current_a=6)), pv_w=10000)
    assert site.run(300) == {"a": 8.0, "b": 6.0}  # b takes at most 4140 W; a the other 5860 W


def test_a_car_that_limits_itself_leaves_its_part_to_the_other() -> None:
    site = Site(site_of(lp("a"), lp("b")), pv_w=10000)
    site.car_max_w["b"] = 2070.0  # b draws 3 A on 3 phases, whatever it is offered
    assert site.run(300)["a"] == 10.0  # 10000 − 2070 W, less 1 A of headroom kept for b: 6900 W


def test_a_paused_car_claims_its_part_only_once_it_starts() -> None:
    """a charges alone; b plugs in and waits out its start window: a keeps the surplus meanwhile."""
    site = Site(site_of(lp("a"), lp("b"), control=dataclasses.replace(QUICK, cloud_filter=120)), pv_w=9000)
    site.plugged = {"a"}
    assert site.run(300)["a"] == 13.0
    site.plugged = {"a", "b"}
    site.run(30)  # b's start window is 36 s
    assert site.commands["a"].current_a == 13.0 and site.commands["b"].current_a == 0.0
    assert site.run(120) == {"a": 6.0, "b": 6.0}  # 4500 W each: 6 A on 3 phases


def test_fast_takes_its_full_current_first_whatever_its_priority() -> None:
    site = Site(site_of(lp("pv", 1), lp("fast", 0, mode="fast")), pv_w=16000)
    assert site.run(300) == {"pv": 7.0, "fast": 16.0}  # 16000 − 11040 W = 4960 W: 7 A


def test_minpv_takes_its_minimum_first_and_the_surplus_goes_by_priority() -> None:
    site = Site(site_of(lp("pv", 1), lp("minpv", 0, mode="minpv")), pv_w=6000)
    assert site.run(300) == {"pv": 0.0, "minpv": 8.0}  # 6000 − 4140 W < a 3-phase minimum for pv
    site.pv_w = 10000
    assert site.run(300) == {"pv": 8.0, "minpv": 6.0}  # pv gets all above minpv's 4140 W


def test_stale_meter_data_pauses_every_loadpoint() -> None:
    site = Site(site_of(lp("a"), lp("b", mode="minpv")), pv_w=10000)
    assert all(site.run(120).values())
    assert site.run(10, age_s=60) == {"a": 0.0, "b": 0.0}
    assert all("stale" in d.reason for d in site.decisions.values())


def test_the_fuse_cuts_the_lower_priority_first() -> None:
    site = Site(site_of(lp("high", 1, mode="fast"), lp("low", 0, mode="fast"), max_grid_current_a=25), pv_w=0)
    assert site.run(60) == {"high": 16.0, "low": 9.0}
    assert "fuse limit: 25 A per phase" in site.decisions["low"].reason


def test_the_fuse_is_shared_between_equal_priorities() -> None:
    site = Site(site_of(lp("a", mode="fast"), lp("b", mode="fast"), max_grid_current_a=25), pv_w=0)
    assert sorted(site.run(60).values()) == [12.0, 13.0]  # 25 A: 12.5 each, in whole amps


def test_a_circuit_holds_the_sum_of_its_loadpoints_and_pauses_below_the_minimum() -> None:
    garage = Circuit("garage", 20, ("b", "c"))
    sc = site_of(
        lp("a", 2, mode="fast"), lp("b", 1, mode="fast"), lp("c", 0, mode="fast"), circuits=(garage,)
    )
    site = Site(sc, pv_w=0)
    assert site.run(60) == {"a": 16.0, "b": 16.0, "c": 0.0}  # 4 A left for c: below 6 A, paused
    assert "circuit garage: 20 A per phase" in site.decisions["c"].reason


def test_a_one_phase_and_a_three_phase_loadpoint_meet_on_l1_only() -> None:
    sc = site_of(
        lp("a", 1, mode="fast", phases=1), lp("b", 0, mode="fast"), circuits=(Circuit("c", 20, ("a", "b")),)
    )
    assert Site(sc, pv_w=0).run(60) == {"a": 16.0, "b": 0.0}  # L1 carries both: 4 A left for b
    sc = site_of(
        lp("a", 1, mode="fast", phases=1),
        lp("b", 0, mode="fast", phases=1),
        circuits=(Circuit("c", 32, ("a", "b")),),
    )
    assert Site(sc, pv_w=0).run(60) == {"a": 16.0, "b": 16.0}


def test_the_config_is_checked() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        site_of(lp("a"), lp("a"))
    with pytest.raises(ValueError, match="unknown loadpoints"):
        site_of(lp("a"), circuits=(Circuit("garage", 16, ("b",)),))


def test_share_w_water_fills_between_floors_and_caps() -> None:
    assert share_w(10000, [0, 0], [11040, 11040]) == pytest.approx([5000, 5000])
    assert share_w(10000, [0, 0], [11040, 4140]) == pytest.approx([5860, 4140])
    assert share_w(3000, [4140, 0], [11040, 11040]) == pytest.approx([3570, -570])  # the deficit shared
    assert share_w(-500, [0, 0], [11040, 11040]) == pytest.approx([-250, -250])


class _One:
    """A single-loadpoint SiteController as a replay policy."""

    def __init__(self, sc: SiteController) -> None:
        self.sc = sc
        self.commands: list[ChargerCommand] = []

    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision:
        decision = self.sc.step(now, site, {"main": charger})["main"]
        self.commands.append(decision.command)
        return decision


class _Recorded:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.commands: list[ChargerCommand] = []

    def step(self, now: float, site: SiteReading | None, charger: ChargerReading | None) -> Decision:
        decision = self.policy.step(now, site, charger)
        self.commands.append(decision.command)
        return decision


@pytest.mark.parametrize("mode", ["pv", "minpv"])
def test_a_single_loadpoint_decides_exactly_as_the_bare_controller_over_a_day(mode: Any) -> None:
    trace = bundled_trace()
    control, cp, site = (
        ControlConfig(mode=mode),
        ChargePoint(phases="auto"),
        SiteConfig(max_grid_current_a=25),
    )
    bare = _Recorded(Controller(control, cp, site))
    one = _One(SiteController(control, site, [Loadpoint("main", cp)]))
    assert replay(trace, one).as_dict() == replay(trace, bare).as_dict()
    assert one.commands == bare.commands
    assert len({c.current_a for c in bare.commands}) > 3  # the day moves the current


# -- property: the sum of the commands never exceeds the fuse headroom or a circuit -----------------
reading = st.tuples(
    st.sampled_from([5.0, 5.0, 10.0]),  # seconds since the previous cycle
    st.floats(min_value=-15000, max_value=25000),  # grid power
    st.tuples(*[st.floats(min_value=-30, max_value=40)] * 3),  # grid phase currents
    st.lists(st.tuples(st.booleans(), st.floats(min_value=0, max_value=11040)), min_size=3, max_size=3),
    st.sampled_from([0.0, 0.0, 0.0, 100.0]),  # meter reading age
)
loadpoint = st.tuples(
    st.sampled_from(["pv", "minpv", "fast", "off"]),
    st.integers(0, 2),
    st.sampled_from([1, 3, "auto"]),
    st.integers(6, 32),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(loadpoint, min_size=2, max_size=3),
    st.one_of(st.none(), st.integers(10, 63)),
    st.lists(st.tuples(st.integers(6, 40), st.sets(st.integers(0, 2), min_size=1)), max_size=2),
    st.lists(reading, min_size=1, max_size=40),
    st.sampled_from(["pause", "min_current"]),
)
def test_the_commands_never_exceed_the_fuse_or_a_circuit(
    lps: list[Any], fuse: int | None, circuits: list[Any], readings: list[Any], safe_state: Any
) -> None:
    names = [f"lp{i}" for i in range(len(lps))]
    cs = tuple(
        Circuit(f"c{k}", limit, tuple(names[i] for i in sorted(members) if i < len(names)) or (names[0],))
        for k, (limit, members) in enumerate(circuits)
    )
    sc = SiteController(
        ControlConfig(cloud_filter="off", min_on_s=0, min_off_s=0, safe_state=safe_state),
        SiteConfig(max_grid_current_a=fuse, circuits=cs),
        [
            Loadpoint(n, ChargePoint(phases=p, max_current_a=a), m, prio)
            for n, (m, prio, p, a) in zip(names, lps, strict=True)
        ],
    )
    t = 0.0
    for dt, grid, phase_a, cars, age in readings:
        t += dt
        site = SiteReading(grid, 5000.0, 0.0, None, t - age, grid_currents_a=phase_a)
        chargers: dict[str, ChargerReading | None] = {
            n: ChargerReading(
                plugged,
                plugged and car_w > 0,
                car_w if plugged else 0.0,
                0.0,
                3 if plugged and car_w else 0,
                t,
            )
            for n, (plugged, car_w) in zip(names, cars, strict=False)
        }
        decisions = sc.step(t, site, chargers)
        use = {n: _per_phase(d.command) for n, d in decisions.items()}
        for c in cs:
            for p in range(3):
                assert sum(use[n][p] for n in c.loadpoints) <= c.max_current_a
        if fuse is not None and age == 0:
            for p in range(3):
                cars_a = sum(sc.controllers[n].car_currents_a(chargers[n])[p] for n in names)
                others, commanded = phase_a[p] - cars_a, sum(u[p] for u in use.values())
                assert commanded == 0 or others + commanded <= fuse + 1e-6, (p, others, decisions)


def _per_phase(command: ChargerCommand) -> tuple[float, float, float]:
    a = command.current_a
    return (a, a, a) if command.phases == 3 else (a, 0.0, 0.0)


def test_reconfigure_keeps_the_sessions_of_the_loadpoints_that_stay() -> None:
    sc = site_of(lp("a"), lp("b"))
    site = Site(sc, pv_w=12000)
    assert site.run(300) == {"a": 8.0, "b": 8.0}
    a = sc.controllers["a"]
    sc.reconfigure(QUICK, SiteConfig(), [lp("a", 1, max_current_a=10), lp("c")])
    assert sc.controllers["a"] is a and a.max_current_a == 10 and set(sc.controllers) == {"a", "c"}
    site.commands = {n: site.commands.get(n, ChargerCommand(0.0, 3)) for n in ("a", "c")}
    site.plugged = {"a", "c"}
    assert site.run(300) == {"a": 10.0, "c": 7.0}  # a first now, at its new maximum; c gets the rest
    with pytest.raises(ValueError, match="duplicate"):
        sc.reconfigure(QUICK, SiteConfig(), [lp("a"), lp("a")])
    assert set(sc.controllers) == {"a", "c"}  # the old settings stay
