"""The MQTT bridge against a real mosquitto broker on loopback (Debian's ``mosquitto`` package).

Each test starts ``/usr/sbin/mosquitto -c <tmp conf>`` on a free 127.0.0.1 port (no persistence, so a
restarted broker has forgotten every retained message) and a second MQTT client, the ``Watcher``,
that plays Home Assistant.  The daemon runs with small in-process fake drivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import trustme
from sitestub import free_port
from structlog.testing import capture_logs

from pvcharge import __version__
from pvcharge.config import MqttConfig, parse_config
from pvcharge.control.config import MODES
from pvcharge.daemon import Daemon
from pvcharge.mqtt import MqttBridge, remove_all
from pvcharge.mqtt_discovery import discovery_messages
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading, SiteReading
from pvcharge.sessions import SessionRecorder
from pvcharge.sessions.store import SessionStore
from pvcharge.sessions.tally import Tariff
from pvcharge.settings import Secret

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
PASSWORD = "pw-Tr0ub4dor-3-never-logged"


def _require(path: str) -> None:
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{path} not found: these tests need Debian's mosquitto broker "
            "(apt-get install -y mosquitto; the tests start it themselves on 127.0.0.1, "
            "the system service is not needed)",
            pytrace=False,
        )


class Broker:
    """One mosquitto process on 127.0.0.1:port; kill() and start() again keep the port."""

    def __init__(self, directory: Path, extra: str = "", allow_anonymous: bool = True) -> None:
        _require(MOSQUITTO)
        self.directory = directory
        self.port = free_port()
        self.log = directory / "mosquitto.log"
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            # as root, mosquitto would switch to the user 'mosquitto', who cannot read the tmp dir
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            f"listener {self.port} 127.0.0.1\n"
            f"allow_anonymous {'true' if allow_anonymous else 'false'}\n"
            "persistence false\n"
            f"log_dest file {self.log}\n"
            "log_type all\n" + extra
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                pytest.fail(f"mosquitto exited with {self.process.returncode}: {err}", pytrace=False)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.02)
        pytest.fail(f"mosquitto did not listen on 127.0.0.1:{self.port} within 10 s", pytrace=False)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a word, forgetting every retained message."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
            if self.process.stderr:
                self.process.stderr.close()
        self.process = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.kill()


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    _require(MOSQUITTO_PASSWD)
    passwords = tmp_path / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(passwords), "alice", PASSWORD], check=True)
    b = Broker(tmp_path, f"password_file {passwords}\n", allow_anonymous=False)
    b.start()
    yield b
    b.kill()


class Watcher:
    """A second client, like Home Assistant: keeps the latest payload of every topic it sees.

    On entering, all retained messages have arrived (a marker message follows them through the broker).
    """

    def __init__(self, port: int, **client: Any) -> None:
        self.port = port
        self.client_args = client
        self.latest: dict[str, bytes] = {}
        self.seen: list[tuple[str, bytes, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Watcher:
        self.client = await self._stack.enter_async_context(
            aiomqtt.Client("127.0.0.1", self.port, identifier=f"watcher-{id(self)}", **self.client_args)
        )
        await self.client.subscribe("#", qos=1)
        self._task = asyncio.create_task(self._collect())
        marker = f"{time.monotonic_ns()}".encode()
        await self.client.publish("test/marker", marker, qos=1)
        await self.wait(lambda: self.latest.get("test/marker") == marker)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        with contextlib.suppress(aiomqtt.MqttError):
            await self._stack.aclose()

    async def _collect(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in self.client.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                topic = str(message.topic)
                self.seen.append((topic, payload, message.retain))
                if payload:
                    self.latest[topic] = payload
                else:  # an empty retained message removes the retained one
                    self.latest.pop(topic, None)

    async def wait(self, predicate: Callable[[], bool], within_s: float = 5.0, what: str = "") -> None:
        deadline = time.monotonic() + within_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within_s} s waiting for {what or predicate}")
            await asyncio.sleep(0.01)

    def text(self, topic: str) -> str | None:
        payload = self.latest.get(topic)
        return payload.decode() if payload is not None else None

    def json(self, topic: str) -> Any:
        payload = self.latest.get(topic)
        return json.loads(payload) if payload else None

    def retained(self, prefix: str) -> set[str]:
        return {t for t in self.latest if t.startswith(prefix) and t != "test/marker"}

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        await self.client.publish(topic, payload, qos=1, retain=retain)


# --- the daemon, with fake drivers (as in test_daemon.py) ---


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Meter:
    name = "meter fake"

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.grid_power_w = -3000.0

    async def read(self) -> SiteReading:
        return SiteReading(self.grid_power_w, 3500.0, 0.0, 50.0, self.clock())

    async def close(self) -> None:
        pass


class Charger:
    name = "charger fake"
    capabilities = ChargerCapabilities()

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.current_a = 0.0

    async def read(self) -> ChargerReading:
        power = self.current_a * 230
        return ChargerReading(True, self.current_a > 0, power, self.current_a, 1, self.clock())

    async def apply(self, command: ChargerCommand) -> None:
        self.current_a = command.current_a

    def forget(self) -> None:
        pass

    async def close(self) -> None:
        pass


CONFIG_TEXT = (
    "meter: {type: huawei, host: 127.0.0.1}\n"
    "charger: {type: warp, url: 'http://127.0.0.1', phases: 1}\n"
    "control: {cloud_filter: 'off', interval_s: %s, max_age_s: 30}\n"
)


def make_daemon(interval_s: float = 5, clock: Callable[[], float] | None = None) -> tuple[Daemon, Meter]:
    clock = clock or Clock()
    meter = Meter(clock)
    return Daemon(parse_config(CONFIG_TEXT % interval_s), meter, Charger(clock), clock=clock), meter


async def cycles(daemon: Daemon, n: int) -> None:
    for _ in range(n):
        await daemon.cycle()
        if isinstance(daemon.clock, Clock):
            daemon.clock.t += 5


def mqtt_config(port: int, **overrides: Any) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=port, **overrides)


@contextlib.asynccontextmanager
async def running(bridge: MqttBridge) -> AsyncIterator[MqttBridge]:
    await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.stop()


class _AttrDict(dict[str, Any]):
    """``value_json`` as Jinja sees it: ``value_json.site.grid_power_w`` looks up keys."""

    def __getattr__(self, key: str) -> Any:
        value = self[key]
        return _AttrDict(value) if isinstance(value, dict) else value


def render(template: str, status: dict[str, Any]) -> str:
    """Render one of the bridge's value templates the way Home Assistant's Jinja does.

    They are single ``{{ expression }}`` templates whose expressions (attribute lookups, ``x if c
    else y``, slices, string literals) read the same in Jinja and in Python.
    """
    match = re.fullmatch(r"\{\{ (.+) \}\}", template)
    assert match, template
    return str(eval(match.group(1), {"__builtins__": {}}, {"value_json": _AttrDict(status), "None": None}))


# --- the tests ---


async def test_discovery_payloads_give_home_assistant_everything_it_needs(broker: Broker) -> None:
    daemon, _ = make_daemon()
    await cycles(daemon, 2)
    async with running(MqttBridge(daemon, mqtt_config(broker.port))), Watcher(broker.port) as ha:
        await ha.wait(lambda: ha.text("pvcharge/availability") == "online", what="online")
        await ha.wait(lambda: len(ha.retained("homeassistant/")) == len(discovery_messages(mqtt_config(1))))
        configs = {t: ha.json(t) for t in ha.retained("homeassistant/")}
        status = ha.json("pvcharge/status")
    assert all(
        re.fullmatch(r"homeassistant/(sensor|binary_sensor|select)/pvcharge/\w+/config", t) for t in configs
    )
    unique_ids = [c["unique_id"] for c in configs.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    for topic, c in configs.items():
        assert c["name"] and c["state_topic"] in ("pvcharge/status", "pvcharge/mode"), topic
        assert c["availability_topic"] == "pvcharge/availability"
        assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")
        assert c["device"] == {
            "identifiers": ["pvcharge"],
            "name": "pvcharge",
            "manufacturer": "pvcharge",
            "model": "PV surplus charging controller",
            "sw_version": __version__,
        }
    by_id = {c["unique_id"].removeprefix("pvcharge_"): c for c in configs.values()}
    powers = ["grid_power", "pv_power", "battery_power", "house_power", "car_power", "surplus"]
    for key in powers:
        assert (by_id[key]["unit_of_measurement"], by_id[key]["device_class"]) == ("W", "power")
        assert by_id[key]["state_class"] == "measurement"
    soc = by_id["battery_soc"]
    assert (soc["unit_of_measurement"], soc["device_class"], soc["state_class"]) == (
        "%",
        "battery",
        "measurement",
    )
    for key in ("car_current", "offered_current"):
        assert (by_id[key]["unit_of_measurement"], by_id[key]["device_class"]) == ("A", "current")
    mode = by_id["mode"]
    assert mode["options"] == ["off", "pv", "minpv", "fast"] == list(MODES)
    assert (mode["command_topic"], mode["state_topic"]) == ("pvcharge/mode/set", "pvcharge/mode")
    assert "value_template" not in mode
    # every template reads its value from the status the bridge published
    values = {k: render(c["value_template"], status) for k, c in by_id.items() if "value_template" in c}
    assert values["grid_power"] == "-3000.0" and values["pv_power"] == "3500.0"
    assert values["house_power"] == "500.0" and values["battery_soc"] == "50.0"
    assert values["offered_current"] == "12.0" and values["car_current"] == "12.0"
    assert values["car_power"] == str(12.0 * 230) and values["phases"] == "1"
    assert values["car_connected"] == "ON" and values["charging"] == "ON"
    assert float(values["surplus"]) > 0 and values["reason"] == status["summary"][:255]
    assert values["reason"] == "Charging from the surplus at 12 A on 1 phase."  # words, not the log's numbers
    # before the first reading every value is None, which Home Assistant shows as unknown
    empty = make_daemon()[0].status()
    assert {
        k: render(c["value_template"], empty) for k, c in by_id.items() if k not in ("mode", "reason")
    } == {k: "None" for k in values if k != "reason"}


async def test_status_follows_the_cycles(broker: Broker) -> None:
    daemon, meter = make_daemon()
    async with running(MqttBridge(daemon, mqtt_config(broker.port))), Watcher(broker.port) as ha:
        await ha.wait(lambda: ha.text("pvcharge/availability") == "online")
        await ha.wait(lambda: ha.json("pvcharge/status") is not None)
        assert ha.json("pvcharge/status")["reason"] == "starting"  # published at connect, before a cycle
        await ha.wait(lambda: ha.text("pvcharge/mode") == "pv")
        await cycles(daemon, 2)
        await ha.wait(lambda: ha.json("pvcharge/status")["stats"]["cycles"] == 2)
        first = ha.json("pvcharge/status")
        assert first["site"]["grid_power_w"] == -3000.0 and first["command"]["current_a"] == 12.0
        meter.grid_power_w = -4000.0
        await cycles(daemon, 1)
        await ha.wait(lambda: ha.json("pvcharge/status")["site"]["grid_power_w"] == -4000.0)
        assert ha.json("pvcharge/status") == json.loads(json.dumps(daemon.status()))
        async with Watcher(broker.port) as later:  # a client that comes later gets the retained state
            assert later.json("pvcharge/status") == ha.json("pvcharge/status")
            assert (later.text("pvcharge/availability"), later.text("pvcharge/mode")) == ("online", "pv")


async def test_mode_command_round_trip(broker: Broker) -> None:
    daemon, _ = make_daemon()
    await cycles(daemon, 1)
    async with running(MqttBridge(daemon, mqtt_config(broker.port))), Watcher(broker.port) as ha:
        await ha.wait(lambda: ha.text("pvcharge/mode") == "pv")
        with capture_logs() as logs:
            await ha.publish("pvcharge/mode/set", "fast")
            await ha.wait(lambda: daemon.mode == "fast", what="daemon.mode == fast")
            await ha.wait(lambda: ha.text("pvcharge/mode") == "fast")
            await ha.wait(lambda: ha.json("pvcharge/status")["mode"] == "fast")
            await cycles(daemon, 1)
            await ha.wait(lambda: ha.json("pvcharge/status")["command"]["current_a"] == 16.0)
            await ha.publish("pvcharge/mode/set", " MinPV \n")  # as typed by a person
            await ha.wait(lambda: daemon.mode == "minpv")
    changed = [e for e in logs if e["event"] == "mode_changed"]
    assert [(e["mode"], e["previous_mode"], e["source"]) for e in changed] == [
        ("fast", "pv", "mqtt"),
        ("minpv", "fast", "mqtt"),
    ]


async def test_unknown_and_retained_mode_commands_are_ignored_with_a_warning(broker: Broker) -> None:
    daemon, _ = make_daemon()
    async with Watcher(broker.port) as setup:  # a retained command left over from some tool
        await setup.publish("pvcharge/mode/set", "off", retain=True)
    with capture_logs() as logs:
        async with running(MqttBridge(daemon, mqtt_config(broker.port))), Watcher(broker.port) as ha:
            await ha.wait(lambda: ha.text("pvcharge/availability") == "online")
            await ha.publish("pvcharge/mode/set", "turbo")
            await ha.publish("pvcharge/mode/set", "\xff" * 500)
            await ha.wait(lambda: sum(e["event"] == "mqtt_command_ignored" for e in logs) == 3)
            await cycles(daemon, 1)
            await ha.wait(lambda: (ha.json("pvcharge/status") or {}).get("stats", {}).get("cycles") == 1)
            assert daemon.mode == "pv" and ha.text("pvcharge/mode") == "pv"
    ignored = [e for e in logs if e["event"] == "mqtt_command_ignored"]
    assert all(e["log_level"] == "warning" for e in ignored)
    assert "retained" in ignored[0]["reason"] and ignored[0]["payload"] == "off"
    assert (
        ignored[1]["payload"] == "turbo" and "expected one of: off, pv, minpv, fast" in ignored[1]["reason"]
    )
    assert len(ignored[2]["payload"]) <= 64  # a flood is not copied into the log
    assert not [e for e in logs if e["event"] == "mode_changed"]


async def test_broker_restart_the_loop_keeps_its_pace_and_the_bridge_comes_back(broker: Broker) -> None:
    daemon, _ = make_daemon(interval_s=1, clock=time.time)
    stamps: list[float] = []
    daemon.listeners.append(lambda _cycle: stamps.append(time.monotonic()))
    stop = asyncio.Event()
    loop_task = asyncio.create_task(daemon.run(stop))
    bridge = MqttBridge(daemon, mqtt_config(broker.port), reconnect_min_s=0.1, reconnect_max_s=0.5)
    with capture_logs() as logs:
        async with running(bridge):
            async with Watcher(broker.port) as ha:
                await ha.wait(lambda: ha.text("pvcharge/availability") == "online")
                await ha.wait(
                    lambda: (ha.json("pvcharge/status") or {}).get("stats", {}).get("cycles", 0) >= 1
                )
            broker.kill()
            down = time.monotonic()
            await asyncio.sleep(3.6)
            during = [t for t in stamps if t > down]
            broker.start()
            async with Watcher(broker.port) as ha:
                # the new broker knows nothing: availability, discovery and state come from the bridge
                await ha.wait(lambda: ha.text("pvcharge/availability") == "online", what="online again")
                await ha.wait(
                    lambda: len(ha.retained("homeassistant/")) == len(discovery_messages(bridge.config))
                )
                await ha.wait(lambda: ha.json("pvcharge/status") is not None)
                cycles_seen = ha.json("pvcharge/status")["stats"]["cycles"]
                await ha.wait(lambda: ha.json("pvcharge/status")["stats"]["cycles"] > cycles_seen)
                assert ha.text("pvcharge/mode") == "pv"
    stop.set()
    await loop_task
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert len(during) >= 3, during
    # interval_s = 1: the outage changes nothing. One start may be late by an OS stall on a loaded
    # machine (the next one is then early: the loop keeps its schedule), a loop waiting on the broker
    # would be late again and again
    assert all(0.5 < g < 1.5 for g in gaps), gaps
    assert sum(not 0.85 < g < 1.15 for g in gaps) <= 2, gaps
    assert daemon.stats.max_cycle_s < 0.5
    events = [e["event"] for e in logs]
    assert events.count("mqtt_unavailable") == 1  # once per outage, then debug
    assert events.count("mqtt_reconnected") == 1 and bridge.connects == 2
    assert events.count("mqtt_discovery_published") == 2


async def test_an_absent_broker_never_slows_the_control_loop() -> None:
    daemon, _ = make_daemon()
    bridge = MqttBridge(daemon, mqtt_config(free_port()), reconnect_min_s=0.01, reconnect_max_s=0.05)
    with capture_logs() as logs:
        await bridge.start()
        walls = []
        for _ in range(30):
            wall0 = time.perf_counter()
            await daemon.cycle()
            walls.append(time.perf_counter() - wall0)
            daemon.clock.t += 5  # type: ignore[attr-defined]
            await asyncio.sleep(0.02)  # let the bridge try and fail meanwhile
        wall0 = time.perf_counter()
        await bridge.stop()
        stop_s = time.perf_counter() - wall0
    # a cycle takes about a ms; one waiting for the bridge's reconnection (0.01-0.05 s) would take
    # longer every time, while an OS stall on a loaded machine may slow one of them
    assert statistics.median(walls) < 0.01, walls
    assert sum(wall > 0.05 for wall in walls) <= 1, walls
    assert stop_s < 0.5
    assert daemon.listeners == []  # stop() unregisters
    unavailable = [e for e in logs if e["event"] == "mqtt_unavailable"]
    assert len(unavailable) == 1 and "refused" in unavailable[0]["error"].lower()
    assert sum(e["event"] == "mqtt_still_unavailable" for e in logs) >= 3  # it kept trying, quietly


async def test_last_will_a_killed_pvcharge_turns_offline(broker: Broker) -> None:
    """The will is the broker's: when the process dies, the broker publishes "offline"."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_mqtt import make_daemon, mqtt_config
        from pvcharge.mqtt import MqttBridge

        async def main():
            daemon, _ = make_daemon(interval_s=1, clock=time.time)
            await MqttBridge(daemon, mqtt_config({broker.port})).start()
            await daemon.run()

        asyncio.run(main())
        """
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=subprocess.DEVNULL)
    try:
        async with Watcher(broker.port) as ha:
            await ha.wait(lambda: ha.text("pvcharge/availability") == "online", within_s=15)
            await ha.wait(lambda: ha.json("pvcharge/status") is not None)
            process.send_signal(signal.SIGKILL)
            await ha.wait(lambda: ha.text("pvcharge/availability") == "offline", what="the last will")
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def test_stop_says_offline_and_disconnects_cleanly(broker: Broker) -> None:
    daemon, _ = make_daemon()
    async with Watcher(broker.port) as ha:
        bridge = MqttBridge(daemon, mqtt_config(broker.port))
        with capture_logs() as logs:
            await bridge.start()
            await ha.wait(lambda: ha.text("pvcharge/availability") == "online")
            await bridge.stop()
        await ha.wait(lambda: ha.text("pvcharge/availability") == "offline")
    assert [e["event"] for e in logs if e["event"].startswith("mqtt_")][-1] == "mqtt_stopped"
    assert not [e for e in logs if e["log_level"] in ("warning", "error")]
    await ha.wait(lambda: "Client pvcharge disconnected." in broker.log.read_text(), what="the broker's log")
    broker_log = broker.log.read_text()
    assert "Received DISCONNECT from pvcharge" in broker_log  # a clean goodbye: no last will
    assert "Client pvcharge closed its connection" not in broker_log


async def test_discovery_removal_old_entities_and_discovery_false(broker: Broker) -> None:
    daemon, _ = make_daemon()
    old = "homeassistant/sensor/pvcharge/old_entity/config"
    moved = "ha-old/sensor/pvcharge/grid_power/config"  # an earlier discovery_prefix
    foreign = "home/heating/setpoint"  # not a discovery topic of this node: never cleared
    async with Watcher(broker.port) as setup:
        for topic in (old, moved, foreign):
            await setup.publish(topic, json.dumps({"name": "left over"}), retain=True)
        await setup.publish("pvcharge/discovery", json.dumps({"topics": [old, moved, foreign]}), retain=True)
    current = sorted(discovery_messages(mqtt_config(broker.port)))
    with capture_logs() as logs:
        async with running(MqttBridge(daemon, mqtt_config(broker.port))), Watcher(broker.port) as ha:
            await ha.wait(lambda: (ha.json("pvcharge/discovery") or {}).get("topics") == current)
    async with Watcher(broker.port) as ha:
        assert sorted(ha.retained("homeassistant/")) == current
        assert not ha.retained("ha-old/")
        assert foreign in ha.latest
        assert ha.text("pvcharge/availability") == "offline"  # stopped cleanly
    assert any(e["event"] == "mqtt_discovery_removed" and e["topics"] == 2 for e in logs)

    # discovery: false: everything discovered before goes, status and availability stay
    bridge = MqttBridge(daemon, mqtt_config(broker.port, discovery=False))
    async with running(bridge), Watcher(broker.port) as ha:
        await ha.wait(lambda: ha.text("pvcharge/availability") == "online")
        await ha.wait(lambda: not ha.retained("homeassistant/") and "pvcharge/discovery" not in ha.latest)
    async with Watcher(broker.port) as ha:
        assert ha.retained("") == {"pvcharge/availability", "pvcharge/status", "pvcharge/mode", foreign}


async def test_remove_all_clears_every_retained_topic(broker: Broker) -> None:
    daemon, _ = make_daemon()
    async with running(MqttBridge(daemon, mqtt_config(broker.port))), Watcher(broker.port) as ha:
        await ha.wait(lambda: "pvcharge/discovery" in ha.latest)
    cleared = await remove_all(mqtt_config(broker.port))
    assert "pvcharge/status" in cleared and "pvcharge/energy" in cleared
    # the discovery topics with the session history's and the plans' entities; record, status, mode,
    # energy, availability, plan
    assert len(cleared) == len(discovery_messages(mqtt_config(1), history=True, plans=True)) + 6
    assert "pvcharge/plan" in cleared and "homeassistant/text/pvcharge/plan/config" in cleared
    async with Watcher(broker.port) as ha:
        assert ha.retained("") == set()


async def test_energy_sensors_for_today_and_the_last_session(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pvcharge.mqtt.ENERGY_EVERY_S", 0.0)  # P/energy after every cycle
    daemon, _ = make_daemon()
    recorder = SessionRecorder(SessionStore(tmp_path / "s.db"), "warp", Tariff(), tz=UTC)
    daemon.listeners.append(recorder)
    bridge = MqttBridge(daemon, mqtt_config(broker.port), sessions=recorder)
    async with running(bridge), Watcher(broker.port) as ha:
        await ha.wait(lambda: ha.json("pvcharge/energy") is not None, what="energy")
        assert ha.json("pvcharge/energy")["last_session"] is None  # at connect, before any cycle
        await cycles(daemon, 13)
        await ha.wait(lambda: (ha.json("pvcharge/energy")["today"]["car_kwh"] or 0) > 0.04, what="energy")
        energy = ha.json("pvcharge/energy")
        entities = discovery_messages(mqtt_config(broker.port), history=True)
        await ha.wait(lambda: len(ha.retained("homeassistant/")) == len(entities), what="discovery")
        configs = {ha.json(t)["unique_id"].removeprefix("pvcharge_"): ha.json(t) for t in entities}
    for key in ("today_car_energy", "last_session_energy"):
        c = configs[key]
        assert (c["unit_of_measurement"], c["device_class"], c["state_class"]) == (
            "kWh",
            "energy",
            "total_increasing",
        )
    for key in ("today_solar_share", "last_session_solar_share"):
        assert configs[key]["unit_of_measurement"] == "%"
    assert {c["state_topic"] for k, c in configs.items() if "energy" in k or "share" in k} == {
        "pvcharge/energy"
    }
    values = {
        k: render(configs[k]["value_template"], energy)
        for k in ("today_car_energy", "today_solar_share", "last_session_energy", "last_session_solar_share")
    }
    session = recorder.last_session()
    assert (
        session is not None and float(values["last_session_energy"]) == round(session.energy_wh / 1000, 3) > 0
    )
    # all of it from PV (5 kW PV at 500 W house, the car at 12 A on 1 phase)
    assert values["today_solar_share"] == values["last_session_solar_share"] == "100.0"
    assert float(values["today_car_energy"]) == float(values["last_session_energy"])
    # no history: no such entities
    assert not [t for t in discovery_messages(mqtt_config(1)) if "energy" in t]


async def test_home_assistant_restart_gets_the_discovery_again(broker: Broker) -> None:
    daemon, _ = make_daemon()
    async with running(MqttBridge(daemon, mqtt_config(broker.port))), Watcher(broker.port) as ha:
        await ha.wait(lambda: "pvcharge/discovery" in ha.latest)
        before = sum(t.startswith("homeassistant/select/") for t, _, _ in ha.seen)
        await ha.publish("homeassistant/status", "online")  # Home Assistant's birth message
        await ha.wait(lambda: sum(t.startswith("homeassistant/select/") for t, _, _ in ha.seen) == before + 1)


async def test_user_and_password_and_the_password_never_logged(
    auth_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="pvcharge.mqtt.client")  # every packet paho sends
    daemon, _ = make_daemon()
    good = mqtt_config(auth_broker.port, username="alice", password=Secret(PASSWORD))
    bad = mqtt_config(auth_broker.port, username="alice", password=Secret(PASSWORD + "x"))
    with capture_logs() as logs:
        bridge = MqttBridge(daemon, bad, reconnect_min_s=0.05, reconnect_max_s=0.1)
        async with running(bridge):
            for _ in range(100):
                if any(e["event"] == "mqtt_unavailable" for e in logs):
                    break
                await asyncio.sleep(0.02)
            assert not bridge.connected
        async with (
            running(MqttBridge(daemon, good)),
            Watcher(auth_broker.port, username="alice", password=PASSWORD) as ha,
        ):
            await ha.wait(lambda: ha.text("pvcharge/availability") == "online")
            await cycles(daemon, 1)
            await ha.wait(lambda: (ha.json("pvcharge/status") or {}).get("stats", {}).get("cycles") == 1)
    refused = next(e for e in logs if e["event"] == "mqtt_unavailable")
    assert re.search(r"(?i)not auth|bad user", refused["error"]), refused
    assert PASSWORD not in repr(logs) and PASSWORD not in caplog.text
    assert PASSWORD not in repr(bridge) and PASSWORD not in repr(good)
    # paho logged every packet, the CONNECT with its login included: the check looked at something
    assert any(e["event"] == "mqtt_client_log" and "Sending CONNECT" in e["message"] for e in logs)


async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    broker = Broker(
        tmp_path, f"cafile {tmp_path}/ca.pem\ncertfile {tmp_path}/cert.pem\nkeyfile {tmp_path}/key.pem\n"
    )
    broker.start()
    try:
        daemon, _ = make_daemon()
        config = mqtt_config(broker.port, tls=True, ca_file=str(tmp_path / "ca.pem"))
        tls = aiomqtt.TLSParameters(ca_certs=str(tmp_path / "ca.pem"))
        async with running(MqttBridge(daemon, config)), Watcher(broker.port, tls_params=tls) as ha:
            await ha.wait(lambda: ha.text("pvcharge/availability") == "online")
        # without the CA the broker's certificate is refused
        with capture_logs() as logs:
            async with running(MqttBridge(daemon, mqtt_config(broker.port, tls=True), reconnect_min_s=0.05)):
                for _ in range(100):
                    if any(e["event"] == "mqtt_unavailable" for e in logs):
                        break
                    await asyncio.sleep(0.02)
        refused = next(e for e in logs if e["event"] == "mqtt_unavailable")
        assert "certificate verify failed" in refused["error"]
    finally:
        broker.kill()


async def test_a_reload_moves_the_bridge_to_its_new_prefix_and_removing_the_section_stops_it(
    broker: Broker,
) -> None:
    """SIGHUP with a changed mqtt: section (``Services.apply``): the old bridge says "offline" under
    its prefix, the new one comes up under the new; without the section the bridge is gone."""
    import dataclasses

    from pvcharge.config import ApiConfig
    from pvcharge.services import Services

    daemon, _ = make_daemon()
    config = dataclasses.replace(daemon.config, api=ApiConfig(enabled=False), mqtt=mqtt_config(broker.port))
    services = Services(daemon)
    await services.start(config)
    try:
        async with Watcher(broker.port) as ha:
            await ha.wait(lambda: ha.text("pvcharge/availability") == "online")
            garage = mqtt_config(broker.port, prefix="garage")
            assert await services.apply(dataclasses.replace(config, mqtt=garage)) == ["mqtt"]
            await ha.wait(lambda: ha.text("pvcharge/availability") == "offline", what="old prefix offline")
            await ha.wait(lambda: ha.text("garage/availability") == "online", what="new prefix online")
            await cycles(daemon, 1)
            await ha.wait(lambda: (ha.json("garage/status") or {}).get("mode") == "pv", what="status")
            assert len(daemon.listeners) == 1  # the new bridge's, the old one unregistered
            entities = discovery_messages(garage)
            await ha.wait(lambda: all(ha.text(topic) for topic in entities), what="discovery")

            # discovery: false and a reload take pvcharge out of Home Assistant, as docs/mqtt.md says
            hidden = dataclasses.replace(garage, discovery=False)
            assert await services.apply(dataclasses.replace(config, mqtt=hidden)) == ["mqtt"]
            await ha.wait(lambda: not any(topic in ha.latest for topic in entities), what="discovery removed")
            assert services.bridge is not None and services.bridge.connected  # status goes on

            assert await services.apply(dataclasses.replace(config, mqtt=None)) == ["mqtt"]
            await ha.wait(lambda: ha.text("garage/availability") == "offline", what="stopped")
            assert services.bridge is None and daemon.listeners == []
    finally:
        await services.stop()
