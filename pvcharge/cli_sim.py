"""The simulation commands: ``pvcharge replay | demo | emulate`` (their options and what they run).

Registered by :func:`pvcharge.cli.build_parser` through :func:`add_commands`; the simulation itself
(:mod:`pvcharge.sim`) is imported only when one of these commands runs, so that ``pvcharge run`` does not
load it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import signal
import sys
from collections.abc import Callable
from datetime import time as dt_time
from typing import TYPE_CHECKING, Any

from pvcharge import __version__
from pvcharge.config import ApiConfig, Config
from pvcharge.logs import configure_logging

if TYPE_CHECKING:
    from pvcharge.sim.trace import Trace


#: what only the emulators import: absent where pvcharge was installed from deploy/requirements.txt
#: (the Docker image, a lean Pi install), which holds the daemon's dependencies only
EMULATOR_PACKAGES = ("aiohttp", "trustme", "cryptography")


def needs_emulators(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` (``demo``, ``emulate``), answering with a clear error and exit code 2 instead of a
    traceback when a package of :data:`EMULATOR_PACKAGES` is not installed."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in EMULATOR_PACKAGES:
                raise
            print(
                f"pvcharge {command.__name__.removeprefix('cmd_')}: the emulators need {exc.name}, which is "
                "not installed here (this install holds the daemon only, as deploy/requirements.txt and the "
                "Docker image do); to run the demo and the emulators, install pvcharge with all its "
                "dependencies: pip install from the source tree or its wheel (deploy/README.md)",
                file=sys.stderr,
            )
            return 2

    return run


DEMO_METERS = {
    "huawei": "Huawei SUN2000 (Modbus TCP)",
    "senec": "SENEC.Home (lala.cgi over HTTPS)",
    "alphaess": "AlphaESS Open API (HTTP, signed)",
}
DEMO_CHARGERS = {
    "warp": "Tinkerforge WARP (HTTP)",
    "easee": "Easee cloud API (HTTP)",
    "alphaess": "AlphaESS wallbox (Open API, HTTP)",
    "ocpp": "an OCPP 1.6J charge point (WebSocket, pvcharge the central system)",
}


def cmd_demo(args: argparse.Namespace) -> int:
    from pvcharge.cli import _load
    from pvcharge.config import SessionsConfig, StateConfig
    from pvcharge.sessions import database_path
    from pvcharge.sessions.export import sessions_table
    from pvcharge.sim.demo import run_demo, summary, trace_tz
    from pvcharge.sim.trace import bundled_trace, load_trace

    base = _load(args.config) if args.config else None
    configure_logging(args.log_level or "warning", "console")
    trace = load_trace(args.trace) if args.trace else bundled_trace()
    if args.loadpoints == 2:  # first: it refuses --plan
        return _demo_loadpoints(args, trace, base)
    if args.plan is not None:
        return _demo_plan(args, trace, base)
    record = None
    if not args.no_record and (base is None or base.sessions.enabled):
        record = (
            database_path(base.sessions, base.state)
            if base
            else database_path(SessionsConfig(), StateConfig())
        )
    start_s, end_s = trace.daylight()
    speed = args.speed or max(1.0, (end_s - start_s) / args.seconds)
    cp = base.charge_point if base else None
    if args.charger == "alphaess":  # on/off: the current and phases set in the AlphaESS app
        fixed = f"{cp.phases}p {cp.max_current_a:g} A" if cp else "1p 16 A"
        limits = f"{fixed} on/off"
    else:
        limits = f"{cp.phases}p {cp.min_current_a:g}–{cp.max_current_a:g} A" if cp else "1p 6–16 A"
    devices = f"{DEMO_METERS[args.meter]} and {DEMO_CHARGERS[args.charger]}"
    if args.meter == args.charger == "alphaess":
        devices = f"{DEMO_METERS['alphaess']} with its wallbox (one account)"
    print(
        f"pvcharge {__version__} demo: {trace.name}, simulated {speed:.0f}x faster than real time.\n"
        f"Emulated {devices} on 127.0.0.1, "
        f"charger {limits}; the car is plugged in 08:00–18:00.\n"
    )
    result = asyncio.run(
        run_demo(
            trace,
            speed=speed,
            start_s=start_s,
            end_s=end_s,
            base_config=base,
            meter=args.meter,
            charger=args.charger,
            api=base.api if base else ApiConfig(),
            record=record,
        )
    )
    print()
    print(summary(result, trace))
    if record is not None:
        print(f"\nSessions recorded in {record} (pvcharge sessions lists them; times local to the trace):")
        print(sessions_table(list(result.sessions), trace_tz(trace)) if result.sessions else "  none")
    return 0


def _demo_loadpoints(args: argparse.Namespace, trace: Trace, base: Config | None) -> int:
    """``pvcharge demo --loadpoints 2``: two WARP emulators on one site (:mod:`pvcharge.sim.lpdemo`);
    not recorded."""
    from pvcharge.sim.lpdemo import DEMO_FUSE_A, loadpoints_summary, run_loadpoints_demo

    if args.meter != "huawei" or args.charger != "warp" or args.plan is not None:
        print(
            "pvcharge: demo --loadpoints 2 runs a Huawei meter and two WARPs (no --meter, --charger, --plan)"
        )
        return 2
    start_s, end_s = trace.daylight()
    speed = args.speed or max(1.0, (end_s - start_s) / args.seconds)
    fuse = base.site.max_grid_current_a if base else DEMO_FUSE_A
    print(
        f"pvcharge {__version__} demo: {trace.name}, simulated {speed:.0f}x faster than real time.\n"
        f"Emulated {DEMO_METERS['huawei']} and two {DEMO_CHARGERS['warp']}s on 127.0.0.1 (1p 6–16 A each, "
        f"fuse {'none' if fuse is None else f'{fuse:g} A'}): carport (priority 1) plugged in 08:00–13:00, "
        "garage 10:00–18:00.\n"
    )
    result = asyncio.run(
        run_loadpoints_demo(
            trace,
            speed=speed,
            start_s=start_s,
            end_s=end_s,
            base_config=base,
            out=sys.stdout,
            api=base.api if base else ApiConfig(),
        )
    )
    print()
    print(loadpoints_summary(result, trace))
    return 0


def _demo_plan(args: argparse.Namespace, trace: Trace, base: Config | None) -> int:
    """``pvcharge demo --plan TEXT``: the night demo (:mod:`pvcharge.sim.plandemo`); not recorded."""
    from pvcharge.settings import SettingError
    from pvcharge.sim.demo import summary, trace_tz
    from pvcharge.sim.plandemo import run_plan_demo

    print(
        f"pvcharge {__version__} demo: plan {args.plan!r} across the night of {trace.name}, in about "
        f"{args.seconds:g} s.\nEmulated {DEMO_METERS[args.meter]}, {DEMO_CHARGERS[args.charger]}, aWATTar "
        "day-ahead prices and an Open-Meteo forecast on 127.0.0.1; the car is plugged in all night.\n"
    )
    try:
        result, run, night = asyncio.run(
            run_plan_demo(
                trace,
                args.plan,
                seconds=args.seconds,
                base_config=base,
                meter=args.meter,
                charger=args.charger,
                api=base.api if base else ApiConfig(),
            )
        )
    except SettingError as exc:
        print(f"pvcharge: demo --plan: {exc.problem}", file=sys.stderr)
        return 2
    from pvcharge.sim.plandemo import plan_line

    print()
    print(summary(result, night))
    print(plan_line(run, trace_tz(trace)))
    return 0


#: ``pvcharge emulate``'s devices and their default TCP ports: fixed, so that a config written once keeps
#: working (``--port 0`` picks a free one).  Huawei's own port, 502, is below 1024: root only.  For ocpp the
#: port is the central system's (8887, as evcc's): the charge point connects to it.
EMULATE_PORTS = {
    "huawei": 5502,
    "senec": 8443,
    "alphaess": 8081,
    "easee": 8082,
    "warp": 8080,
    "ocpp": 8887,
    "tibber": 8083,
}


def _time_of_day_s(text: str) -> float:
    """``HH:MM`` → seconds since midnight (argparse type), read as a plan's deadline is."""
    try:
        hours, minutes = text.split(":")
        of_day = dt_time(int(hours), int(minutes))  # ValueError outside 00:00–23:59
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a time of day HH:MM (00:00–23:59), got {text!r}"
        ) from None
    return float(of_day.hour * 3600 + of_day.minute * 60)


def cmd_emulate(args: argparse.Namespace) -> int:
    from pvcharge.sim.emulate import config_yaml, emulator, site_model
    from pvcharge.sim.trace import bundled_trace, hhmm, load_trace

    configure_logging(args.log_level, "console")  # to stderr: stdout is the config for the user
    trace = load_trace(args.trace) if args.trace else bundled_trace()
    site = site_model(trace, args.start)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        port = EMULATE_PORTS[args.kind] if args.port is None else args.port
        async with contextlib.AsyncExitStack() as stack:
            running = emulator(
                args.kind,
                site,
                host=args.host,
                port=port,
                expose=args.expose,
                phase_switch=args.phase_switching,
            )
            try:
                emulated = await stack.enter_async_context(running)
            except ValueError as exc:  # a host that is not loopback, an option the device lacks
                print(f"pvcharge: error: {exc}", file=sys.stderr)
                return 2
            except (OSError, RuntimeError) as exc:  # aiohttp: OSError; pymodbus: RuntimeError
                print(
                    f"pvcharge: error: cannot listen on {args.host} port {port} (--port): {exc}",
                    file=sys.stderr,
                )
                return 2
            start = hhmm(args.start)
            print(f"# pvcharge {__version__} emulates {emulated.title} at {emulated.address}")
            car = site.car
            print(
                f"# The site: {trace.name}, in real time from {start} local; the car is plugged in "
                f"{hhmm(car.plug_in_s)}–{hhmm(car.plug_out_s)}."
            )
            for note in emulated.notes:
                print(f"# {note}")
            print(
                "# pvcharge config (merge into your config file; the charge point's limits go under charger):"
            )
            print(config_yaml(emulated), end="")
            print("# Running until Ctrl-C or SIGTERM.", flush=True)
            await stop.wait()
        return 0

    return asyncio.run(main())


def cmd_replay(args: argparse.Namespace) -> int:
    from pvcharge.cli import _load
    from pvcharge.control import ChargePoint, ControlConfig, Controller, SiteConfig
    from pvcharge.sim.replay import ReplaySite, Sample, replay
    from pvcharge.sim.trace import load_trace

    if args.config:
        config = _load(args.config)
        control, charge_point, site_cfg = config.control, config.charge_point, config.site
    else:  # the reference site's charge point: 6–16 A, switching 1p/3p
        control, charge_point, site_cfg = ControlConfig(), ChargePoint(phases="auto"), SiteConfig()
    site = ReplaySite(
        voltage_v=site_cfg.voltage_v,
        min_current_a=charge_point.min_current_a,
        max_current_a=charge_point.max_current_a,
    )
    results = []
    for path in args.traces:
        trace = load_trace(path)
        samples: list[Sample] = []
        controller = Controller(control, charge_point, site_cfg)
        score = replay(
            trace,
            controller,
            interval_s=control.interval_s,
            site=site,
            record=samples.append if args.plot else None,
        )
        results.append(score.as_dict())
        if args.plot:
            from pvcharge.sim.plot import plot_day

            out = args.plot if len(args.traces) == 1 else f"{args.plot.removesuffix('.png')}-{trace.name}.png"
            plot_day(samples, trace, score, out)
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    else:
        for r in results:
            print(
                f"{r['trace']}: oracle {r['oracle_kwh']:.2f} kWh, car {r['car_kwh']:.2f} kWh "
                f"(PV {r['pv_to_car_kwh']:.2f}, battery {r['battery_to_car_kwh']:.2f}, "
                f"grid {r['grid_to_car_kwh']:.2f}), "
                f"capture {100 * float(r['capture']):.1f} %, starts {r['starts']}, "
                f"phase switches {r['phase_switches']}, charger writes {r['charger_writes']}"
            )
        for note in _replay_notes(charge_point, site_cfg.voltage_v, args.config, results):
            print(f"note: {note}")
    return 0


def _replay_notes(
    charge_point: Any, voltage_v: float, config_path: str | None, results: list[dict[str, Any]]
) -> list[str]:
    """Why a replay's capture may look wrong: the charger's fixed phases, or a capture above 100 %."""
    notes = []
    if charge_point.phases != "auto":
        floor_w = charge_point.min_current_a * charge_point.phases * voltage_v
        source = f"charger.phases: {charge_point.phases} from {config_path}" if config_path else "phases"
        notes.append(
            f"{source}: the car charges on {charge_point.phases} phase(s) only, never below {floor_w:.0f} W, "
            "while the oracle may use 1 or 3 phases; a low capture on a day with little surplus is that. "
            "Without --config the replay uses the reference site's charger (6-16 A, phases: auto)."
        )
    if any(float(r["capture"]) > 1.0 for r in results):
        notes.append(
            "a capture above 100 % is possible: the oracle rounds down to whole amps, while the car is "
            "credited with all PV surplus up to what it drew (docs/benchmarks.md)"
        )
    return notes


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``replay``, ``demo`` and ``emulate`` to the ``pvcharge`` command line."""
    p = sub.add_parser("replay", help="replay measured days through the controller and score them")
    p.add_argument("traces", nargs="+", help="trace CSV files (timestamp,pv_power_w,house_power_w)")
    p.add_argument("--config", "-c", help="take site, charger limits and control settings from this file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--plot", help="draw the day to this PNG (needs the 'plot' extra: matplotlib)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("demo", help="run the daemon against built-in emulators on a measured PV day")
    p.add_argument("--speed", type=float, help="simulated seconds per real second (default: fit --seconds)")
    p.add_argument(
        "--seconds", type=float, default=60.0, help="real duration of the daylight hours (default 60)"
    )
    p.add_argument("--trace", help="trace CSV (timestamp,pv_power_w,house_power_w); default: the bundled day")
    p.add_argument("--config", "-c", help="take site, charger limits and control settings from this file")
    p.add_argument("--meter", choices=list(DEMO_METERS), default="huawei", help="which meter to emulate")
    p.add_argument(
        "--charger",
        choices=list(DEMO_CHARGERS),
        default="warp",
        help="which charger to emulate (alphaess: on/off at max_current_a; --meter alphaess: one account)",
    )
    p.add_argument(
        "--no-record",
        action="store_true",
        help="do not record the demo's session (default: recorded where pvcharge sessions finds it, "
        "the state directory or sessions.database of --config)",
    )
    p.add_argument(
        "--plan",
        help='run across a night with this plan instead of the day, e.g. "20 kWh by 07:00" (emulated '
        "day-ahead prices and forecast; not recorded)",
    )
    p.add_argument(
        "--loadpoints",
        type=int,
        choices=[1, 2],
        default=1,
        help="2: two WARPs on one site, by priority under one fuse, a summary line per loadpoint "
        "(not recorded)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=needs_emulators(cmd_demo))

    ports = ", ".join(f"{kind} {port}" for kind, port in EMULATE_PORTS.items())
    p = sub.add_parser(
        "emulate",
        help="run one device emulator until stopped, to try pvcharge, Home Assistant or evcc against it",
        description="Run one device emulator on a simulated site (the bundled measured day, a home battery, "
        "a car plugged in 08:00-18:00) in real time, until Ctrl-C or SIGTERM. It prints where it listens "
        "and the pvcharge config section (with the emulator's throwaway credentials) that points at it.",
    )
    p.add_argument("kind", choices=list(EMULATE_PORTS), help="the device to emulate")
    p.add_argument("--port", type=int, help=f"TCP port; 0: a free one (default: {ports})")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (ocpp: of the central system to connect to; default 127.0.0.1)",
    )
    p.add_argument(
        "--expose",
        action="store_true",
        help="allow a --host that is not loopback (the emulators are test doubles: throwaway "
        "credentials, no replay protection)",
    )
    p.add_argument(
        "--start",
        type=_time_of_day_s,
        default="10:00",
        metavar="HH:MM",
        help="simulated local time of day to start at (default 10:00: sun, and the car plugged in)",
    )
    p.add_argument("--trace", help="trace CSV (timestamp,pv_power_w,house_power_w); default: the bundled day")
    p.add_argument(
        "--phase-switching",
        action="store_true",
        help="warp: a WARP3 set up for external 1p/3p switching; ocpp: a box switching 1p/3p by numberPhases",
    )
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="warning",
        help="log lines go to stderr (default warning)",
    )
    p.set_defaults(func=needs_emulators(cmd_emulate))
