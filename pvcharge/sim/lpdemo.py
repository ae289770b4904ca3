"""``pvcharge demo --loadpoints 2``: the real daemon driving two WARP emulators on one site.

One :class:`~pvcharge.sim.site.SiteModel` per car (no battery: it only simulates its car, which its
WARP emulator answers from) and one for the site (the home battery and the Huawei meter), which sees
both cars as load (``extra_load_w``), as the two-car replay does (:func:`pvcharge.sim.replay.replay_cars`).
The daemon runs with a ``loadpoints:`` config: ``carport`` (priority 1, plugged in 08:00–13:00) and
``garage`` (priority 0, 10:00–18:00), each 1-phase 6–16 A, under a 25 A fuse.

Each control cycle the demo samples what the cars draw and splits it by source as the replay does
(:func:`pvcharge.sessions.tally.split_car_power`: PV serves the house first, then the cars, in
proportion to their power), and counts the cycles in which the commands just decided, with the
meter's other loads, exceed the fuse on a phase (``fuse_violations``, which must be 0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import TextIO

from pvcharge.config import ApiConfig, Config, parse_config
from pvcharge.daemon import Cycle, Daemon
from pvcharge.devices import create_site_devices
from pvcharge.sessions.tally import split_car_power
from pvcharge.sim.demo import (
    DemoResult,
    LivePrinter,
    SimClock,
    _local,
    _pace_lines,
    status_page,
    stopping_at,
)
from pvcharge.sim.demo_devices import DEMO_LIMITS, huawei_meter
from pvcharge.sim.demo_devices import warp_charger as warp_keys
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.site import CarParams, SiteModel
from pvcharge.sim.trace import Trace, hhmm
from pvcharge.sim.warp import WarpEmulator

#: the demo's loadpoints: name, priority, the car's plug-in window (local s since midnight)
LOADPOINTS = (("carport", 1, 8 * 3600.0, 13 * 3600.0), ("garage", 0, 10 * 3600.0, 18 * 3600.0))
#: the main fuse without ``--config`` (A per phase)
DEMO_FUSE_A = 25.0


@dataclass
class LoadpointTally:
    """One loadpoint's energy: ``car_wh`` integrated by its car's model; ``sampled_*`` sampled once a
    control cycle (their ratio is the PV share)."""

    name: str
    priority: int
    plug_in_s: float
    plug_out_s: float
    car_wh: float = 0.0
    sampled_car_wh: float = 0.0
    sampled_pv_wh: float = 0.0

    @property
    def pv_share_pct(self) -> float | None:
        """PV's share of the energy the car took, %; ``None`` if it took none."""
        return 100 * self.sampled_pv_wh / self.sampled_car_wh if self.sampled_car_wh > 0 else None


@dataclass(frozen=True)
class LoadpointsResult:
    """What the two-loadpoint demo measured: the run (:class:`DemoResult`, its energy the site's), each
    loadpoint's tally, and the cycles whose commands exceeded the fuse."""

    demo: DemoResult
    loadpoints: tuple[LoadpointTally, ...]
    fuse_violations: int
    fuse_a: float | None


class _Sampler:
    """The daemon's listener that samples the cars' sources and checks the fuse every cycle."""

    def __init__(
        self, trace: Trace, site: SiteModel, cars: dict[str, SiteModel], tallies: dict[str, LoadpointTally]
    ) -> None:
        self.trace, self.site, self.cars, self.tallies = trace, site, cars, tallies
        self.fuse_a: float | None = None
        self.violations = 0
        self._last_s: float | None = None

    def __call__(self, c: Cycle) -> None:
        state = self.site.state()
        car_w = {n: car.state().car_power_w for n, car in self.cars.items()}
        total_w = sum(car_w.values())
        dt_s = 0.0 if self._last_s is None else c.now - self._last_s
        self._last_s = c.now
        pv_w, house_w = self.trace.at(state.t_s)
        split = split_car_power(
            total_w, pv_w=pv_w, house_w=house_w, battery_w=state.battery_power_w, grid_w=state.grid_power_w
        )
        for name, w in car_w.items():
            if w > 0:
                tally = self.tallies[name]
                tally.sampled_car_wh += w * dt_s / 3600
                tally.sampled_pv_wh += split.pv * w / total_w * dt_s / 3600
        if self.fuse_a is not None:
            other_a = (state.grid_power_w - total_w) / 3 / self.site.voltage_v
            offered = [lp.decision.command.phase_currents_a for lp in c.loadpoints]
            use = [sum(currents[p] for currents in offered) for p in range(3)]
            if any(other_a + u > self.fuse_a + 1e-6 for u in use):
                self.violations += 1


def loadpoints_config(meter: str, urls: list[str], base: Config | None = None) -> Config:
    """The demo's config: the ``meter`` mapping, one loadpoint of :data:`LOADPOINTS` per WARP emulator
    URL in ``urls``; ``base`` supplies site, control and log settings (without it: a 25 A fuse)."""
    items = "".join(
        f"  - {{name: {name}, priority: {priority}, charger: {{{warp_keys(url)}, {DEMO_LIMITS}}}}}\n"
        for (name, priority, *_), url in zip(LOADPOINTS, urls, strict=True)
    )
    cfg = parse_config(
        f"meter: {meter}\nsite: {{max_grid_current_a: {DEMO_FUSE_A:g}}}\nloadpoints:\n{items}", "<demo>"
    )
    if base is None:
        return cfg
    return dataclasses.replace(
        base, meter=cfg.meter, charger=cfg.charger, charge_point=cfg.charge_point, loadpoints=cfg.loadpoints
    )


async def run_loadpoints_demo(
    trace: Trace,
    *,
    speed: float,
    start_s: float,
    end_s: float,
    base_config: Config | None = None,
    out: TextIO,
    api: ApiConfig | None = None,
) -> LoadpointsResult:
    """Run the daemon with two loadpoints against a Huawei and two WARP emulators from ``start_s`` to
    ``end_s`` (Unix s, simulated), ``speed`` times faster than real time; live lines (the first
    loadpoint's) on ``out``; with ``api`` the status page too."""
    clock = SimClock(start_s, speed, paced=True)
    cars = {
        name: SiteModel(
            trace, t_s=start_s, clock=clock.now, battery=None, car=CarParams(plug_in_s=p_in, plug_out_s=p_out)
        )
        for name, _, p_in, p_out in LOADPOINTS
    }
    site = SiteModel(
        trace,
        t_s=start_s,
        clock=clock.now,
        car=CarParams(plug_in_s=0.0, plug_out_s=0.0),
        extra_load_w=lambda: sum(car.state().car_power_w for car in cars.values()),
    )
    tallies = {name: LoadpointTally(name, prio, p_in, p_out) for name, prio, p_in, p_out in LOADPOINTS}
    sampler = _Sampler(trace, site, cars, tallies)
    wall0 = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        meter = await stack.enter_async_context(HuaweiEmulator(site))
        warps = [
            await stack.enter_async_context(WarpEmulator(car, phases_connected=1)) for car in cars.values()
        ]
        config = loadpoints_config(huawei_meter(meter.port), [w.url for w in warps], base_config)
        sampler.fuse_a = config.site.max_grid_current_a
        meter_driver, chargers = create_site_devices(
            config, clock=clock.now, meter_name="meter huawei (emulated)", charger_name="charger carport warp"
        )
        daemon = Daemon(
            config,
            meter_driver,
            chargers,
            clock=clock.now,
            sleep=clock.pace,
            on_cycle=LivePrinter(trace, out),
        )
        daemon.listeners.append(sampler)
        async with stopping_at(clock, end_s) as stop, status_page(daemon, api, out):
            stats = await daemon.run(stop)
    now = clock.now()
    site.advance_to(now)
    for name, car in cars.items():
        car.advance_to(now)
        tallies[name].car_wh = car.energy.car_wh
    due = int((now - start_s) // config.control.interval_s) + 1
    demo = DemoResult(
        start_s, now, time.monotonic() - wall0, stats, site.energy, None, due, clock.held_wall_s
    )
    return LoadpointsResult(demo, tuple(tallies.values()), sampler.violations, sampler.fuse_a)


def loadpoints_summary(result: LoadpointsResult, trace: Trace) -> str:
    """The closing report: one line per loadpoint (name, energy charged in kWh, PV share in %), the fuse
    violations and the daemon's counters."""
    d = result.demo
    start, end = _local(d.start_s, trace), _local(d.end_s, trace)
    hours = (d.end_s - d.start_s) / 3600

    lines = [
        f"Summary: {trace.name}, {start:%Y-%m-%d %H:%M}–{end:%H:%M} local ({hours:.1f} h simulated in "
        f"{d.wall_s:.0f} s, {d.stats.cycles} of {d.cycles_due} control cycles ran)",
        f"  PV produced      {d.energy.pv_wh / 1000:6.2f} kWh, "
        f"exported {d.energy.grid_export_wh / 1000:.2f} kWh",
    ]
    for lp in result.loadpoints:
        share = "  -  " if lp.pv_share_pct is None else f"{lp.pv_share_pct:5.1f} %"
        lines.append(
            f"  loadpoint {lp.name:<8} {lp.car_wh / 1000:6.2f} kWh charged, PV share {share} "
            f"(priority {lp.priority}, car plugged in {hhmm(lp.plug_in_s)}–{hhmm(lp.plug_out_s)})"
        )
    fuse = f"the {result.fuse_a:g} A fuse" if result.fuse_a is not None else "no fuse set"
    lines.append(f"  fuse violations  {result.fuse_violations} (cycles whose commands exceeded {fuse})")
    s = d.stats
    lines.append(
        f"  starts {s.starts}, charger writes {s.charger_writes}, held increases {s.held_increases}, "
        f"meter failures {s.meter_failures}, charger failures {s.charger_failures}"
    )
    return "\n".join(lines + _pace_lines(d))
