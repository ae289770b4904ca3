"""Command line: ``pvcharge run | healthcheck | check-config | probe | replay | demo | emulate | sessions``.

The simulation commands (replay, demo, emulate) are :mod:`pvcharge.cli_sim`; the daemon API's (status,
mode) :mod:`pvcharge.api.cli`, ``sessions`` and ``plan`` their packages' ``cli`` modules.

Exit codes: 0 success, 1 a device failed (probe), 2 a config or usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import yaml

from pvcharge import __version__
from pvcharge.api.cli import add_commands
from pvcharge.cli_sim import add_commands as add_sim_commands
from pvcharge.config import Config, load_config, secret_values, to_dict
from pvcharge.errors import ConfigError, DeviceError, PvchargeError
from pvcharge.logs import FORMATS, configure_logging, register_secrets
from pvcharge.planning.cli import add_command as add_plan_command
from pvcharge.readings import as_dict
from pvcharge.sessions.cli import add_command as add_sessions_command

if TYPE_CHECKING:
    from pvcharge.control import Decision
    from pvcharge.daemon import Cycle


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
    """One line for systemd's ``STATUS=`` and the heartbeat: mode, surplus, current, reason; with
    several loadpoints that of each, ``; ``-separated and led by its name."""
    if len(cycle.loadpoints) > 1:
        return "; ".join(
            f"{lp.name}: " + _loadpoint_status(lp.decision, lp.charger is None) for lp in cycle.loadpoints
        )
    return _loadpoint_status(cycle.decision, cycle.charger is None)


def _loadpoint_status(d: Decision, charger_unavailable: bool) -> str:
    surplus = f"{d.available_w:.0f} W" if d.available_w is not None else "n/a"
    current = f"{d.command.current_a:g} A on {d.command.phases}p" if d.command.current_a > 0 else "paused"
    parts = [f"mode {d.mode}", f"surplus {surplus}", f"current {current}"]
    if charger_unavailable:
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
        # one plan service per loadpoint (the first loadpoint's also behind the API's and MQTT's routes
        # and topics without a loadpoint name); plans: need a restart to change
        plan_services = build_services(config, daemon, clock=daemon.clock)
        loadpoint_plans = {service.loadpoint: service for service in plan_services}
        for service in plan_services:
            service.attach()
        plan_tasks = [asyncio.create_task(service.run(stop, daemon.clock)) for service in plan_services]
        services = Services(daemon, sessions=recorder, loadpoint_plans=loadpoint_plans)
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

    add_sim_commands(sub)  # replay, demo, emulate: the simulation
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
