"""``pvcharge run`` imports only what its config uses (issue 14, item 14: the daemon's footprint).

The real daemon runs in a subprocess against the emulators on loopback until it is ready (its first
control cycle done, the API up if configured), is stopped with SIGTERM, and writes the names in its
``sys.modules`` at exit.  The RSS itself is measured by ``python -m benchmarks.footprint``, not here: a
threshold would depend on the machine.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from pvcharge.sim import free_port
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.senec import SenecEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace
from pvcharge.sim.warp import WarpEmulator

#: runs ``pvcharge run`` as ``python -m pvcharge`` does and writes sys.modules to argv[2] at exit
_RUN_AND_DUMP = """
import atexit, json, sys
out = sys.argv[2]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from pvcharge.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""

#: what no Huawei + WARP config needs: other vendors, the simulation, MQTT, OCPP, plan scoring (the plan
#: service itself runs always: plans can be set at run time)
NEVER_FOR_HUAWEI_WARP = {
    "pvcharge.sim",
    "pvcharge.meters.senec",
    "pvcharge.meters.senec_lala",
    "pvcharge.meters.senec_tls",
    "pvcharge.meters.alphaess",
    "pvcharge.chargers.easee",
    "pvcharge.chargers.easee_observations",
    "pvcharge.chargers.easee_writes",
    "pvcharge.chargers.alphaess",
    "pvcharge.chargers.ocpp",
    "pvcharge.chargers.warp_phases",  # only with phase_switching, which these configs do not set
    "pvcharge.clients.alphaess",
    "pvcharge.clients.alphaess_account",
    "pvcharge.clients.alphaess_device",
    "pvcharge.clients.easee",
    "pvcharge.clients.ocpp",
    "pvcharge.mqtt",
    "pvcharge.mqtt_client",
    "pvcharge.mqtt_discovery",
    "pvcharge.planning.score",
    "pvcharge.planning.loopscore",
    "aiomqtt",
    "paho",
    "ocpp",
    "websockets",
    "trustme",
}


@pytest.fixture
def site() -> SiteModel:
    trace = bundled_trace()
    return SiteModel(trace, t_s=trace.start_s + 12 * 3600)


async def modules_of_run(config: Path, tmp_path: Path) -> set[str]:
    """The modules a ``pvcharge run`` of ``config`` had imported when it stopped after being ready."""
    dump = tmp_path / "modules.json"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", _RUN_AND_DUMP, str(config), str(dump)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output = b""
    try:
        async with asyncio.timeout(60):  # only bounds a failing test
            while b'"event": "ready"' not in output:
                line = await proc.stdout.readline()
                assert line, f"pvcharge run ended before it was ready:\n{output.decode()}"
                output += line
    finally:
        proc.send_signal(signal.SIGTERM)
        output += (await proc.communicate())[0]
    assert proc.returncode == 0, output.decode()
    return set(json.loads(dump.read_text()))


def config_file(tmp_path: Path, meter: str, charger_url: str, api: str) -> Path:
    path = tmp_path / "pvcharge.yaml"
    path.write_text(
        f"meter: {meter}\n"
        f"charger: {{type: warp, url: '{charger_url}', timeout_s: 2, phases: 1}}\n"
        f"api: {api}\n"
        f"state: {{file: '{tmp_path / 'state.json'}'}}\n"
        f"sessions: {{database: '{tmp_path / 'sessions.db'}'}}\n"
        "log: {format: json}\n"
    )
    return path


def loaded(modules: set[str], names: set[str]) -> set[str]:
    """Those of ``names`` that are in ``modules``, themselves or by a submodule."""
    return {name for name in names if any(m == name or m.startswith(name + ".") for m in modules)}


async def test_huawei_warp_with_the_api_imports_only_what_it_uses(site: SiteModel, tmp_path: Path) -> None:
    async with HuaweiEmulator(site) as huawei, WarpEmulator(site) as warp:
        meter = f"{{type: huawei, host: 127.0.0.1, port: {huawei.port}, connect_delay_s: 0, timeout_s: 2}}"
        api = f"{{enabled: true, listen: 127.0.0.1, port: {free_port()}}}"
        modules = await modules_of_run(config_file(tmp_path, meter, warp.url, api), tmp_path)
    used = {"pvcharge.meters.huawei", "pvcharge.chargers.warp", "pymodbus", "sqlite3", "h11"}
    assert loaded(modules, used | {"pvcharge.api.server"}) == used | {"pvcharge.api.server"}
    assert loaded(modules, NEVER_FOR_HUAWEI_WARP) == set()
    # the API is served by h11 on asyncio streams (pvcharge.api.http): aiohttp (~10 MB) only for the emulators
    assert loaded(modules, {"aiohttp", "multidict", "yarl"}) == set()
    # the metrics only once /metrics is scraped
    assert loaded(modules, {"prometheus_client", "pvcharge.api.metrics"}) == set()


async def test_a_config_without_modbus_or_api_imports_neither(site: SiteModel, tmp_path: Path) -> None:
    async with SenecEmulator(site, tls=False) as senec, WarpEmulator(site) as warp:
        meter = f"{{type: senec, host: 127.0.0.1, port: {senec.port}, scheme: http, timeout_s: 2}}"
        modules = await modules_of_run(config_file(tmp_path, meter, warp.url, "{enabled: false}"), tmp_path)
    assert loaded(modules, {"pvcharge.meters.senec", "httpx"}) == {"pvcharge.meters.senec", "httpx"}
    assert loaded(modules, {"pymodbus", "pvcharge.clients.huawei", "pvcharge.meters.huawei"}) == set()
    assert loaded(modules, {"aiohttp", "pvcharge.api.server", "prometheus_client"}) == set()
    assert (
        loaded(
            modules,
            NEVER_FOR_HUAWEI_WARP
            - {"pvcharge.meters.senec", "pvcharge.meters.senec_lala", "pvcharge.meters.senec_tls"},
        )
        == set()
    )
