"""The plan set at run time for any loadpoint, not only the first: the state file
(``loadpoints.<name>.plan``), the API (``/api/loadpoints/{name}/plans``, its chart
``/api/loadpoints/{name}/forecast``), MQTT
(``P/loadpoints/<name>/plan``), ``pvcharge plan --loadpoint`` and ``pvcharge run`` with two WARPs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sitestub import free_port, run_daemon
from test_api import loopback
from test_daemon_loadpoints import night_with_two_cars, two_warps
from test_mqtt import Watcher, mqtt_config, running
from test_mqtt import broker as broker  # (the fixture)
from test_plan_loadpoints import TWO, two_loadpoints
from test_plan_runtime import _parse
from test_plan_service import service_of, utc

from pvcharge.api.server import start_api
from pvcharge.daemon import Daemon
from pvcharge.mqtt import MqttBridge
from pvcharge.mqtt_discovery import discovery_messages
from pvcharge.planning.service import PlanService
from pvcharge.sim.site import CarParams
from pvcharge.state import load_mode, load_plan, save_mode, save_plan

#: the two loadpoints of test_plan_loadpoints without plans: (run-time plans only)
NO_PLANS = TWO[: TWO.index("plans:")]


@pytest.fixture(autouse=True)
def utc_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run-time plans are in the daemon's zone: UTC here."""
    monkeypatch.setenv("TZ", "UTC")


# --- the state file ------------------------------------------------------------------------------


def test_each_loadpoints_plan_is_kept_under_its_name_the_firsts_also_top_level(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    garage, carport = {"energy_kwh": 5.0, "deadline": "07:00"}, {"energy_kwh": 9.0, "deadline": "06:00"}
    assert save_plan(path, garage, "garage", first=False)
    assert load_plan(path, "garage", first=False) == garage
    assert load_plan(path, "carport") is None and "plan" not in json.loads(path.read_text())
    assert save_plan(path, carport, "carport")
    assert json.loads(path.read_text())["plan"] == carport  # (what older versions read)
    assert load_plan(path, "carport") == carport and load_plan(path, "garage", first=False) == garage
    # a mode saved for a loadpoint keeps its plan, and the other way round
    assert save_mode(path, "minpv", 1.0, "garage", first=False)
    assert (
        load_plan(path, "garage", first=False) == garage and load_mode(path, "garage", first=False) == "minpv"
    )
    assert save_plan(path, None, "garage", first=False)
    assert (
        load_plan(path, "garage", first=False) is None and load_mode(path, "garage", first=False) == "minpv"
    )
    assert load_plan(path, "carport") == carport
    assert save_plan(path, None, "carport") and "plan" not in json.loads(path.read_text())
    assert load_plan(path, "carport") is None


def test_a_state_file_from_before_keeps_its_plan_for_the_first_loadpoint_only(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"plan": {"energy_kwh": 5.0, "deadline": "07:00"}}))
    assert load_plan(path, "carport") == {"energy_kwh": 5.0, "deadline": "07:00"}
    assert load_plan(path, "garage", first=False) is None


async def test_the_second_loadpoints_plan_is_back_after_a_restart_and_dropped_after_its_deadline(
    tmp_path: Path,
) -> None:
    daemon, clock, _, _ = two_loadpoints(tmp_path, NO_PLANS)
    carport, garage = service_of(daemon, loadpoint="carport"), service_of(daemon, loadpoint="garage")
    assert garage.runtime is None and garage.takes_runtime
    set_ = garage.set_plan(_entry(11.04, "07:00"), source="api")
    assert set_.deadline_s == utc(8, 7) and carport.runtime is None

    restarted = restart(daemon)
    again = {name: service_of(restarted, loadpoint=name) for name in ("carport", "garage")}
    assert again["garage"].runtime == set_ and again["carport"].runtime is None
    await restarted.cycle()
    plan = await again["garage"].step(clock())
    assert plan is not None and plan.need_kwh == 11.04
    assert again["carport"].target is None and await again["carport"].step(clock()) is None

    clock.t_s = utc(8, 7, 1)  # past its deadline: not restored, and gone from the file
    later = restart(daemon)
    assert service_of(later, loadpoint="garage").runtime is None
    assert load_plan(tmp_path / "state.json", "garage", first=False) is None


def restart(daemon: Daemon) -> Daemon:
    """``daemon`` started again: the same config, devices, clock and state file."""
    chargers = [lp.charger for lp in daemon.loadpoints]
    return Daemon(daemon.config, daemon.meter, chargers, clock=daemon.clock, state_file=daemon.state_file)


def _entry(energy_kwh: float, deadline: str) -> Any:
    from pvcharge.planning.runtime import parse_json

    return parse_json({"energy_kwh": energy_kwh, "deadline": deadline})


# --- the API -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Daemon, dict[str, PlanService]]]:
    """Two loadpoints without plans:, a plan service each (running), the API serving both."""
    daemon, clock, _, _ = two_loadpoints(tmp_path, NO_PLANS)
    services = {name: service_of(daemon, loadpoint=name) for name in ("carport", "garage")}
    await daemon.cycle()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(service.run(stop, clock)) for service in services.values()]
    server = await start_api(daemon, loopback(), loadpoint_plans=services)
    assert server.url is not None
    try:
        yield server.url, daemon, services
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await server.stop()


async def test_the_api_sets_lists_and_clears_the_second_loadpoints_plan(tmp_path: Path) -> None:
    async with served(tmp_path) as (url, _, services), httpx.AsyncClient(base_url=url) as client:
        garage = "/api/loadpoints/garage/plans"
        answer = await client.put(f"{garage}/next", json={"energy_kwh": 11.04, "deadline": "07:00"})
        assert answer.status_code == 200, answer.text
        state = answer.json()
        assert state["loadpoint"] == "garage"
        assert [(p["text"], p["source"], p["once"]) for p in state["plans"]] == [
            ("11.04 kWh by 07:00", "api", True)
        ]
        assert (
            state["plan"] is not None and state["plan"]["met"] and state["target"]["deadline_s"] == utc(8, 7)
        )
        assert (await client.get(garage)).json() == state
        assert services["garage"].runtime is not None and services["carport"].runtime is None

        first = (await client.get("/api/plans")).json()  # the old routes: still the first loadpoint's
        assert first["loadpoint"] == "carport" and first["plans"] == [] and first["plan"] is None
        assert (await client.get("/api/loadpoints/carport/plans")).json() == first
        saved = json.loads((tmp_path / "state.json").read_text())
        assert saved["loadpoints"]["garage"]["plan"]["energy_kwh"] == 11.04 and "plan" not in saved

        bad = await client.put(f"{garage}/next", json={"energy_kwh": 20, "deadline": "7 am"})
        assert bad.status_code == 422 and bad.json()["error"].startswith("deadline: ")
        runtime = services["garage"].runtime
        assert runtime is not None and runtime.entry.energy_kwh == 11.04  # unchanged

        cleared = await client.delete(f"{garage}/next")
        assert cleared.status_code == 200 and cleared.json()["plans"] == [] and cleared.json()["plan"] is None
        assert services["garage"].runtime is None


async def test_an_unknown_loadpoint_is_a_404_naming_the_loadpoints(tmp_path: Path) -> None:
    async with served(tmp_path) as (url, _, services), httpx.AsyncClient(base_url=url) as client:
        for method, path in (("GET", ""), ("PUT", "/next"), ("DELETE", "/next")):
            body = {"energy_kwh": 5, "deadline": "07:00"} if method == "PUT" else None
            answer = await client.request(method, f"/api/loadpoints/barn/plans{path}", json=body)
            assert answer.status_code == 404, (method, answer.text)
            assert answer.json() == {
                "error": "no loadpoint 'barn' (expected one of carport, garage)",
                "loadpoints": ["carport", "garage"],
            }
        assert all(service.runtime is None for service in services.values())


async def test_a_loadpoint_without_a_plan_service_is_a_404_saying_so(tmp_path: Path) -> None:
    daemon, _, _, _ = two_loadpoints(tmp_path, NO_PLANS)
    first = service_of(daemon, loadpoint="carport")
    server = await start_api(daemon, loopback(), loadpoint_plans={"carport": first})  # (the first's only)
    assert server.url is not None
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            answer = await client.get("/api/loadpoints/garage/plans")
            assert answer.status_code == 404
            assert (
                answer.json()["error"]
                == "no plan service runs for loadpoint 'garage' (expected one of carport)"
            )
            assert (await client.get("/api/loadpoints/carport/plans")).json()["loadpoint"] == "carport"
    finally:
        await server.stop()


async def test_each_loadpoints_forecast_shows_its_own_plan_the_first_stays_at_api_forecast(
    tmp_path: Path,
) -> None:
    async with served(tmp_path) as (url, _, services), httpx.AsyncClient(base_url=url) as client:
        put = await client.put(
            "/api/loadpoints/garage/plans/next", json={"energy_kwh": 11.04, "deadline": "07:00"}
        )
        assert put.status_code == 200, put.text
        garage = await client.get("/api/loadpoints/garage/forecast")
        assert garage.status_code == 200, garage.text
        plan = garage.json()["plan"]
        assert (plan["energy_kwh"], plan["deadline"], plan["deadline_s"]) == (11.04, "07:00", utc(8, 7))
        first = (await client.get("/api/forecast")).json()  # the carport's: no plan
        assert first["plan"] is None and first["slots"]
        assert (await client.get("/api/loadpoints/carport/forecast")).json() == first
        assert services["carport"].runtime is None

        unknown = await client.get("/api/loadpoints/barn/forecast")
        assert unknown.status_code == 404
        assert unknown.json() == {
            "error": "no loadpoint 'barn' (expected one of carport, garage)",
            "loadpoints": ["carport", "garage"],
        }


async def test_the_forecast_of_a_loadpoint_without_a_plan_service_is_a_404_saying_so(
    tmp_path: Path,
) -> None:
    daemon, _, _, _ = two_loadpoints(tmp_path, NO_PLANS)
    first = service_of(daemon, loadpoint="carport")
    server = await start_api(daemon, loopback(), loadpoint_plans={"carport": first})
    assert server.url is not None
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            answer = await client.get("/api/loadpoints/garage/forecast")
            assert answer.status_code == 404
            assert answer.json() == {
                "error": "no plan service runs for loadpoint 'garage' (expected one of carport)",
                "loadpoints": ["carport", "garage"],
            }
            assert (await client.get("/api/loadpoints/carport/forecast")).status_code == 200
    finally:
        await server.stop()
    bare = await start_api(daemon, loopback())  # no plan service at all
    assert bare.url is not None
    try:
        async with httpx.AsyncClient(base_url=bare.url) as client:
            for path in ("/api/forecast", "/api/loadpoints/carport/forecast"):
                assert (await client.get(path)).status_code == 404, path
    finally:
        await bare.stop()


# --- the CLI -------------------------------------------------------------------------------------


async def test_cli_plan_loadpoint_sets_shows_and_clears_that_loadpoints_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with served(tmp_path) as (url, _, services):
        args = _parse("plan", "set", "11.04 kWh by 7:00", "--loadpoint", "garage", "--url", url)
        assert await asyncio.to_thread(args.func, args) == 0
        out = capsys.readouterr().out
        assert "api     11.04 kWh by 07:00, once (next: Tue 08 07:00)" in out, out
        assert services["garage"].runtime is not None and services["carport"].runtime is None

        args = _parse("plan", "--loadpoint", "garage", "--url", url, "--json")
        assert await asyncio.to_thread(args.func, args) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["loadpoint"] == "garage" and shown["plans"][0]["text"] == "11.04 kWh by 07:00"

        args = _parse("plan", "--url", url, "--json")  # without --loadpoint: the first's
        assert await asyncio.to_thread(args.func, args) == 0
        assert json.loads(capsys.readouterr().out)["plans"] == []

        args = _parse("plan", "clear", "-l", "barn", "--url", url)
        assert await asyncio.to_thread(args.func, args) == 1
        assert "no loadpoint 'barn' (expected one of carport, garage)" in capsys.readouterr().err
        assert services["garage"].runtime is not None

        args = _parse("plan", "clear", "--loadpoint", "garage", "--url", url)
        assert await asyncio.to_thread(args.func, args) == 0
        assert "no plans (set one" in capsys.readouterr().out
        assert services["garage"].runtime is None

        args = _parse("plan", "--local", "--loadpoint", "garage")
        assert await asyncio.to_thread(args.func, args) == 2
        assert "not with --local" in capsys.readouterr().err


# --- MQTT ----------------------------------------------------------------------------------------


async def test_mqtt_sets_and_clears_the_second_loadpoints_plan(tmp_path: Path, broker: Any) -> None:
    daemon, clock, _, _ = two_loadpoints(tmp_path, NO_PLANS)
    services = {name: service_of(daemon, loadpoint=name) for name in ("carport", "garage")}
    await daemon.cycle()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(service.run(stop, clock)) for service in services.values()]
    bridge = MqttBridge(daemon, mqtt_config(broker.port), loadpoint_plans=services)
    topic = "pvcharge/loadpoints/garage/plan"
    try:
        async with running(bridge), Watcher(broker.port) as ha:
            await ha.wait(lambda: ha.json(topic) is not None, what=topic)
            assert ha.json(topic)["plans"] == []
            await ha.wait(lambda: ha.json("pvcharge/plan") is not None, what="pvcharge/plan")
            await ha.publish(f"{topic}/set", "11.04 kWh by 07:00")
            await ha.wait(lambda: services["garage"].runtime is not None, what="the plan set")
            assert services["carport"].runtime is None
            await services["garage"].request_replan().wait()
            await daemon.cycle()  # the bridge publishes after each cycle
            await ha.wait(lambda: (ha.json(topic) or {}).get("plan") is not None, what="the plan published")
            published = ha.json(topic)
            assert [p["text"] for p in published["plans"]] == ["11.04 kWh by 07:00"]
            assert published["plans"][0]["source"] == "mqtt" and published["plan"]["met"]
            assert ha.json("pvcharge/plan")["plans"] == []  # the old topic: the first loadpoint's
            await ha.publish(f"{topic}/clear", "")
            await ha.wait(lambda: services["garage"].runtime is None, what="the plan cleared")
            entity = "homeassistant/text/pvcharge/lp_garage_plan/config"
            await ha.wait(lambda: ha.json(entity) is not None, what="the garage's plan entity")
            assert ha.json(entity)["command_topic"] == f"{topic}/set"
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def test_home_assistant_gets_the_plan_entities_on_each_loadpoints_device() -> None:
    config = mqtt_config(1883)
    messages = discovery_messages(config, plans=True, loadpoints=["carport", "garage"])
    text = messages["homeassistant/text/pvcharge/lp_garage_plan/config"]
    assert (text["state_topic"], text["command_topic"]) == (
        "pvcharge/loadpoints/garage/plan",
        "pvcharge/loadpoints/garage/plan/set",
    )
    assert (
        text["device"]["identifiers"] == ["pvcharge_lp_garage"]
        and text["unique_id"] == "pvcharge_lp_garage_plan"
    )
    button = messages["homeassistant/button/pvcharge/lp_garage_clear_plan/config"]
    assert button["command_topic"] == "pvcharge/loadpoints/garage/plan/clear"
    summary = messages["homeassistant/sensor/pvcharge/lp_garage_plan_summary/config"]
    assert summary["state_topic"] == "pvcharge/loadpoints/garage/plan"
    site = messages["homeassistant/text/pvcharge/plan/config"]  # the first's, on the site's device, as before
    assert site["state_topic"] == "pvcharge/plan" and site["device"]["identifiers"] == ["pvcharge"]
    only = discovery_messages(
        config, plans=True, loadpoints=["carport", "garage"], plan_loadpoints=["garage"]
    )
    assert not any("lp_carport_plan" in topic for topic in only) and text in only.values()
    assert not any("lp_" in topic for topic in discovery_messages(config, plans=True, loadpoints=["main"]))


# --- pvcharge run --------------------------------------------------------------------------------


async def test_pvcharge_run_a_plan_set_over_the_api_for_the_garage_raises_the_garage_only(
    tmp_path: Path,
) -> None:
    """``pvcharge run`` with two WARPs in pv at night (no PV), no ``plans:``: 60 kWh due in 30 min set
    for the garage over the API switch the garage to fast (16 A); the carport stays paused in pv. The
    plan is back after a restart."""
    site, cars = night_with_two_cars(CarParams(plug_in_s=0.0, plug_out_s=23 * 3600.0))  # in all night
    deadline = datetime.fromtimestamp(time.time() + 1800, UTC).strftime("%H:%M")
    port = free_port()
    plans_url = f"http://127.0.0.1:{port}/api/loadpoints/garage/plans"
    answers: list[httpx.Response] = []

    def ask(method: str, path: str = "", body: dict[str, Any] | None = None) -> bool:
        try:
            answers.append(httpx.request(method, plans_url + path, json=body, timeout=5))
        except httpx.TransportError:
            return False  # not listening yet
        return answers[-1].status_code == 200

    async with two_warps(site, cars) as (head, url):
        path = tmp_path / "pvcharge.yaml"
        path.write_text(
            head + f"state: {{file: {tmp_path / 'state.json'}}}\nsessions: {{enabled: false}}\n"
            f"api: {{port: {port}}}\n"
            "loadpoints:\n"
            f"  - {{name: carport, priority: 1, charger: {{type: warp, url: '{url['carport']}'}}}}\n"
            f"  - {{name: garage, charger: {{type: warp, url: '{url['garage']}'}}}}\n"
        )
        offers: dict[str, float] = {}

        def set_then_garage_at_16_a() -> bool:
            if not answers or answers[-1].status_code != 200:
                ask("PUT", "/next", {"energy_kwh": 60, "deadline": deadline})
                return False
            offers.update({n: c.state().offered_current_a for n, c in cars.items()})
            return offers["garage"] == 16.0

        held, code, log = await run_daemon(path, until=set_then_garage_at_16_a, polls=300)
        assert code == 0, log
        assert held, (log, [a.text for a in answers])
        assert offers["carport"] == 0.0, offers
        assert answers[-1].json()["plans"][0]["text"] == f"60 kWh by {deadline}"
        mode_lines = [line for line in log.splitlines() if "mode_changed" in line]
        assert any("loadpoint=garage" in line and "source=plan" in line for line in mode_lines), log
        assert not any("loadpoint=carport" in line for line in mode_lines), log

        answers.clear()
        found, code, log = await run_daemon(path, until=lambda: ask("GET"), polls=300)
    assert found and code == 0, log
    assert "plan_restored" in log and "loadpoint=garage" in log
    [entry] = answers[-1].json()["plans"]
    assert (entry["text"], entry["source"], entry["once"]) == (f"60 kWh by {deadline}", "api", True)
