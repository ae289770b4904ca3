"""The ``loadpoints:`` section, ``site.circuits`` and vehicle profiles in the config file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pvcharge.config import load_config, parse_config, secret_values
from pvcharge.control import Circuit, SiteController, Vehicle
from pvcharge.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
METER = "meter: {type: huawei, host: 192.0.2.10}\n"
TWO = (
    METER
    + """
loadpoints:
  - name: carport
    priority: 1
    charger: {type: warp, url: "http://192.0.2.20", phases: auto}
    vehicle: {min_current_3p_a: 8, no_phase_switch: true}
  - name: garage
    mode: fast
    charger: {type: warp, url: "http://192.0.2.21", max_current_a: 20, username: admin, password: s3cret-g}
"""
)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "/etc/pvcharge/config.yaml", environ={})
    return str(err.value)


def example_with_loadpoints() -> str:
    """config.example.yaml with its commented-out loadpoints: example in force instead of charger:, and
    its circuits example too."""
    text = (ROOT / "config.example.yaml").read_text()
    text = re.sub(r"^charger:\n(?:[ #].*\n)*\n", "", text, count=1, flags=re.MULTILINE)
    block = re.search(r"^# loadpoints:.*\n(?:#.*\n)*", text, re.MULTILINE)
    assert block is not None
    text = text.replace(block.group(0), re.sub(r"^# ?", "", block.group(0), flags=re.MULTILINE))
    circuits = re.search(r"^  # circuits:.*\n(?:  #   .*\n)*", text, re.MULTILINE)
    assert circuits is not None
    return text.replace(circuits.group(0), re.sub(r"^  # ", "  ", circuits.group(0), flags=re.MULTILINE))


def test_a_charger_section_is_one_loadpoint_named_main() -> None:
    cfg = load_config(ROOT / "config.example.yaml")
    assert cfg.loadpoints == ()
    (main,) = cfg.all_loadpoints()
    assert (main.name, main.mode, main.priority, main.vehicle) == ("main", None, 0, Vehicle())
    assert main.charger == cfg.charger and main.charge_point == cfg.charge_point
    SiteController(cfg.control, cfg.site, [lp.loadpoint() for lp in cfg.all_loadpoints()])


def test_the_documented_loadpoints_example_is_valid() -> None:
    cfg = parse_config(example_with_loadpoints(), "config.example.yaml", environ={})
    carport, garage = cfg.all_loadpoints()
    assert (carport.name, carport.priority, carport.mode, carport.charge_point.phases) == (
        "carport",
        1,
        "pv",
        "auto",
    )
    assert carport.vehicle == Vehicle(min_current_3p_a=8, phases="auto")
    assert (garage.name, garage.priority, garage.charge_point.max_current_a) == ("garage", 0, 16)
    assert cfg.site.circuits == (Circuit("garage", 16, ("garage",)),)
    assert cfg.charger == carport.charger  # the first loadpoint's, for code that knows one charger


def test_loadpoints_parse_with_their_chargers_vehicles_and_secrets() -> None:
    cfg = parse_config(TWO, environ={})
    carport, garage = cfg.loadpoints
    assert carport.vehicle == Vehicle(min_current_3p_a=8, no_phase_switch=True)
    assert garage.mode == "fast" and garage.charge_point.max_current_a == 20
    assert garage.charger.settings.url == "http://192.0.2.21"
    assert "s3cret-g" in secret_values(cfg)
    site = SiteController(cfg.control, cfg.site, [lp.loadpoint() for lp in cfg.loadpoints])
    assert site.controllers["carport"].min_current_3p_a == 8
    assert site.controllers["garage"].mode == "fast"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("priority: 1", "priority: high"), "loadpoints[0].priority: expected an integer"),
        (
            ("name: garage", "name: carport"),
            "loadpoints[1].name: duplicate name 'carport' (also loadpoints[0])",
        ),
        (("name: garage", "name: Garage 2"), "loadpoints[1].name: expected lower-case letters"),
        (("mode: fast", "mode: turbo"), "loadpoints[1].mode: expected one of"),
        (
            ("min_current_3p_a: 8", "min_current_3p_a: 3"),
            "loadpoints[0].vehicle.min_current_3p_a: expected a value",
        ),
        (("no_phase_switch: true", "no_phase_swich: true"), "did you mean 'no_phase_switch'"),
        (("max_current_a: 20", "max_current_a: 5"), "loadpoints[1].charger.max_current_a"),
        (("    mode: fast\n", "    mode: fast\n    colour: red\n"), "loadpoints[1].colour: unknown key"),
    ],
)
def test_errors_name_the_item_and_key(change: tuple[str, str], expected: str) -> None:
    assert expected in error_of(TWO.replace(*change))


def test_structural_errors() -> None:
    assert "give either charger: (one charger) or loadpoints:, not both" in error_of(
        TWO + 'charger: {type: warp, url: "http://192.0.2.22"}\n'
    )
    assert "charger: missing section" in error_of(METER)
    assert "loadpoints: expected a list" in error_of(METER + "loadpoints: {name: a}\n")
    assert "loadpoints[0].charger: missing section" in error_of(METER + "loadpoints: [{name: a}]\n")
    site = "site: {circuits: [{name: garage, max_current_a: 16, loadpoints: [garage, shed]}]}\n"
    assert (
        "site.circuits[0].loadpoints: unknown loadpoint 'shed'; expected one of: carport, garage"
        in error_of(TWO + site)
    )
    single = METER + 'charger: {type: warp, url: "http://192.0.2.20"}\n'
    assert "unknown loadpoint 'garage'; expected one of: main" in error_of(single + site)
    ok = single + "site: {circuits: [{name: c, max_current_a: 20, loadpoints: [main]}]}\n"
    assert parse_config(ok, environ={}).site.circuits[0].loadpoints == ("main",)
    assert "site.circuits[0].loadpoints: expected a list" in error_of(
        single + "site: {circuits: [{name: c, max_current_a: 20, loadpoints: main}]}\n"
    )


async def test_the_daemon_drives_every_loadpoint_with_its_own_driver() -> None:
    from pvcharge.daemon import Daemon
    from pvcharge.devices import create_site_devices

    config = parse_config(TWO.replace("phases: auto}", "phases: auto, phase_switching: true}"), environ={})
    meter, chargers = create_site_devices(config, clock=lambda: 0.0)
    daemon = Daemon(config, meter, chargers)
    assert [(lp.name, lp.charger.name) for lp in daemon.loadpoints] == [
        ("carport", "charger warp"),
        ("garage", "charger garage warp"),
    ]
    assert daemon.loadpoint("garage").controller.mode == "fast"
    for lp in daemon.loadpoints:
        await lp.charger.close()
    await meter.close()


def test_the_effective_config_lists_the_loadpoints_with_secrets_masked() -> None:
    from pvcharge.config import to_dict

    shown = to_dict(parse_config(TWO, environ={}))
    assert "charger" not in shown
    carport, garage = shown["loadpoints"]
    assert (carport["name"], carport["priority"], carport["charger"]["phases"]) == ("carport", 1, "auto")
    assert carport["vehicle"]["min_current_3p_a"] == 8
    assert garage["charger"]["password"] == "***" and garage["mode"] == "fast"
    assert "loadpoints" not in to_dict(load_config(ROOT / "config.example.yaml"))


def test_check_config_checks_every_loadpoints_charger() -> None:
    import asyncio

    from pvcharge.devices import check_devices

    asyncio.run(check_devices(parse_config(example_with_loadpoints(), environ={}), clock=lambda: 0.0))
    switching = TWO.replace("phases: auto}", "phases: auto, phase_switching: true}")
    parse_config(switching, environ={})  # loadpoints[0] can switch now
    auto = switching.replace("max_current_a: 20,", "max_current_a: 20, phases: auto,")
    with pytest.raises(
        ConfigError, match=r"loadpoints\[1\]\.charger\.phases: auto needs a charger that can switch"
    ):
        asyncio.run(check_devices(parse_config(auto, environ={}), clock=lambda: 0.0))
    with pytest.raises(ConfigError, match=r"loadpoints\[0\]\.charger\.phases: auto needs"):
        asyncio.run(check_devices(parse_config(TWO, environ={}), clock=lambda: 0.0))
