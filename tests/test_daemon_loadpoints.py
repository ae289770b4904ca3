"""The daemon driving several loadpoints: small in-process drivers (counting cycles on a fake clock) for
the write order and stale data, and ``pvcharge run`` against two WARP emulators on one site."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sitestub import run_daemon
from structlog.testing import capture_logs
from test_daemon import Charger, Clock, Meter, run

from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.errors import DeviceUnavailable
from pvcharge.sim.demo_devices import huawei_meter
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.site import CarParams, SiteModel
from pvcharge.sim.trace import bundled_trace
from pvcharge.sim.warp import WarpEmulator

#: two fast loadpoints under a 25 A fuse: carport (priority 1) takes 16 A, garage what is left
TWO = (
    "meter: {type: huawei, host: 127.0.0.1}\n"
    "control: {cloud_filter: 'off', interval_s: 5, max_age_s: 30}\n"
    "site: {max_grid_current_a: 25}\n"
    "loadpoints:\n"
    "  - {name: carport, priority: 1, mode: fast,\n"
    "     charger: {type: warp, url: 'http://127.0.0.1', phases: 3}}\n"
    "  - {name: garage, mode: fast, charger: {type: warp, url: 'http://127.0.0.2', phases: 3}}\n"
)


def two_loadpoints(clock: Clock) -> tuple[Daemon, Meter, Charger, Charger]:
    meter, carport, garage = Meter(clock), Charger(clock), Charger(clock)
    carport.name, garage.name = "charger carport", "charger garage"  # type: ignore[misc]
    daemon = Daemon(parse_config(TWO, environ={}), meter, [carport, garage], clock=clock)  # type: ignore[list-item]
    return daemon, meter, carport, garage


def offered(charger: Charger) -> float | None:
    return charger.applied[-1].current_a if charger.applied else None


async def test_the_higher_priority_gets_its_full_current_and_the_other_what_the_fuse_leaves() -> None:
    clock = Clock()
    daemon, _, carport, garage = two_loadpoints(clock)
    await run(daemon, clock, 3)
    assert (offered(carport), offered(garage)) == (16.0, 9.0)  # 16 + 9 = the 25 A fuse on every phase
    status = daemon.status()
    assert [(lp["name"], lp["priority"], lp["mode"]) for lp in status["loadpoints"]] == [
        ("carport", 1, "fast"),
        ("garage", 0, "fast"),
    ]
    assert status["loadpoints"][1]["command"] == {"current_a": 9.0, "phases": 3}
    assert status["command"] == status["loadpoints"][0]["command"]  # the old keys: the first loadpoint


async def test_a_refused_decrease_holds_the_other_loadpoints_increase() -> None:
    """carport is switched off (a pause: a decrease) and its write fails: garage must not rise to 16 A
    in that cycle (16 + 16 A would exceed the 25 A fuse while carport still draws); it rises once the
    pause is delivered."""
    clock = Clock()
    daemon, _, carport, garage = two_loadpoints(clock)
    await run(daemon, clock, 3)
    assert (offered(carport), offered(garage)) == (16.0, 9.0)
    daemon.set_mode("off", source="test", loadpoint="carport")
    carport.errors = [DeviceUnavailable("charger carport", "offline")]
    with capture_logs() as logs:
        await run(daemon, clock, 1)
    assert carport.calls == 2 and offered(carport) == 16.0  # the pause was tried and refused
    assert offered(garage) == 9.0 and len(garage.applied) == 1  # garage held back
    assert daemon.stats.held_increases == 1
    assert [e["loadpoints"] for e in logs if e["event"] == "increases_held"] == [["garage"]]
    await run(daemon, clock, 1)
    assert (offered(carport), offered(garage)) == (0.0, 16.0)


async def test_decreases_are_written_before_increases() -> None:
    clock = Clock()
    daemon, _, carport, garage = two_loadpoints(clock)
    order: list[str] = []
    for charger in (carport, garage):
        apply = charger.apply

        async def noted(command: Any, charger: Charger = charger, apply: Any = apply) -> None:
            order.append(f"{charger.name} {command.current_a:g}")
            await apply(command)

        charger.apply = noted  # type: ignore[method-assign]
    await run(daemon, clock, 3)
    order.clear()
    daemon.set_mode("off", source="test", loadpoint="carport")
    await run(daemon, clock, 1)
    assert order == ["charger carport 0", "charger garage 16"]


async def test_on_the_way_out_each_loadpoints_stopped_event_names_its_charger() -> None:
    clock = Clock()
    daemon, _, carport, garage = two_loadpoints(clock)
    await run(daemon, clock, 3)
    daemon.set_mode("off", source="test", loadpoint="carport")
    await run(daemon, clock, 1)  # carport paused: left as it is; garage gets the pause on the way out
    with capture_logs() as logs:
        await daemon._shutdown()
    assert (offered(carport), offered(garage)) == (0.0, 0.0)
    stopped = sorted((e["device"], e["charger_left"]) for e in logs if e["event"] == "stopped")
    assert stopped == [("charger carport", "paused"), ("charger garage", "paused")]


async def test_a_stale_meter_pauses_every_loadpoint() -> None:
    clock = Clock()
    daemon, meter, carport, garage = two_loadpoints(clock)
    await run(daemon, clock, 3)
    assert (offered(carport), offered(garage)) == (16.0, 9.0)
    meter.fail = DeviceUnavailable("meter fake", "gone")
    await run(daemon, clock, 5)  # 25 s: still within max_age_s
    assert (offered(carport), offered(garage)) == (16.0, 9.0)
    await run(daemon, clock, 2)
    assert (offered(carport), offered(garage)) == (0.0, 0.0)


async def test_every_charger_is_paused_on_the_way_out() -> None:
    clock = Clock()
    daemon, _, carport, garage = two_loadpoints(clock)

    async def sleep(delay_s: float) -> None:  # the fake clock's: no 5-s intervals in real time
        clock.t += delay_s
        await asyncio.sleep(0)

    daemon.sleep = sleep
    await daemon.run(max_cycles=2)
    assert daemon.stats.cycles == 2
    assert (offered(carport), offered(garage)) == (0.0, 0.0)


def test_one_driver_per_loadpoint() -> None:
    clock = Clock()
    with pytest.raises(ValueError, match="2 loadpoints but 1 charger drivers"):
        Daemon(parse_config(TWO, environ={}), Meter(clock), Charger(clock))  # type: ignore[arg-type]


async def test_a_charger_config_is_one_loadpoint_named_main() -> None:
    from test_daemon import CONFIG

    clock = Clock()
    daemon = Daemon(CONFIG, Meter(clock), Charger(clock), clock=clock)  # type: ignore[arg-type]
    await run(daemon, clock, 2)
    status = daemon.status()
    assert [lp["name"] for lp in status["loadpoints"]] == ["main"]
    assert status["loadpoints"][0]["command"] == status["command"]
    daemon.set_mode("fast", source="test", loadpoint="main")
    assert daemon.mode == "fast"
    with pytest.raises(KeyError):
        daemon.set_mode("fast", source="test", loadpoint="garage")


def night_with_two_cars(car: CarParams) -> tuple[SiteModel, dict[str, SiteModel]]:
    """The bundled day at 01:00 (no PV: the house's import counts against the fuse) and a car model per
    loadpoint (carport, garage) whose draw the house's meter sees."""
    trace = bundled_trace()
    night = trace.start_s + 3600
    cars = {n: SiteModel(trace, t_s=night, battery=None, car=car) for n in ("carport", "garage")}
    site = SiteModel(
        trace,
        t_s=night,
        car=CarParams(plug_in_s=0.0, plug_out_s=0.0),
        extra_load_w=lambda: sum(c.state().car_power_w for c in cars.values()),
    )
    return site, cars


@contextlib.asynccontextmanager
async def two_warps(site: SiteModel, cars: dict[str, SiteModel]) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The Huawei meter of ``site`` and a WARP per car on loopback: the config's ``meter:`` and
    ``control:`` lines, and each loadpoint's WARP URL."""
    async with (
        HuaweiEmulator(site) as meter,
        WarpEmulator(cars["carport"]) as carport,
        WarpEmulator(cars["garage"]) as garage,
    ):
        head = f"meter: {huawei_meter(meter.port)}\ncontrol: {{interval_s: 1, max_age_s: 10}}\n"
        yield head, {"carport": carport.url, "garage": garage.url}


async def test_pvcharge_run_drives_two_warps_by_priority_under_the_fuse(tmp_path: Path) -> None:
    """``pvcharge run`` as a user runs it, with a ``loadpoints:`` config: both WARPs get their
    commands, the higher priority its full 16 A, the lower what the 25 A fuse leaves (in fast mode, at
    night)."""
    site, cars = night_with_two_cars(CarParams())
    async with two_warps(site, cars) as (head, url):
        path = tmp_path / "pvcharge.yaml"
        path.write_text(
            head + "site: {max_grid_current_a: 25}\n"
            "loadpoints:\n"
            "  - {name: carport, priority: 1, mode: fast,\n"
            f"     charger: {{type: warp, url: '{url['carport']}'}}}}\n"
            f"  - {{name: garage, mode: fast, charger: {{type: warp, url: '{url['garage']}'}}}}\n"
        )

        offers: dict[str, float] = {}

        def both_offered() -> bool:
            offers.update({n: c.state().offered_current_a for n, c in cars.items()})
            return all(a > 0 for a in offers.values())

        held, code, log = await run_daemon(path, until=both_offered, polls=300)
    assert held, log
    assert code == 0, log
    assert offers["carport"] == 16.0, offers
    assert 6.0 <= offers["garage"] <= 25.0 - 16.0, offers  # the fuse minus the house's own current
    assert "'carport', 'garage'" in log, log  # the started line names both
    # both paused on the way out
    assert all(c.state().offered_current_a == 0 for c in cars.values())


async def test_mode_and_status_per_loadpoint_over_the_api_and_the_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse
    import asyncio

    import httpx
    import jsonschema

    from pvcharge.api.cli import add_commands
    from pvcharge.api.server import start_api
    from pvcharge.config import ApiConfig

    clock = Clock()
    daemon, _, _, garage = two_loadpoints(clock)
    await run(daemon, clock, 3)
    server = await start_api(daemon, ApiConfig(listen="127.0.0.1", port=0))
    assert server.url is not None

    def cli(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="pvcharge")
        add_commands(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args([*argv, "--url", str(server.url)])
        result: int = args.func(args)
        return result

    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            status = (await client.get("/api/status")).json()
            schema = (await client.get("/api/openapi.json")).json()["components"]["schemas"]["Status"]
            jsonschema.validate(status, schema)  # two loadpoints, as documented
            answer = await client.put("/api/loadpoints/garage/mode", json={"mode": "off"})
            assert answer.status_code == 200
            modes = [(lp["name"], lp["mode"]) for lp in answer.json()["loadpoints"]]
            assert modes == [("carport", "fast"), ("garage", "off")]
            assert answer.json()["mode"] == "fast"  # the old key: the first loadpoint's
            missing = await client.put("/api/loadpoints/shed/mode", json={"mode": "off"})
            assert missing.status_code == 404 and missing.json()["loadpoints"] == ["carport", "garage"]
            bad = await client.put("/api/loadpoints/garage/mode", json={"mode": "turbo"})
            assert bad.status_code == 422
            assert (await client.put("/api/mode", json={"mode": "pv"})).json()["mode"] == "pv"
        assert daemon.loadpoint("carport").controller.mode == "pv"
        assert daemon.loadpoint("garage").controller.mode == "off"
        await run(daemon, clock, 1)
        assert offered(garage) == 0.0  # the mode took effect at the next cycle
        assert await asyncio.to_thread(cli, "mode", "garage", "minpv") == 0
        assert "garage: mode minpv (from the next control cycle)" in capsys.readouterr().out
        assert await asyncio.to_thread(cli, "mode", "fast") == 0
        assert daemon.loadpoint("carport").controller.mode == "fast"
        assert daemon.loadpoint("garage").controller.mode == "minpv"
        assert await asyncio.to_thread(cli, "mode", "shed", "fast") == 1
        assert "HTTP 404: no loadpoint 'shed'" in capsys.readouterr().err
        assert await asyncio.to_thread(cli, "mode", "garage", "turbo") == 2
        await run(daemon, clock, 1)
        assert await asyncio.to_thread(cli, "status") == 0
        lines = capsys.readouterr().out.splitlines()
        mine = [line for line in lines if line.startswith("loadpoint ")]
        assert len(mine) == 2, lines
        assert mine[0].startswith("loadpoint carport (priority 1): mode fast, 16 A on 3p")
        assert mine[1].startswith("loadpoint garage (priority 0): mode minpv")
    finally:
        await server.stop()


async def test_a_reload_keeps_modes_set_over_the_api_unless_the_configured_mode_changed() -> None:
    from pvcharge.errors import ConfigError

    clock = Clock()
    daemon = two_loadpoints(clock)[0]
    await run(daemon, clock, 2)
    daemon.set_mode("pv", source="test", loadpoint="carport")
    daemon.set_mode("minpv", source="test", loadpoint="garage")
    changed = TWO.replace("  - {name: garage, mode: fast,", "  - {name: garage, mode: off, priority: 2,")
    assert changed != TWO
    daemon.reload(parse_config(changed, environ={}))
    await run(daemon, clock, 1)
    assert daemon.loadpoint("carport").controller.mode == "pv"  # its configured mode did not change
    assert daemon.loadpoint("garage").controller.mode == "off"  # the edited config wins
    assert daemon.status()["loadpoints"][1]["priority"] == 2
    with pytest.raises(ConfigError, match="loadpoints: changed names or chargers"):
        daemon.reload(parse_config(TWO.replace("http://127.0.0.2", "http://127.0.0.3"), environ={}))


async def test_each_loadpoints_mode_set_over_the_api_survives_a_restart(tmp_path: Path) -> None:
    import json

    state = tmp_path / "state.json"
    state.write_text(json.dumps({"mode": "minpv", "changed_at_s": 1.0}))  # written before loadpoints
    clock = Clock()

    def restarted() -> Daemon:
        chargers = [Charger(clock), Charger(clock)]
        return Daemon(parse_config(TWO, environ={}), Meter(clock), chargers, clock=clock, state_file=state)  # type: ignore[arg-type]

    daemon = restarted()
    # the old file's one mode is the first loadpoint's; the garage keeps its configured mode
    assert [lp.controller.mode for lp in daemon.loadpoints] == ["minpv", "fast"]
    daemon.set_mode("off", source="api", loadpoint="garage")
    daemon.set_mode("pv", source="api", loadpoint="carport")
    daemon.set_mode("fast", source="plan", loadpoint="carport", persist=False)  # a plan's slot: not kept
    with capture_logs() as logs:
        again = restarted()
    assert [lp.controller.mode for lp in again.loadpoints] == ["pv", "off"]
    assert {e.get("loadpoint") for e in logs if e["event"] == "mode_restored"} == {"carport", "garage"}
    saved = json.loads(state.read_text())
    assert saved["mode"] == "pv"  # the first loadpoint's, for an older pvcharge reading this file
    assert saved["loadpoints"]["garage"]["mode"] == "off"
    # a reload that edits the garage's configured mode wins, and is what the next start restores
    edited = TWO.replace("name: garage, mode: fast", "name: garage, mode: minpv")
    again.reload(parse_config(edited, environ={}))
    await run(again, clock, 1)
    assert [lp.controller.mode for lp in restarted().loadpoints] == ["pv", "minpv"]
    # a damaged entry: that loadpoint's configured mode and a warning naming the key
    state.write_text(json.dumps({"mode": "pv", "loadpoints": {"garage": {"mode": "turbo"}}}))
    with capture_logs() as logs:
        assert [lp.controller.mode for lp in restarted().loadpoints] == ["pv", "fast"]
    warned = [e.get("error", "") for e in logs if e["event"] == "state_unreadable"]
    assert any("loadpoints.garage.mode" in error for error in warned)
    # a file that is not JSON: read once at start, so one warning, not one per loadpoint
    state.write_text("{not json")
    with capture_logs() as logs:
        assert [lp.controller.mode for lp in restarted().loadpoints] == ["fast", "fast"]
    assert [e["event"] for e in logs].count("state_unreadable") == 1


async def test_a_charger_that_refuses_all_writes_holds_the_others_only_while_it_may_draw_more() -> None:
    from pvcharge.errors import WritesBlocked

    clock = Clock()
    daemon, _, carport, garage = two_loadpoints(clock)
    await run(daemon, clock, 3)
    daemon.set_mode("off", source="test", loadpoint="carport")
    carport.errors = [WritesBlocked("charger carport", "IP blocked")]
    await run(daemon, clock, 3)
    assert offered(carport) == 16.0 and offered(garage) == 9.0  # carport may still draw its 16 A
    assert daemon.stats.held_increases == 3


async def test_a_paused_charger_that_refuses_all_writes_does_not_hold_the_others() -> None:
    from pvcharge.errors import WritesBlocked

    clock = Clock()
    daemon, _, carport, garage = two_loadpoints(clock)
    await run(daemon, clock, 3)
    daemon.set_mode("off", source="test", loadpoint="carport")
    await run(daemon, clock, 1)
    assert (offered(carport), offered(garage)) == (0.0, 16.0)
    daemon.set_mode("fast", source="test", loadpoint="carport")
    carport.errors = [WritesBlocked("charger carport", "IP blocked")]
    await run(daemon, clock, 1)  # carport's 16 A refused for good: it holds its pause
    assert offered(carport) == 0.0 and offered(garage) == 9.0  # (the site counts carport's 16 A)
    daemon.set_mode("off", source="test", loadpoint="carport")
    await run(daemon, clock, 1)
    assert offered(garage) == 16.0 and daemon.stats.held_increases == 0


async def test_systemds_status_line_names_each_loadpoint() -> None:
    from pvcharge.cli import _status_line

    clock = Clock()
    daemon, _, _, _ = two_loadpoints(clock)
    await run(daemon, clock, 3)
    assert daemon.last_cycle is not None
    line = _status_line(daemon.last_cycle)
    carport, garage = line.split("; ")
    assert carport.startswith("carport: mode fast") and "current 16 A on 3p" in carport
    assert garage.startswith("garage: mode fast") and "current 9 A on 3p" in garage
