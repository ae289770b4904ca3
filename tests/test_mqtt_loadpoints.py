"""The MQTT bridge with two loadpoints against a real mosquitto on loopback (see test_mqtt.py): state
topics per loadpoint, mode commands per loadpoint, one Home Assistant device per loadpoint, each
loadpoint's energy and last session."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from test_daemon_loadpoints import TWO
from test_mqtt import (
    CONFIG_TEXT,
    Broker,
    Charger,
    Clock,
    Meter,
    Watcher,
    cycles,
    make_daemon,
    mqtt_config,
    render,
    running,
)
from test_mqtt import broker as broker  # (the fixture: a mosquitto of its own on 127.0.0.1)

from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.mqtt import MqttBridge, remove_all
from pvcharge.mqtt_discovery import discovery_messages
from pvcharge.readings import ChargerReading
from pvcharge.sessions import SessionRecorder
from pvcharge.sessions.store import SessionStore
from pvcharge.sessions.tally import Tariff

NAMES = ["carport", "garage"]


class Pluggable(Charger):
    """The fake charger of test_mqtt with a plug: unplugged, no car and no power."""

    connected = True

    async def read(self) -> ChargerReading:
        if self.connected:
            return await super().read()
        return ChargerReading(False, False, 0.0, 0.0, 0, self.clock())


def two_loadpoints() -> Daemon:
    clock = Clock()
    carport, garage = Pluggable(clock), Pluggable(clock)
    carport.name, garage.name = "charger carport", "charger garage"
    return Daemon(parse_config(TWO, environ={}), Meter(clock), [carport, garage], clock=clock)


def lp_topic(name: str, key: str) -> str:
    return f"pvcharge/loadpoints/{name}/{key}"


async def test_state_per_loadpoint_and_the_old_topics_mean_the_first(broker: Broker) -> None:
    daemon = two_loadpoints()
    await cycles(daemon, 2)
    async with running(MqttBridge(daemon, mqtt_config(broker.port))), Watcher(broker.port) as ha:
        await ha.wait(lambda: all(ha.text(lp_topic(n, "reason")) for n in NAMES), what="every value topic")
        await cycles(daemon, 1)
        await ha.wait(lambda: ha.json("pvcharge/status")["stats"]["cycles"] == 3)
        await ha.wait(lambda: ha.json(lp_topic("garage", "status")) == daemon.loadpoint("garage").status())
        parts = {n: ha.json(lp_topic(n, "status")) for n in NAMES}
        plain = {
            n: {k: ha.text(lp_topic(n, k)) for k in ("mode", "offered_current_a", "phases")} for n in NAMES
        }
        more = {n: {k: ha.text(lp_topic(n, k)) for k in ("power_w", "connected", "charging")} for n in NAMES}
        old = (ha.json("pvcharge/status"), ha.text("pvcharge/mode"))
    assert parts["carport"] == json.loads(json.dumps(daemon.loadpoint("carport").status()))
    assert [parts[n]["command"]["current_a"] for n in NAMES] == [16.0, 9.0]  # the 25 A fuse, by priority
    assert plain == {
        "carport": {"mode": "fast", "offered_current_a": "16.0", "phases": "3"},
        "garage": {"mode": "fast", "offered_current_a": "9.0", "phases": "3"},
    }
    assert more["garage"] == {"power_w": str(9.0 * 230), "connected": "true", "charging": "true"}
    assert old[0]["command"] == parts["carport"]["command"] and old[1] == "fast"  # the first loadpoint


async def test_mode_set_per_loadpoint_reaches_that_loadpoint_only(broker: Broker) -> None:
    daemon = two_loadpoints()
    await cycles(daemon, 1)
    async with Watcher(broker.port) as setup:  # a retained command left over from some tool: ignored
        await setup.publish(lp_topic("garage", "mode/set"), "off", retain=True)

    def modes() -> list[str]:
        return [daemon.loadpoint(n).controller.mode for n in NAMES]

    with capture_logs() as logs:
        async with running(MqttBridge(daemon, mqtt_config(broker.port))), Watcher(broker.port) as ha:
            await ha.wait(lambda: ha.text(lp_topic("garage", "mode")) == "fast")
            await ha.publish(lp_topic("garage", "mode/set"), " MinPV \n")
            await ha.wait(lambda: ha.text(lp_topic("garage", "mode")) == "minpv", what="garage minpv")
            assert modes() == ["fast", "minpv"]
            assert ha.text(lp_topic("carport", "mode")) == "fast" and ha.text("pvcharge/mode") == "fast"
            await ha.publish(lp_topic("carport", "mode/set"), "turbo")
            await ha.publish("pvcharge/mode/set", "pv")  # the old topic: the first loadpoint
            await ha.wait(lambda: ha.text(lp_topic("carport", "mode")) == "pv", what="carport pv")
            await ha.wait(lambda: ha.text("pvcharge/mode") == "pv")
            assert modes() == ["pv", "minpv"]
    changed = [(e["mode"], e["loadpoint"]) for e in logs if e["event"] == "mode_changed"]
    assert changed == [("minpv", "garage"), ("pv", "carport")]
    ignored = [(e["topic"], e["payload"]) for e in logs if e["event"] == "mqtt_command_ignored"]
    assert ignored == [(lp_topic("garage", "mode/set"), "off"), (lp_topic("carport", "mode/set"), "turbo")]


async def test_discovery_one_device_per_loadpoint_with_unique_ids_and_its_removal(broker: Broker) -> None:
    daemon = two_loadpoints()
    await cycles(daemon, 2)
    expected = discovery_messages(mqtt_config(1), loadpoints=NAMES)
    async with running(MqttBridge(daemon, mqtt_config(broker.port))), Watcher(broker.port) as ha:
        await ha.wait(lambda: len(ha.retained("homeassistant/")) == len(expected), what="discovery")
        await ha.wait(lambda: ha.json(lp_topic("garage", "status")) is not None)
        configs = {t: ha.json(t) for t in ha.retained("homeassistant/")}
        parts = {n: ha.json(lp_topic(n, "status")) for n in NAMES}
        site_status = ha.json("pvcharge/status")
    unique_ids = [c["unique_id"] for c in configs.values()]
    assert len(set(unique_ids)) == len(unique_ids) == len(configs)
    devices: dict[str, list[str]] = {}
    for c in configs.values():
        devices.setdefault(c["device"]["identifiers"][0], []).append(c["unique_id"])
    assert sorted(devices) == ["pvcharge", "pvcharge_lp_carport", "pvcharge_lp_garage"]
    assert sorted(devices["pvcharge"]) == [
        f"pvcharge_{k}"
        for k in sorted(["battery_power", "battery_soc", "grid_power", "house_power", "pv_power"])
    ]
    per_lp = ["car_connected", "car_current", "car_power", "charging", "mode"]
    per_lp += ["offered_current", "phases", "reason", "surplus"]
    for name in NAMES:
        assert sorted(devices[f"pvcharge_lp_{name}"]) == [f"pvcharge_lp_{name}_{k}" for k in per_lp]
        by_id = {
            c["unique_id"].removeprefix(f"pvcharge_lp_{name}_"): c
            for c in configs.values()
            if c["device"]["identifiers"] == [f"pvcharge_lp_{name}"]
        }
        assert by_id["car_power"]["device"]["via_device"] == "pvcharge"
        assert by_id["car_power"]["device"]["name"] == f"pvcharge {name}"
        mode = by_id["mode"]
        assert (mode["state_topic"], mode["command_topic"]) == (
            lp_topic(name, "mode"),
            lp_topic(name, "mode/set"),
        )
        assert {c["state_topic"] for k, c in by_id.items() if k != "mode"} == {lp_topic(name, "status")}
        offered = render(by_id["offered_current"]["value_template"], parts[name])
        assert offered == str(parts[name]["command"]["current_a"])
        assert render(by_id["charging"]["value_template"], parts[name]) == "ON"
    site = {c["unique_id"]: c for c in configs.values() if c["device"]["identifiers"] == ["pvcharge"]}
    assert render(site["pvcharge_grid_power"]["value_template"], site_status) == "-3000.0"
    assert all(c["state_topic"] == "pvcharge/status" for c in site.values())

    # the record lists the loadpoints' entities, so discovery: false removes them all
    async with (
        running(MqttBridge(daemon, mqtt_config(broker.port, discovery=False))),
        Watcher(broker.port) as ha,
    ):
        await ha.wait(lambda: not ha.retained("homeassistant/"), what="every discovery topic removed")
    cleared = await remove_all(mqtt_config(broker.port), loadpoints=NAMES)
    assert lp_topic("garage", "offered_current_a") in cleared
    async with Watcher(broker.port) as ha:
        assert ha.retained("") == set()


def test_a_single_charger_publishes_the_same_discovery_as_before() -> None:
    config = mqtt_config(1)
    before = discovery_messages(config, history=True, plans=True)
    assert discovery_messages(config, history=True, plans=True, loadpoints=["main"]) == before
    daemon = Daemon(parse_config(CONFIG_TEXT % 5), Meter(Clock()), Charger(Clock()))
    assert MqttBridge(daemon, config)._discovery() == discovery_messages(config)


ENERGY_IDS = ["last_session_energy", "last_session_solar_share", "today_car_energy", "today_solar_share"]


async def test_each_loadpoint_publishes_its_own_energy_and_last_session(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pvcharge.mqtt.ENERGY_EVERY_S", 3600.0)  # only changed sessions are published
    daemon = two_loadpoints()
    recorder = SessionRecorder(SessionStore(tmp_path / "s.db"), NAMES, Tariff(), tz=UTC)
    daemon.listeners.append(recorder)
    expected = discovery_messages(mqtt_config(1), history=True, loadpoints=NAMES)

    def energy(name: str) -> dict[str, object]:
        return ha.json(lp_topic(name, "energy")) or {}

    def last(name: str) -> dict[str, object]:
        return energy(name).get("last_session") or {}  # type: ignore[return-value]

    async with (
        running(MqttBridge(daemon, mqtt_config(broker.port), sessions=recorder)),
        Watcher(broker.port) as ha,
    ):
        await ha.wait(lambda: all(energy(n) for n in NAMES), what="each loadpoint's energy at connect")
        assert [energy(n)["last_session"] for n in NAMES] == [None, None]
        await cycles(daemon, 6)
        await ha.wait(lambda: all(last(n).get("open") for n in NAMES), what="both sessions open")
        garage = daemon.loadpoint("garage").charger
        assert isinstance(garage, Pluggable)
        garage.connected = False
        await cycles(daemon, 2)
        await ha.wait(lambda: last("garage").get("open") is False, what="the garage's session closed")
        await ha.wait(lambda: len(ha.retained("homeassistant/")) == len(expected), what="discovery")
        parts = {n: energy(n) for n in NAMES}
        site = ha.json("pvcharge/energy")
        configs = {t: ha.json(t) for t in ha.retained("homeassistant/")}
    carport_s, garage_s = recorder.last_session("carport"), recorder.last_session("garage")
    assert carport_s is not None and carport_s.end_s is None and carport_s.loadpoint == "carport"
    assert garage_s is not None and garage_s.end_s is not None and garage_s.loadpoint == "garage"
    for name, session in (("carport", carport_s), ("garage", garage_s)):
        part = parts[name]
        assert part["last_session"]["loadpoint"] == name  # type: ignore[index]
        assert part["last_session"]["id"] == session.id  # type: ignore[index]
        # today: this loadpoint's sessions only (one each, published when it last changed)
        assert part["today"]["car_kwh"] == part["last_session"]["energy_kwh"] > 0  # type: ignore[index]
        assert part["today"]["pv_kwh"] is None  # type: ignore[index]  # the site's, not the loadpoint's
    # the closed one was published as it closed, with its final energy
    assert parts["garage"]["last_session"]["energy_kwh"] == round(garage_s.energy_wh / 1000, 3)  # type: ignore[index]
    assert parts["carport"]["last_session"]["open"] is True  # type: ignore[index]
    # P/energy stays the site's: the first open session, and the site's keys
    assert site["last_session"]["loadpoint"] == "carport" and site["last_session"]["open"]
    assert site["today"]["pv_kwh"] is not None

    # Home Assistant: each loadpoint's device has the energy sensors on its own topic
    for name in NAMES:
        mine = {
            c["unique_id"].removeprefix(f"pvcharge_lp_{name}_"): c
            for c in configs.values()
            if c["device"]["identifiers"] == [f"pvcharge_lp_{name}"]
            and c["unique_id"].endswith(("energy", "share"))
        }
        assert sorted(mine) == ENERGY_IDS
        assert {c["state_topic"] for c in mine.values()} == {lp_topic(name, "energy")}
        value = render(mine["last_session_energy"]["value_template"], parts[name])
        assert value == str(parts[name]["last_session"]["energy_kwh"])  # type: ignore[index]
    on_site = [c for c in configs.values() if c["device"]["identifiers"] == ["pvcharge"]]
    assert {c["state_topic"] for c in on_site if c["unique_id"].endswith(("energy", "share"))} == {
        "pvcharge/energy"
    }
    cleared = await remove_all(mqtt_config(broker.port), loadpoints=NAMES)
    assert lp_topic("garage", "energy") in cleared


async def test_a_charger_config_publishes_no_loadpoint_energy(broker: Broker, tmp_path: Path) -> None:
    daemon, _ = make_daemon()
    recorder = SessionRecorder(SessionStore(tmp_path / "s.db"), "warp", Tariff(), tz=UTC)
    daemon.listeners.append(recorder)
    async with (
        running(MqttBridge(daemon, mqtt_config(broker.port), sessions=recorder)),
        Watcher(broker.port) as ha,
    ):
        await cycles(daemon, 3)
        await ha.wait(lambda: (ha.json("pvcharge/energy") or {}).get("last_session") is not None)
        await ha.wait(lambda: "pvcharge/discovery" in ha.latest)
        assert not ha.retained("pvcharge/loadpoints/")
        assert not [t for t in ha.retained("homeassistant/") if "/lp_" in t]
