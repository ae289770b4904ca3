"""Command line: ``pvcharge run | healthcheck | check-config | probe | replay | demo | emulate | sessions``.

Exit codes: 0 success, 1 a device failed (probe), 2 a config or usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import signal
import sys
import time
from collections.abc import Sequence
from datetime import time as dt_time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import yaml

from pvcharge import __version__
from pvcharge.api.cli import add_commands
from pvcharge.config import ApiConfig, Config, load_config, secret_values, to_dict
from pvcharge.errors import ConfigError, DeviceError, PvchargeError
from pvcharge.logs import FORMATS, configure_logging, register_secrets
from pvcharge.planning.cli import add_command as add_plan_command
from pvcharge.readings import as_dict
from pvcharge.sessions.cli import add_command as add_sessions_command

if TYPE_CHECKING:
    from pvcharge.daemon import Cycle
    from pvcharge.sim.trace import Trace


def _load(path: str) -> Config:
    config = load_config(path)
    register_secrets(secret_values(config))
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    from pvcharge.devices import check_devices

    path = args.config or args.file
    if path is None or (args.config and args.file and args.config != args.file):
        print("pvcharge: check-config: name one config file (FILE or --config FILE)", file=sys.stderr)
        return 2
    config = _load(path)
    asyncio.run(check_devices(config, clock=time.time))  # what run checks with the drivers built
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"# {path}: valid. Effective configuration (defaults filled in, secrets redacted):")
    print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
    return 0


def _status_line(cycle: Cycle) -> str:
    """One line for systemd's ``STATUS=`` and the heartbeat: mode, surplus, current, reason."""
    d = cycle.decision
    surplus = f"{d.available_w:.0f} W" if d.available_w is not None else "n/a"
    current = f"{d.command.current_a:g} A on {d.command.phases}p" if d.command.current_a > 0 else "paused"
    parts = [f"mode {d.mode}", f"surplus {surplus}", f"current {current}"]
    if cycle.charger is None:
        parts.append("charger unavailable")
    return ", ".join(parts) + f" ({d.reason})"


def _longest_cycle_s(config: Config) -> float:
    """The longest a healthy cycle may take: reads and the write each wait up to max_age_s."""
    return 2 * config.control.max_age_s + config.control.interval_s


def cmd_run(args: argparse.Namespace) -> int:
    from pvcharge.sessions import open_recorder, tariff_of
    from pvcharge.state import state_path

    config = _load(args.config)
    log_format = args.log_format or config.log.format
    configure_logging(args.log_level or config.log.level, log_format, stream=sys.stdout)
    from pvcharge.daemon import Daemon
    from pvcharge.devices import create_site_devices
    from pvcharge.health import Heartbeat, heartbeat_path, stale_after_s
    from pvcharge.notify import Notifier
    from pvcharge.planning.service import build_services, close_services
    from pvcharge.services import Services

    log = structlog.get_logger("pvcharge.cli")
    notifier = Notifier()
    beat_file = heartbeat_path()
    heartbeat = Heartbeat(beat_file) if beat_file is not None else None
    log.info(
        "pvcharge_starting",
        version=__version__,
        config=str(Path(args.config).resolve()),
        meter=config.meter.type,
        charger=config.charger.type,
        python=platform.python_version(),
        notify=notifier.backend or "off",
        watchdog_s=notifier.watchdog_s,
        heartbeat=str(beat_file) if beat_file is not None else None,
    )
    for warning in config.warnings:
        log.warning("config_warning", warning=warning)
    if notifier.watchdog_s is not None and notifier.watchdog_s <= _longest_cycle_s(config):
        log.warning(
            "watchdog_too_short",
            watchdog_s=notifier.watchdog_s,
            longest_cycle_s=_longest_cycle_s(config),
            action="raise WatchdogSec= above 2 x control.max_age_s + control.interval_s",
        )
    if heartbeat is not None:
        heartbeat.clear()  # an old heartbeat must not pass for this process's

    async def main() -> None:
        named = f"charger {config.loadpoints[0].name} {config.charger.type}" if config.loadpoints else None
        meter, chargers = create_site_devices(config, clock=time.time, charger_name=named)
        stop = asyncio.Event()
        ready = False
        status = "starting: first control cycle"
        beat_failed = False

        def on_cycle(cycle: Cycle) -> None:
            nonlocal ready, status, beat_failed
            status = _status_line(cycle)
            if heartbeat is not None:
                current = daemon.config.control
                try:
                    heartbeat.beat(status, stale_after_s(current.interval_s, current.max_age_s))
                    beat_failed = False
                except OSError as exc:
                    if not beat_failed:
                        log.error("heartbeat_failed", file=str(heartbeat.path), error=str(exc))
                    beat_failed = True
            if ready:
                notifier.watchdog(status)
            else:
                ready = True
                notifier.send(READY=1, WATCHDOG=1, STATUS=status)
                log.info("ready", status=status)

        def on_stop() -> None:
            notifier.stopping()
            stop.set()

        def on_reload() -> None:
            """SIGHUP: re-read the config; the daemon takes it from the next cycle, or keeps the old one.
            A changed api: or mqtt: section restarts that service (READY=1 once it is back)."""
            notifier.reloading()
            try:
                new = _load(args.config)
                daemon.reload(new)
            except PvchargeError as exc:
                log.error("reload_rejected", config=args.config, error=str(exc))
            except Exception as exc:  # never let a reload bug end the loop
                log.error("reload_rejected", config=args.config, error=repr(exc), exc_info=True)
            else:
                if not args.log_level or not args.log_format:
                    configure_logging(
                        args.log_level or new.log.level, args.log_format or new.log.format, stream=sys.stdout
                    )
                log.info("reload_accepted", config=args.config, applies="from the next control cycle")
                if recorder is not None:
                    recorder.set_tariff(tariff_of(new.tariff))
                for warning in new.warnings:
                    log.warning("config_warning", warning=warning)
                if services.differs(new) or reloads:  # (behind a restart under way: READY in order)
                    task = asyncio.create_task(restart_services(new))
                    reloads.add(task)
                    task.add_done_callback(reloads.discard)
                    return
            notifier.ready(status)

        async def restart_services(new: Config) -> None:
            try:
                restarted = await services.apply(new)
                if restarted:
                    log.info("services_restarted", sections=restarted)
            except Exception as exc:  # a bug here must not end the loop either
                log.error("services_restart_failed", error=repr(exc), exc_info=True)
            finally:
                notifier.ready(status)

        daemon = Daemon(config, meter, chargers, on_cycle=on_cycle, state_file=state_path(config.state))
        recorder = open_recorder(config)
        if recorder is not None:
            daemon.listeners.append(recorder)
        # one plan service per loadpoint with plans, the first loadpoint's first (it takes the plans set
        # at run time and is the API's and MQTT's); plans: need a restart to change
        plan_services = build_services(config, daemon, clock=daemon.clock)
        plans = plan_services[0]
        for service in plan_services:
            service.attach()
        plan_tasks = [asyncio.create_task(service.run(stop, daemon.clock)) for service in plan_services]
        services = Services(daemon, sessions=recorder, plans=plans)
        reloads: set[asyncio.Task[None]] = set()  # service restarts under way (held: tasks are weak refs)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop)
        loop.add_signal_handler(signal.SIGHUP, on_reload)
        await services.start(config)
        try:
            await daemon.run(stop)
        finally:
            await asyncio.gather(*reloads, return_exceptions=True)
            stop.set()
            await asyncio.gather(*plan_tasks, return_exceptions=True)
            await close_services(plan_services)
            await services.stop()
            if recorder is not None:
                recorder.close(daemon.clock())
            if heartbeat is not None:
                heartbeat.clear()

    asyncio.run(main())
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    from pvcharge.health import check, heartbeat_path

    result = check(Path(args.file) if args.file else heartbeat_path(), args.max_age_s)
    print(result.reason if result.ok else f"unhealthy: {result.reason}")
    return 0 if result.ok else 1


#: how long ``probe`` waits for one device (both are read at once), whatever its timeouts and retries
PROBE_WAIT_S = 15.0


def cmd_probe(args: argparse.Namespace) -> int:
    from pvcharge.api.cli import car_in_words, site_in_words
    from pvcharge.devices import create_devices
    from pvcharge.retry import AttemptNote, attempt_note

    config = _load(args.config)
    configure_logging("warning", "console")

    async def read_one(driver: Any) -> dict[str, Any]:
        note = AttemptNote()
        attempt_note.set(note)  # this task's own context: the driver's failed attempts are noted here

        try:
            return as_dict(await asyncio.wait_for(driver.read(), timeout=PROBE_WAIT_S))
        except DeviceError as exc:
            return {"error": str(exc)}
        except TimeoutError:
            why = f"; attempt {note.attempts} failed: {note.text}" if note.text else ""
            return {"error": f"{driver.name}: no answer within {PROBE_WAIT_S:g} s{why}"}

    async def main() -> dict[str, Any]:
        drivers = create_devices(config, clock=time.time)
        try:
            # each read in a task of its own, so each has its own attempt note
            readings = await asyncio.gather(*(asyncio.ensure_future(read_one(d)) for d in drivers))
        finally:  # after both reads: a meter and a wallbox on one AlphaESS account share one pool
            for driver in drivers:
                await driver.close()
        return dict(zip(("meter", "charger"), readings, strict=True))

    results = asyncio.run(main())
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for role, data in results.items():
            print(f"{role} ({getattr(config, role).type}):")
            if "error" not in data:
                words = site_in_words(data) if role == "meter" else car_in_words(data)
                print(f"  {words}")
            for key, value in data.items():
                print(f"  {key:18} {value}")
    return 1 if any("error" in r for r in results.values()) else 0


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
    from pvcharge.config import SessionsConfig, StateConfig
    from pvcharge.sessions import database_path
    from pvcharge.sessions.export import sessions_table
    from pvcharge.sim.demo import run_demo, summary, trace_tz
    from pvcharge.sim.trace import bundled_trace, load_trace

    base = _load(args.config) if args.config else None
    record = None
    if not args.no_record and (base is None or base.sessions.enabled):
        record = (
            database_path(base.sessions, base.state)
            if base
            else database_path(SessionsConfig(), StateConfig())
        )
    configure_logging(args.log_level or "warning", "console")
    trace = load_trace(args.trace) if args.trace else bundled_trace()
    if args.plan is not None:
        return _demo_plan(args, trace, base)
    if args.loadpoints == 2:
        return _demo_loadpoints(args, trace, base)
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


def _hhmm(seconds_of_day: float) -> str:
    return f"{int(seconds_of_day // 3600):02d}:{int(seconds_of_day % 3600 // 60):02d}"


def cmd_emulate(args: argparse.Namespace) -> int:
    from pvcharge.sim.emulate import config_yaml, emulator, site_model
    from pvcharge.sim.trace import bundled_trace, load_trace

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
            hhmm = _hhmm(args.start)
            print(f"# pvcharge {__version__} emulates {emulated.title} at {emulated.address}")
            car = site.car
            print(
                f"# The site: {trace.name}, in real time from {hhmm} local; the car is plugged in "
                f"{_hhmm(car.plug_in_s)}–{_hhmm(car.plug_out_s)}."
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pvcharge", description="Charge an EV from PV surplus.")
    parser.add_argument("--version", action="version", version=f"pvcharge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)  # status, mode: talk to the running daemon over its API
    add_sessions_command(sub)  # sessions: the recorded history
    add_plan_command(sub)  # plan: the charge plan for the next deadline

    p = sub.add_parser("run", help="run the control loop against the configured devices")
    p.add_argument("--config", "-c", required=True, help="YAML config file")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override log.level")
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        help="override log.format; auto: plain lines on a terminal or journald, JSON otherwise",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "healthcheck",
        help="exit 0 if the running daemon completed a control cycle recently, else 1 (Docker HEALTHCHECK)",
    )
    p.add_argument(
        "--max-age-s",
        type=float,
        help="the longest allowed time since the last cycle (default: what the daemon wrote, "
        "2 x control.max_age_s + control.interval_s + 15 s)",
    )
    p.add_argument(
        "--file", help="the heartbeat file (default: $PVCHARGE_HEARTBEAT, $RUNTIME_DIRECTORY/heartbeat)"
    )
    p.set_defaults(func=cmd_healthcheck)

    p = sub.add_parser(
        "check-config", help="validate a config file as run does and print the effective config"
    )
    p.add_argument("file", nargs="?", help="YAML config file (or --config FILE)")
    p.add_argument("--config", "-c", help="YAML config file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("probe", help="read the meter and the charger once and print canonical readings")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_probe)

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
    p.set_defaults(func=cmd_demo)

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
    p.set_defaults(func=cmd_emulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"pvcharge: config error: {exc}", file=sys.stderr)
        return 2
    except PvchargeError as exc:
        print(f"pvcharge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
