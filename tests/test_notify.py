"""sd_notify: the messages systemd sees, from the Notifier alone and from the real daemon.

The end-to-end test starts ``pvcharge run`` as a subprocess against the Huawei and WARP emulators on
loopback, with ``NOTIFY_SOCKET`` pointing at a unix datagram socket the test binds, the way systemd
starts a ``Type=notify`` service, and reads READY/WATCHDOG/STATUS/RELOADING/STOPPING from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sitestub import free_port

from pvcharge.notify import Notifier, monotonic_usec
from pvcharge.sim.demo import SimClock
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace
from pvcharge.sim.warp import WarpEmulator

SECRET = "notify-test-secret-77"


# --- helpers shared with test_deploy -------------------------------------------------------------


class NotifyListener:
    """A unix datagram socket bound like systemd's notify socket; collects parsed messages."""

    def __init__(self, address: str) -> None:
        self.address = address  # the NOTIFY_SOCKET value ('@name' for the abstract namespace)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def close(self) -> None:
        self.sock.close()

    def receive_nowait(self) -> dict[str, str] | None:
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        self.messages.append(fields)
        return fields

    async def next(self, timeout_s: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = self.receive_nowait()
            if message is not None:
                return message
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no notify message within {timeout_s} s; got so far: {self.messages}")

    async def wait_for(self, key: str, timeout_s: float, value: str = "1") -> dict[str, str]:
        """The next message with ``key=value`` (earlier ones are kept in ``messages``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            message = await self.next(max(0.05, deadline - time.monotonic()))
            if message.get(key) == value:
                return message


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put structlog's configuration back after a test that points it at its own stream."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pvn", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def emulators() -> AsyncIterator[tuple[HuaweiEmulator, WarpEmulator, SiteModel]]:
    """Noon on the bundled day, following real time: several kW of surplus, the car plugged in."""
    trace = bundled_trace()
    site = SiteModel(trace, t_s=trace.start_s + 12 * 3600)
    site.advance(120)  # let the home battery settle its grid balancing
    site.clock = SimClock(site.now, 1.0).now
    async with (
        HuaweiEmulator(site) as meter,
        WarpEmulator(site, username="admin", password=SECRET) as charger,
    ):
        yield meter, charger, site


def config_text(meter_port: int, charger_url: str, control: str = "") -> str:
    return (
        f"meter: {{type: huawei, host: 127.0.0.1, port: {meter_port}, connect_delay_s: 0.1, timeout_s: 2}}\n"
        f"charger: {{type: warp, url: '{charger_url}', username: admin, password_file: warp.pw,"
        " timeout_s: 2, phases: 1}\n"
        f"control: {{interval_s: 1, cloud_filter: 'off', max_age_s: 10{control}}}\n"
    )


def write_config(directory: Path, meter_port: int, charger_url: str, control: str = "") -> Path:
    secret = directory / "warp.pw"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o644)  # readable by others: the daemon must log a config_warning for it
    path = directory / "config.yaml"
    path.write_text(config_text(meter_port, charger_url, control))
    return path


async def start(argv: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **env}
    )


async def stop(proc: asyncio.subprocess.Process, send: bool = True) -> tuple[int, str]:
    """SIGTERM (unless already sent), wait; the exit code and everything the process printed."""
    if send and proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


@contextlib.asynccontextmanager
async def pvcharge_run(
    config: Path, listener: NotifyListener, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``pvcharge run --config config`` notifying ``listener``; on the way out the process is killed if
    it still runs (a failed test) and the listener closed."""
    argv = [sys.executable, "-m", "pvcharge", "run", "--config", str(config)]
    proc = await start(argv, {"NOTIFY_SOCKET": listener.address, **(env or {})})
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        listener.close()


# --- the Notifier alone --------------------------------------------------------------------------


def test_without_notify_socket_every_call_is_a_noop() -> None:
    notifier = Notifier(environ={})
    assert not notifier.enabled and notifier.backend is None
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_s is None


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_socket_backend_sends_one_datagram_per_message(short_dir: Path, abstract: bool) -> None:
    address = f"@pvcharge-test-{os.getpid()}" if abstract else str(short_dir / "notify")
    listener = NotifyListener(address)
    try:
        notifier = Notifier(environ={"NOTIFY_SOCKET": address}, backend="socket")
        assert notifier.backend == "socket"
        assert notifier.ready("mode pv, surplus 1200 W\nsecond line")
        assert notifier.watchdog("mode pv")
        before = monotonic_usec()
        assert notifier.reloading()
        messages = [listener.receive_nowait() for _ in range(3)]
    finally:
        listener.close()
    assert messages[0] == {"READY": "1", "STATUS": "mode pv, surplus 1200 W second line"}
    assert messages[1] == {"WATCHDOG": "1", "STATUS": "mode pv"}
    reloading = messages[2]
    assert reloading is not None and reloading["RELOADING"] == "1"
    assert 0 <= int(reloading["MONOTONIC_USEC"]) - before < 5_000_000


def test_send_failure_is_reported_not_raised(
    short_dir: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    from pvcharge.logs import configure_logging

    configure_logging("info", "console", stream=sys.stdout)
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(short_dir / "nobody-listens")}, backend="socket")
    assert notifier.watchdog() is False
    assert notifier.watchdog() is False
    out = capsys.readouterr().out
    assert out.count("notify_failed") == 1  # once per outage, not every cycle


def test_watchdog_interval_from_the_environment() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "120000000"}
    assert Notifier(environ=env, backend="socket").watchdog_s == 120.0
    mine = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(environ=mine, backend="socket").watchdog_s == 120.0
    other = {**env, "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(environ=other, backend="socket").watchdog_s is None  # meant for another process
    assert Notifier(environ={**env, "WATCHDOG_USEC": "0"}, backend="socket").watchdog_s is None


def test_systemd_python_backend(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("systemd.daemon", reason="the 'systemd' extra is not installed")
    address = str(short_dir / "notify")
    listener = NotifyListener(address)
    monkeypatch.setenv("NOTIFY_SOCKET", address)  # libsystemd reads the real environment
    try:
        notifier = Notifier(backend="systemd-python")
        assert notifier.backend == "systemd-python"
        assert notifier.ready("via libsystemd")
        message = listener.receive_nowait()
    finally:
        listener.close()
    assert message == {"READY": "1", "STATUS": "via libsystemd"}


def test_systemd_python_backend_used_when_importable(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a stand-in ``systemd.daemon`` module, auto picks it and passes each message through."""
    import types

    sent: list[str] = []
    fake = types.ModuleType("systemd.daemon")

    def notify(message: str) -> bool:
        sent.append(message)
        return True

    fake.notify = notify  # type: ignore[attr-defined]
    package = types.ModuleType("systemd")
    package.daemon = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "systemd", package)
    monkeypatch.setitem(sys.modules, "systemd.daemon", fake)
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(short_dir / "n")})
    assert notifier.backend == "systemd-python"
    assert notifier.watchdog("s")
    assert sent == ["WATCHDOG=1\nSTATUS=s"]


# --- the real daemon -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_daemon_notifies_ready_watchdog_status_reload_and_stopping(
    emulators: tuple[HuaweiEmulator, WarpEmulator, SiteModel], short_dir: Path
) -> None:
    meter, charger, site = emulators
    config = write_config(short_dir, meter.port, charger.url)
    heartbeat = short_dir / "run" / "heartbeat"
    listener = NotifyListener(str(short_dir / "notify"))
    env = {
        "WATCHDOG_USEC": "60000000",
        "PVCHARGE_HEARTBEAT": str(heartbeat),
    }
    async with pvcharge_run(config, listener, env) as proc:
        # READY comes first, after one completed cycle (its heartbeat is already written), with a status
        first = await listener.next(15)
        assert first.get("READY") == "1", first
        assert heartbeat.exists()
        status = first["STATUS"]
        assert status.startswith("mode pv, surplus ") and " W, current " in status, status

        # then one WATCHDOG=1 per cycle (interval_s: 1)
        t0 = time.monotonic()
        await listener.wait_for("WATCHDOG", 5)
        await listener.wait_for("WATCHDOG", 5)
        assert time.monotonic() - t0 < 4

        # noon: the car starts and STATUS shows the current the charger was given
        for _ in range(100):
            message = await listener.wait_for("WATCHDOG", 5)
            if "current paused" not in message["STATUS"]:
                break
        offered = site.state().offered_current_a
        assert offered >= 6, message
        assert f"current {offered:g} A on 1p" in message["STATUS"], message

        # SIGHUP with a new mode: RELOADING=1 (+ MONOTONIC_USEC), READY=1, then the new mode is in force
        config.write_text(config_text(meter.port, charger.url, ", mode: 'off'"))
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGHUP)
        reloading = await listener.wait_for("RELOADING", 5)
        assert 0 <= int(reloading["MONOTONIC_USEC"]) - before < 5_000_000
        assert (await listener.next(5)).get("READY") == "1"
        message = await listener.wait_for("WATCHDOG", 5)
        if not message["STATUS"].startswith("mode off"):  # a cycle may have been under way
            message = await listener.wait_for("WATCHDOG", 5)
        assert message["STATUS"].startswith("mode off, surplus n/a, current paused"), message
        assert site.state().offered_current_a == 0

        # a broken config and a new meter address are rejected; the daemon keeps running on the old one
        config.write_text(config_text(meter.port, charger.url, ", mode: 'pv', bogus_key: 1"))
        os.kill(proc.pid, signal.SIGHUP)
        await listener.wait_for("RELOADING", 5)
        assert (await listener.next(5)).get("READY") == "1"
        config.write_text(config_text(meter.port + 1, charger.url))
        os.kill(proc.pid, signal.SIGHUP)
        await listener.wait_for("RELOADING", 5)
        assert (await listener.next(5)).get("READY") == "1"
        message = await listener.wait_for("WATCHDOG", 5)
        assert message["STATUS"].startswith("mode off"), message

        proc.send_signal(signal.SIGTERM)
        assert (await listener.wait_for("STOPPING", 10))["STOPPING"] == "1"
        code, log = await stop(proc, send=False)
    assert code == 0, log
    assert not heartbeat.exists()  # removed at exit: the healthcheck fails at once
    assert "pvcharge_starting" in log and "version=0" in log and "meter=huawei" in log
    assert "charger=warp" in log
    try:
        import systemd.daemon  # noqa: F401

        assert "notify=systemd-python" in log
    except ImportError:
        assert "notify=socket" in log
    assert "config_warning" in log and "readable by other users" in log
    assert log.count("reload_rejected") == 2
    assert "bogus_key: unknown key" in log
    assert "meter: changed; a new meter section needs a restart" in log
    assert "watchdog_too_short" not in log
    assert SECRET not in log
    # READY exactly once per start or reload (1 + 3), never before the first cycle
    assert sum(1 for m in listener.messages if m.get("READY") == "1") == 4
    assert listener.messages[0].get("READY") == "1"


@pytest.mark.timeout(30)
async def test_daemon_warns_when_the_watchdog_is_shorter_than_a_slow_cycle(short_dir: Path) -> None:
    """Dead devices: the loop still completes cycles (READY is sent); a too short WatchdogSec is named."""
    (short_dir / "warp.pw").write_text("x\n")
    config = short_dir / "config.yaml"
    config.write_text(
        "meter: {type: huawei, host: 127.0.0.1, port: 1, timeout_s: 0.2, retries: 0}\n"
        "charger: {type: warp, url: 'http://127.0.0.1:1', timeout_s: 0.2, phases: 1}\n"
        "control: {interval_s: 1, max_age_s: 10}\n"
    )
    listener = NotifyListener(str(short_dir / "notify"))
    env = {"WATCHDOG_USEC": "15000000"}  # 15 s < 2 x 10 + 1
    async with pvcharge_run(config, listener, env) as proc:
        ready = await listener.next(15)
        code, log = await stop(proc)
    assert ready.get("READY") == "1"
    assert "charger unavailable" in ready["STATUS"]
    assert code == 0, log
    assert "watchdog_too_short" in log and "longest_cycle_s=21" in log
    assert "device_unavailable" in log


@pytest.mark.timeout(60)
async def test_a_reload_with_a_new_api_port_moves_the_api_before_ready(
    emulators: tuple[HuaweiEmulator, WarpEmulator, SiteModel], short_dir: Path
) -> None:
    """``systemctl reload`` after editing ``api.port``: the API answers on the new port as soon as
    READY=1 follows RELOADING=1, and no longer on the old one."""
    import httpx

    meter, charger, _ = emulators
    old_port, new_port = free_port(), free_port()
    config = write_config(short_dir, meter.port, charger.url)
    config.write_text(config_text(meter.port, charger.url) + f"api: {{port: {old_port}}}\n")
    listener = NotifyListener(str(short_dir / "notify"))
    async with pvcharge_run(config, listener) as proc:
        assert (await listener.next(15)).get("READY") == "1"
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(f"http://127.0.0.1:{old_port}/api/status")).status_code == 200
            config.write_text(config_text(meter.port, charger.url) + f"api: {{port: {new_port}}}\n")
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGHUP)
            await listener.wait_for("RELOADING", 5)
            assert (await listener.wait_for("READY", 10)).get("READY") == "1"
            assert (await client.get(f"http://127.0.0.1:{new_port}/api/status")).status_code == 200
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{old_port}/api/status")
        code, log = await stop(proc)
    assert code == 0, log
    assert "reload_accepted" in log and "services_restarted" in log and "sections=['api']" in log
    assert "api_listening" in log and f"127.0.0.1:{new_port}" in log
