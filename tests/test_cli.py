"""The command line as a user runs it: real subprocesses against the emulators on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sitestub import free_port, run_daemon

from pvcharge.cli import PROBE_WAIT_S as PROBE_DEFAULT_S
from pvcharge.sim.demo import SimClock
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace
from pvcharge.sim.warp import WarpEmulator

SECRET = "pw-that-must-not-leak-42"


@pytest.fixture
async def emulators() -> AsyncIterator[tuple[HuaweiEmulator, WarpEmulator, SiteModel]]:
    trace = bundled_trace()
    noon = trace.start_s + 12 * 3600
    site = SiteModel(trace, t_s=noon)
    site.advance(120)  # let the home battery settle its grid balancing
    site.clock = SimClock(site.now, 1.0).now  # then follow real time
    async with (
        HuaweiEmulator(site) as meter,
        WarpEmulator(site, username="admin", password=SECRET) as charger,
    ):
        yield meter, charger, site


def write_config(tmp_path: Path, meter_port: int, charger_url: str, extra: str = "") -> Path:
    (tmp_path / "warp.pw").write_text(SECRET + "\n")
    path = tmp_path / "config.yaml"
    path.write_text(
        f"meter: {{type: huawei, host: 127.0.0.1, port: {meter_port}, connect_delay_s: 0.1, timeout_s: 2}}\n"
        f"charger: {{type: warp, url: '{charger_url}', username: admin, password_file: warp.pw,"
        " timeout_s: 2, phases: 1}\n" + extra
    )
    return path


async def pvcharge(*args: str, limit_s: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pvcharge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_probe_json_prints_canonical_readings(emulators, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    meter, charger, site = emulators
    code, out, err = await pvcharge(
        "probe", "--config", str(write_config(tmp_path, meter.port, charger.url)), "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    state = site.state()
    assert data["meter"]["pv_power_w"] == pytest.approx(state.pv_power_w, abs=1)
    assert data["meter"]["grid_power_w"] == pytest.approx(state.grid_power_w, abs=50)
    assert data["meter"]["battery_soc_pct"] == pytest.approx(state.battery_soc_pct, abs=0.5)
    assert set(data["meter"]) >= {
        "grid_power_w",
        "pv_power_w",
        "battery_power_w",
        "battery_soc_pct",
        "timestamp_s",
    }
    assert data["charger"]["connected"] is True  # noon: the car is plugged in
    assert data["charger"]["iec_state"] == "B"
    assert SECRET not in out + err


async def test_probe_says_in_words_what_a_user_checks(emulators, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Signs are the easiest thing to get wrong with a new meter: probe says export/import and
    charging/discharging next to the signed numbers, as `pvcharge status` does."""
    meter, charger, _site = emulators
    code, out, err = await pvcharge("probe", "--config", str(write_config(tmp_path, meter.port, charger.url)))
    assert code == 0, err
    meter_lines = out.split("charger (warp):")[0]
    raw = dict(line.split(None, 1) for line in meter_lines.splitlines()[2:])  # "key   value" lines
    grid, battery = float(raw["grid_power_w"]), float(raw["battery_power_w"])
    assert grid < 0 and battery < 0  # noon: exporting, and the home battery charging
    assert f"grid {abs(grid):.0f} W export" in meter_lines, out
    assert f"battery {abs(battery):.0f} W charging at" in meter_lines, out
    assert "plugged in, not charging" in out.split("charger (warp):")[1], out


def test_probe_gives_up_on_a_device_that_never_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A device that accepts the connection and then says nothing: probe returns after PROBE_WAIT_S
    (15 s; shortened here), naming the device and what it waited for, instead of sitting out every
    timeout and retry (55 s with the defaults)."""
    import socket
    import time

    from pvcharge import cli

    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never answers
    port = listener.getsockname()[1]
    try:
        path = tmp_path / "c.yaml"
        path.write_text(
            f"meter: {{type: huawei, host: 127.0.0.1, port: {port}, connect_delay_s: 0}}\n"
            f"charger: {{type: warp, url: 'http://127.0.0.1:{port}'}}\n"
        )
        monkeypatch.setattr(cli, "PROBE_WAIT_S", 1.5)
        started = time.monotonic()
        assert cli.main(["probe", "--config", str(path), "--json"]) == 1
        took = time.monotonic() - started
    finally:
        listener.close()
    data = json.loads(capsys.readouterr().out)
    assert "meter huawei: no answer within 1.5 s" in data["meter"]["error"], data
    assert "charger warp" in data["charger"]["error"], data
    assert took < 10, took  # both devices waited for at once, not one after the other, not 55 s
    assert 10.0 <= PROBE_DEFAULT_S <= 15.0  # the default keeps probe under 20 s


async def test_probe_reports_dead_devices_by_name(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1, "http://127.0.0.1:1", "")
    path.write_text(path.read_text().replace("timeout_s: 2}", "timeout_s: 0.5, retries: 0}"))
    code, out, _ = await pvcharge("probe", "--config", str(path), "--json")
    assert code == 1
    data = json.loads(out)
    assert "meter huawei" in data["meter"]["error"] and "127.0.0.1:1" in data["meter"]["error"]
    assert "charger warp" in data["charger"]["error"]


async def test_run_charges_logs_decisions_and_pauses_on_sigterm(emulators, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    meter, charger, site = emulators
    path = write_config(
        tmp_path,
        meter.port,
        charger.url,
        "control: {interval_s: 1, cloud_filter: 'off', max_age_s: 10}\nlog: {level: debug}\n",
    )
    # noon on the bundled day: several kW of surplus, so with no start delay the car starts at once
    started, code, log = await run_daemon(path, until=lambda: site.state().offered_current_a >= 6)
    assert started  # offered at least the minimum current before the SIGTERM
    assert code == 0, log
    assert "decision" in log and "start:" in log
    assert "charger_left=paused" in log
    assert site.state().offered_current_a == 0  # left paused
    assert SECRET not in log


async def test_demo_runs_the_day_and_reports_energy_sources() -> None:
    # the demo slows its simulated clock rather than drop cycles on a busy machine (a run took 139 s under
    # load, 49 s idle): the limit only guards against a hang, it is no speed requirement
    code, out, err = await pvcharge("demo", "--seconds", "8", limit_s=600)
    assert code == 0, err
    assert "Summary: serf_east_2022-03-19.csv" in out
    charged = float(out.split("car charged")[1].split("kWh")[0])
    from_pv = float(out.split("from PV")[1].split("(")[1].split("%")[0])
    assert charged > 10
    assert from_pv > 90
    # the session it recorded, where `pvcharge sessions` finds it without flags, agrees with the summary
    assert "Sessions recorded in" in out and "demo-warp" in out.split("Sessions recorded in")[1]
    code, csv_text, err = await pvcharge("sessions", "--csv")
    assert code == 0, err
    [session] = list(csv.DictReader(io.StringIO(csv_text)))
    energy = float(session["energy_kwh"])
    assert session["loadpoint"] == "demo-warp" and session["end"]
    assert energy == pytest.approx(charged, rel=0.01)
    for source, column in (("from PV", "pv_kwh"), ("from battery", "battery_kwh"), ("from grid", "grid_kwh")):
        summary_kwh = float(out.split(source)[1].split("kWh")[0])
        assert abs(float(session[column]) - summary_kwh) <= 0.01 * energy, source


@pytest.mark.parametrize("kind", ["senec", "alphaess"])
async def test_probe_reads_each_meter_like_the_site_model(kind: str, tmp_path: Path) -> None:
    from pvcharge.sim.alphaess import AlphaEssEmulator
    from pvcharge.sim.senec import SenecEmulator

    trace = bundled_trace()
    site = SiteModel(trace, t_s=trace.start_s + 12 * 3600)
    site.advance(120)  # let the home battery settle
    frozen = site.state()  # no clock: the site stands still, so probe and model see the same moment
    async with WarpEmulator(site) as charger:
        if kind == "senec":
            async with SenecEmulator(site) as senec:
                meter = (
                    f"{{type: senec, host: 127.0.0.1, port: {senec.port}, ca_file: '{senec.ca_pem_path}'}}"
                )
                code, out, err = await probe(tmp_path, meter, charger.url)
        else:
            async with AlphaEssEmulator(site, app_secret=SECRET) as alpha:
                meter = (
                    f"{{type: alphaess, url: '{alpha.url}', sys_sn: {alpha.sys_sn}, app_id: {alpha.app_id},"
                    " app_secret_file: alpha.secret}"
                )
                (tmp_path / "alpha.secret").write_text(SECRET + "\n")
                code, out, err = await probe(tmp_path, meter, charger.url)
    assert code == 0, err
    reading = json.loads(out)["meter"]
    assert reading["pv_power_w"] == pytest.approx(frozen.pv_power_w, abs=1)
    assert reading["grid_power_w"] == pytest.approx(frozen.grid_power_w, abs=1)
    assert reading["battery_power_w"] == pytest.approx(frozen.battery_power_w, abs=1)
    assert reading["battery_soc_pct"] == pytest.approx(frozen.battery_soc_pct, abs=0.5)
    assert SECRET not in out + err


async def probe(tmp_path: Path, meter: str, charger_url: str) -> tuple[int, str, str]:
    path = tmp_path / "probe.yaml"
    path.write_text(f"meter: {meter}\ncharger: {{type: warp, url: '{charger_url}'}}\n")
    return await pvcharge("probe", "--config", str(path), "--json")


async def test_the_demo_serves_the_status_page_while_it_runs() -> None:
    import io
    import re

    import httpx

    from pvcharge.config import ApiConfig
    from pvcharge.sim.demo import run_demo

    trace = bundled_trace()
    start = trace.start_s + 11 * 3600
    out = io.StringIO()
    demo = asyncio.create_task(
        run_demo(trace, speed=600, start_s=start, end_s=start + 3600, out=out, api=ApiConfig(port=0))
    )
    url = None
    for _ in range(100):
        await asyncio.sleep(0.05)
        found = re.search(r"Status page: (http://127\.0\.0\.1:\d+)/", out.getvalue())
        if found:
            url = found.group(1)
            break
    assert url is not None, out.getvalue()
    async with httpx.AsyncClient() as client:
        for _ in range(200):  # a few cycles (a loaded machine may take a while for the first)
            status = (await client.get(f"{url}/api/status")).json()
            if status["stats"]["cycles"] >= 3:
                break
            await asyncio.sleep(0.05)
        page = await client.get(f"{url}/")
    assert status["mode"] == "pv" and status["site"]["pv_power_w"] > 0
    assert page.status_code == 200 and "pvcharge" in page.text
    result = await demo
    assert result.stats.cycles > 10
    with pytest.raises(httpx.ConnectError):  # and it is gone when the demo ends
        async with httpx.AsyncClient() as client:
            await client.get(f"{url}/api/status")


@contextlib.asynccontextmanager
async def emulate(kind: str, *args: str) -> AsyncIterator[dict[str, Any]]:
    """Run ``pvcharge emulate kind`` on a free port; yield the config it printed (its whole output up
    to the "Running" line is YAML); SIGTERM it at the end, which must exit 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pvcharge",
        "emulate",
        kind,
        "--port",
        str(free_port()),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        printed = []
        while not printed or not printed[-1].startswith("# Running until"):
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, f"emulate {kind} ended early: {printed}, {(await proc.communicate())[1]!r}"
            printed.append(line)
        config = yaml.safe_load("".join(printed))
        assert isinstance(config, dict)
        yield config
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert err.decode() == ""


async def test_emulate_prints_a_config_that_probe_reads_and_stops_on_sigterm(tmp_path: Path) -> None:
    async with emulate("huawei", "--start", "12:00") as meter, emulate("warp", "--start", "12:00") as charger:
        assert set(meter) == {"meter"} and set(charger) == {"charger"}
        assert meter["meter"]["type"] == "huawei" and meter["meter"]["host"] == "127.0.0.1"
        assert charger["charger"]["url"].startswith("http://127.0.0.1:")
        path = tmp_path / "emulated.yaml"
        path.write_text(yaml.safe_dump(meter | charger))
        code, out, err = await pvcharge("probe", "--config", str(path), "--json")
    assert code == 0, err
    data = json.loads(out)
    trace = bundled_trace()
    noon_s = trace.start_s - trace.local_seconds_of_day(trace.start_s) + 12 * 3600
    pv_w = [trace.at(noon_s + t)[0] for t in range(0, 120)]  # the emulator's first two minutes
    assert min(pv_w) - 1 <= data["meter"]["pv_power_w"] <= max(pv_w) + 1
    assert 25 <= data["meter"]["battery_soc_pct"] <= 35  # the site starts at 30 %
    assert (data["charger"]["connected"], data["charger"]["iec_state"]) == (True, "B")  # noon: plugged in


@pytest.mark.parametrize(("meter", "charger"), [("senec", "easee"), ("alphaess", None)])
async def test_each_emulators_printed_config_works(meter: str, charger: str | None, tmp_path: Path) -> None:
    """SENEC's ca_file and the cloud accounts (AlphaESS: meter and wallbox on one) as printed."""
    async with contextlib.AsyncExitStack() as stack:
        config = await stack.enter_async_context(emulate(meter))
        if charger is not None:
            config |= await stack.enter_async_context(emulate(charger))
        assert set(config) == {"meter", "charger"}
        path = tmp_path / "emulated.yaml"
        path.write_text(yaml.safe_dump(config))
        code, out, err = await pvcharge("probe", "--config", str(path), "--json")
    assert code == 0, out + err
    data = json.loads(out)
    assert data["meter"]["pv_power_w"] > 0 and data["charger"]["connected"] is True  # 10:00


async def test_emulate_refuses_a_host_that_is_not_loopback() -> None:
    code, out, err = await pvcharge("emulate", "warp", "--host", "192.0.2.1", "--port", "0")
    assert code == 2 and out == ""
    assert "not a loopback address" in err and "--expose" in err


async def test_emulate_ocpp_connects_to_the_printed_central_system() -> None:
    """For OCPP the emulator is the client: it connects to the port given, where pvcharge with the printed
    charger section listens."""
    from pvcharge.chargers.ocpp import Config as OcppConfig
    from pvcharge.chargers.ocpp import OcppCharger
    from pvcharge.errors import DeviceUnavailable

    async with emulate("ocpp") as printed:
        section = printed["charger"]
        assert section["type"] == "ocpp" and section["listen"] == "127.0.0.1"
        keys = {k: v for k, v in section.items() if k != "type"}
        charger = OcppCharger(OcppConfig(**keys), name="charger ocpp", clock=time.time)
        try:
            deadline = time.monotonic() + 30  # it tries every 5 s; the first read waits 10 s for it
            while True:
                try:
                    reading = await charger.read()
                    break
                except DeviceUnavailable:
                    assert time.monotonic() < deadline, "the emulator did not connect"
            assert reading.connected  # 10:00: the car is plugged in
            assert charger.central.boot is not None and charger.central.boot["vendor"] == "pvcharge"
        finally:
            await charger.close()


@pytest.mark.parametrize("command", [["demo", "--seconds", "1"], ["emulate", "warp", "--port", "0"]])
def test_demo_and_emulate_without_the_emulators_packages_say_what_to_install(command: list[str]) -> None:
    """An install from deploy/requirements.txt (the Docker image) has no aiohttp: a clear error, exit 2."""
    import subprocess

    blocked = (
        "import sys; sys.modules['aiohttp'] = None; "
        "from pvcharge.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", blocked, *command], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert f"pvcharge {command[0]}: the emulators need aiohttp" in proc.stderr
    assert "Traceback" not in proc.stderr
