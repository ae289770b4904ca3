"""The MQTT bridge with two loadpoints against a real mosquitto on loopback (see test_mqtt.py): state
topics per loadpoint, mode commands per loadpoint, one Home Assistant device per loadpoint."""

from __future__ import annotations

import json

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
    mqtt_config,
    render,
    running,
)
from test_mqtt import broker as broker  # (the fixture: a mosquitto of its own on 127.0.0.1)

from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.mqtt import MqttBridge, remove_all
from pvcharge.mqtt_discovery import discovery_messages

NAMES = ["carport", "garage"]


def two_loadpoints() -> Daemon:
    clock = Clock()
    carport, garage = Charger(clock), Charger(clock)
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
