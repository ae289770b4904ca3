"""The daemon's memory footprint (issue 14, item 14): VmRSS of a real ``pvcharge run`` with a Huawei meter,
a WARP charger and the API on, against the emulators on loopback.

    python -m benchmarks.footprint                         # 60 s, the numbers every 5 s
    python -m benchmarks.footprint --seconds 120 --imports # and which imports cost what
    python -m benchmarks.footprint --env MALLOC_ARENA_MAX=2 --host localhost  # with resolver threads
    python -m benchmarks.footprint --no-api                # api.enabled: false
    python -m benchmarks.footprint --metrics               # /metrics scraped at each sample
    python -m benchmarks.footprint --config my.yaml        # a config of your own (no emulators)

Measure in a runtime-only venv, as a user installs pvcharge (the dev extras would inflate it), from
the checkout's root (for this module and the emulators)::

    python3 -m venv /tmp/fp && /tmp/fp/bin/pip install . && /tmp/fp/bin/python -m benchmarks.footprint

The daemon runs as ``<this interpreter> -m pvcharge run --config FILE`` in a subprocess, in a temporary
directory: it runs the *installed* pvcharge (``pip install --no-deps .`` again to measure a change; the
header names the package's path).  This process runs the Huawei (Modbus TCP) and WARP (HTTP) emulators
of :mod:`pvcharge.sim` and samples the daemon's ``/proc/PID/status`` (``VmRSS``: resident now,
``VmHWM``: the peak) every ``--every`` seconds, reads the API's ``/api/status`` once a sample (the API
serves, as a user's status page would make it; the daemon's counters show that it read and wrote) and
prints the last sample: the number the README quotes.  ``--imports`` adds a breakdown: the modules the
daemon imports (``-X importtime``), imported again one by one in that order in a fresh interpreter with
the RSS each added (``/proc/self/status`` before and after), summed per package.  Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pvcharge.sim import free_port

#: the breakdown's interpreter: imports the modules of argv[1:] one by one and prints "kB name" each
_IMPORT_ONE_BY_ONE = """
import importlib, sys
def rss_kb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")
print(rss_kb(), "(interpreter)", flush=True)
for name in sys.argv[1:]:
    before = rss_kb()
    try:
        importlib.import_module(name)
    except Exception as exc:
        print(0, name, "failed:", repr(exc))
        continue
    print(rss_kb() - before, name, flush=True)
"""


@dataclass(frozen=True)
class Sample:
    """One reading of the daemon's ``/proc/PID/status`` at ``t_s`` seconds after its start."""

    t_s: float
    rss_kb: int  #: VmRSS: resident set now, kB
    hwm_kb: int  #: VmHWM: the peak resident set so far, kB
    threads: int


def read_status(pid: int) -> Sample | None:
    """The process's VmRSS, VmHWM and thread count, or ``None`` when it has ended."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    fields[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None
    if len(fields) < 3:  # a zombie has no VmRSS
        return None
    return Sample(0.0, fields["VmRSS"], fields["VmHWM"], fields["Threads"])


def config_text(huawei_port: int, warp_port: int, api_port: int | None, state_dir: Path, host: str) -> str:
    """The benchmark's config: the Huawei and WARP emulators at ``host`` (``localhost``: names resolved
    in asyncio's thread pool, as a device's host name is), the API on loopback, state and sessions in
    ``state_dir`` (``api_port`` ``None``: the API off); everything else at its default."""
    api = (
        "{enabled: false}" if api_port is None else f"{{enabled: true, listen: 127.0.0.1, port: {api_port}}}"
    )
    return f"""\
meter: {{type: huawei, host: {host}, port: {huawei_port}, unit_id: 1}}
charger: {{type: warp, url: "http://{host}:{warp_port}", min_current_a: 6, max_current_a: 16, phases: 1}}
api: {api}
state: {{file: "{state_dir / "state.json"}"}}
sessions: {{database: "{state_dir / "sessions.db"}"}}
log: {{level: info, format: json}}
"""


def _run_command(config: Path, *options: str) -> tuple[str, ...]:
    """``pvcharge run --config config`` with this interpreter (``options``: the interpreter's own)."""
    return (sys.executable, *options, "-m", "pvcharge", "run", "--config", str(config))


def installed_pvcharge(workdir: Path) -> str:
    """Where this interpreter imports pvcharge from outside the checkout: the package the daemon runs.

    The daemon runs in ``workdir``, not in the checkout, so it runs what a user runs: the installed
    package with the bytecode ``pip install`` compiled.  Reinstall (``pip install --no-deps .``) to
    measure a change."""
    reply = subprocess.run(
        [sys.executable, "-c", "import pvcharge; print(pvcharge.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=workdir,
    )
    return reply.stdout.strip()


def _api_stats(api_port: int, scrape: bool) -> dict[str, float] | None:
    """The daemon's counters from the API's ``/api/status`` (``stats``: cycles, failures, writes), or
    ``None`` when the API did not answer (urllib: nothing of the daemon's stack in this process);
    ``scrape``: read ``/metrics`` first, as Prometheus would."""
    try:
        if scrape:
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=5) as reply:
                reply.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/status", timeout=5) as reply:
            stats: dict[str, float] = json.load(reply)["stats"]
            return stats
    except (OSError, ValueError, KeyError):
        return None


async def sample_daemon(
    config: Path,
    seconds: float,
    every_s: float,
    env: dict[str, str],
    api_port: int | None,
    log: Path,
    scrape: bool = False,
) -> tuple[list[Sample], int, dict[str, float] | None]:
    """Run ``pvcharge run --config config`` for ``seconds``, sample it every ``every_s``; returns the
    samples, how many of them the API answered and the daemon's last counters (``None``: no API).
    Raises ``RuntimeError`` when the daemon ends early."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *_run_command(config),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=log.parent,  # not the checkout: the installed pvcharge, with its compiled bytecode
        )
        start = time.monotonic()
        samples: list[Sample] = []
        answered = 0
        stats = None
        try:
            while (elapsed := time.monotonic() - start) < seconds:
                await asyncio.sleep(min(every_s, seconds - elapsed))
                if proc.returncode is not None:
                    break
                if api_port is not None and (now := await asyncio.to_thread(_api_stats, api_port, scrape)):
                    answered, stats = answered + 1, now
                status = read_status(proc.pid)
                if status is None:
                    break
                samples.append(
                    Sample(round(time.monotonic() - start, 1), status.rss_kb, status.hwm_kb, status.threads)
                )
        finally:
            if proc.returncode is None:
                proc.terminate()
            code = await proc.wait()
    if code not in (0, -15) or not samples or samples[-1].t_s < seconds - every_s:
        tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-3000:]
        raise RuntimeError(f"pvcharge run ended early (exit {code}); its log ends:\n{tail}")
    return samples, answered, stats


async def _with_emulators(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> int:
    from pvcharge.sim.emulate import emulator, site_model
    from pvcharge.sim.trace import bundled_trace

    site = site_model(bundled_trace(), 12 * 3600.0)  # noon of the bundled day: surplus, the car plugged in
    async with emulator("huawei", site) as huawei, emulator("warp", site) as warp:
        meter = huawei.sections["meter"]
        warp_port = int(warp.sections["charger"]["url"].rsplit(":", 1)[1].rstrip("/"))
        api_port = None if args.no_api else free_port()
        config = workdir / "pvcharge.yaml"
        config.write_text(
            config_text(meter["port"], warp_port, api_port, workdir, args.host), encoding="utf-8"
        )
        return await _measure(args, config, env, api_port, workdir)


async def _measure(
    args: argparse.Namespace, config: Path, env: dict[str, str], api_port: int | None, workdir: Path
) -> int:
    log = workdir / "pvcharge.log"
    samples, answered, stats = await sample_daemon(
        config, args.seconds, args.every, env, api_port, log, args.metrics
    )
    print(f"# pvcharge run --config {config}  ({' '.join(f'{k}={v}' for k, v in env.items()) or 'no env'})")
    print(f"# {platform.machine()}, Python {platform.python_version()}, {sys.executable}")
    print(f"# pvcharge from {installed_pvcharge(workdir)}")
    print("t_s   VmRSS_kB  VmHWM_kB  threads")
    for s in samples:
        print(f"{s.t_s:5.1f} {s.rss_kb:9d} {s.hwm_kb:9d} {s.threads:8d}")
    last = samples[-1]
    print(f"VmRSS {last.rss_kb} kB after {last.t_s:g} s (peak {last.hwm_kb} kB, {last.threads} threads)")
    if api_port is not None:
        keys = ("cycles", "meter_failures", "charger_failures", "charger_writes")
        counters = ", ".join(f"{key} {(stats or {}).get(key)}" for key in keys)
        print(f"the API answered {answered} of {len(samples)} status requests; {counters}")
    if args.imports:
        print()
        await import_breakdown(config, env, workdir)
    return 0


async def imported_modules(config: Path, env: dict[str, str], workdir: Path) -> list[tuple[str, int]]:
    """The modules ``pvcharge run`` imports in a 5-s run, in the order ``-X importtime`` lists them (a
    module after those it imports), with their own import time in microseconds."""
    log = workdir / "importtime.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *_run_command(config, "-X", "importtime"),
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **env},
            cwd=workdir,
        )
        await asyncio.sleep(5)
        proc.terminate()
        await proc.wait()
    modules: list[tuple[str, int]] = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        if own.strip().isdigit():  # not the header
            modules.append((name.strip(), int(own)))
    return modules


def package_of(module: str) -> str:
    """What the breakdown sums a module under: its distribution's top-level package, pvcharge's by
    subpackage or module (``pvcharge.api``, ``pvcharge.cli``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "pvcharge" else parts[0]


async def import_breakdown(config: Path, env: dict[str, str], workdir: Path) -> None:
    """Print the RSS each package adds to the daemon: its modules imported one by one in the daemon's
    order (a module after the ones it imports, so each adds about its own share) in a fresh
    interpreter, summed by :func:`package_of`."""
    modules = await imported_modules(config, env, workdir)
    reply = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _IMPORT_ONE_BY_ONE, *(name for name, _ in modules)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
        cwd=workdir,
    )
    rss_kb: dict[str, int] = {}
    count: dict[str, int] = {}
    for line in reply.stdout.splitlines():
        kb, name = line.split(" ", 1)
        package = name if name.startswith("(") else package_of(name.split(" ")[0])
        rss_kb[package] = rss_kb.get(package, 0) + int(kb)
        count[package] = count.get(package, 0) + 1
    import_us: dict[str, int] = {}
    for name, own_us in modules:
        import_us[package_of(name)] = import_us.get(package_of(name), 0) + own_us
    print(f"imports: {sum(rss_kb.values())} kB in a fresh interpreter ({len(modules)} modules)")
    print("   kB  import_ms  modules  package")
    for package, package_kb in sorted(rss_kb.items(), key=lambda item: -item[1]):
        if package_kb >= 200:
            ms = import_us.get(package, 0) / 1000
            print(f"{package_kb:5d}  {ms:9.1f}  {count[package]:7d}  {package}")
    rest = [package_kb for package_kb in rss_kb.values() if package_kb < 200]
    print(f"{sum(rest):5d}  {'':9s}  {'':7s}  {len(rest)} packages below 200 kB each")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.footprint", description="the daemon's memory footprint (VmRSS)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the daemon runs (default 60)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--config", type=Path, help="run this config instead (no emulators, no API check)")
    parser.add_argument(
        "--host",
        choices=("127.0.0.1", "localhost"),
        default="127.0.0.1",
        help="how the config names the emulators (localhost: resolved in threads; default 127.0.0.1)",
    )
    parser.add_argument("--no-api", action="store_true", help="the config's API off (api.enabled: false)")
    parser.add_argument("--metrics", action="store_true", help="scrape /metrics at each sample as well")
    parser.add_argument("--imports", action="store_true", help="add the per-import RSS breakdown")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="the daemon's environment, e.g. MALLOC_ARENA_MAX=2 (repeatable)",
    )
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="pvcharge-footprint-") as tmp:
        workdir = Path(tmp)
        if args.config is not None:
            return asyncio.run(_measure(args, args.config.resolve(), env, None, workdir))
        return asyncio.run(_with_emulators(args, env, workdir))


if __name__ == "__main__":
    sys.exit(main())
