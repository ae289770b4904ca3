"""Plans set, listed and cleared at run time (pvcharge.planning.runtime): the text and JSON forms, the
plan service keeping one in the state file, and each interface (API, CLI, MQTT) against a daemon with
the plan service."""

from __future__ import annotations

import argparse
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
from structlog.testing import capture_logs
from test_api import loopback
from test_mqtt import Watcher, mqtt_config, running
from test_mqtt import broker as broker  # (the fixture)
from test_plan_service import LIMITS, evening_site, make, run_config, service_of, utc

from pvcharge.api.plans import NO_PLANS
from pvcharge.api.server import start_api
from pvcharge.daemon import Daemon
from pvcharge.mqtt import MqttBridge
from pvcharge.mqtt_discovery import discovery_messages
from pvcharge.planning import runtime
from pvcharge.planning.cli import add_command
from pvcharge.planning.service import PlanService
from pvcharge.settings import SettingError
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.warp import WarpEmulator
from pvcharge.state import load_mode, load_plan, save_mode, save_plan


@pytest.fixture(autouse=True)
def utc_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run-time plans are in the daemon's zone: UTC here."""
    monkeypatch.setenv("TZ", "UTC")


# --- the text and JSON forms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20 kWh by 07:00", {"energy_kwh": 20.0, "deadline": "07:00"}),
        ("20,5kwh by 7:00", {"energy_kwh": 20.5, "deadline": "07:00"}),
        ("80 % of 60 kWh by 7:30", {"soc_pct": 80.0, "capacity_kwh": 60.0, "deadline": "07:30"}),
        ("15 kWh by 18:00 on Mon, wed", {"energy_kwh": 15.0, "deadline": "18:00", "weekdays": "mon,wed"}),
    ],
)
def test_the_text_form_reads_as_the_json_form(text: str, expected: dict[str, Any]) -> None:
    assert runtime.parse_text(text) == expected
    entry, repeating = runtime.parse_command(text)
    assert repeating == ("weekdays" in expected)
    assert runtime.parse_command(runtime.as_text(entry, repeating=repeating)) == (entry, repeating)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ("20 kWh at 07:00", "plan"),
        ("80 % by 07:00", "capacity_kwh"),  # a SoC needs the battery's capacity
        ("20 kWh by 24:00", "deadline"),
        ('{"energy_kwh": 20}', "deadline"),
        ('{"energy_kwh": 20, "deadline": "07:00", "soc_pct": 50, "capacity_kwh": 60}', "energy_kwh"),
        ('{"energy_kwh": 20, "deadline": "07:00", "capacity_kwh": 60}', "capacity_kwh"),
        ('{"energy_kwh": 0.01, "deadline": "07:00"}', "energy_kwh"),
        ('{"energy_kwh": true, "deadline": "07:00"}', "energy_kwh"),
        ('{"energy_kwh": 20, "deadline": "07:00", "weekdays": "Mon"}', "weekdays"),
        ('{"energy_kwh": 20, "deadline": "07:00", "at": 1}', "at"),
        ("{not json", "plan"),
    ],
)
def test_a_bad_plan_names_its_key(data: str, key: str) -> None:
    with pytest.raises(SettingError) as caught:
        runtime.parse_command(data)
    assert caught.value.key == key


# --- the service: one-off, repeating, kept in the state file -------------------------------------


async def test_a_one_off_plan_steers_like_a_configured_one_and_is_dropped_after_its_deadline(
    tmp_path: Path,
) -> None:
    daemon, service, clock, _ = make(tmp_path, utc(7, 22))
    service.plans = ()  # only the run-time plan
    await daemon.cycle()
    assert await service.step(clock()) is None  # no plan in force
    save_mode(tmp_path / "state.json", "minpv", clock())
    daemon.set_mode("pv", source="api")
    set_ = service.set_plan(runtime.parse_json({"energy_kwh": 11.04, "deadline": "07:00"}), source="api")
    assert set_.once and set_.deadline_s == utc(8, 7)
    plan = await service.step(clock())
    assert plan is not None and plan.met
    assert [datetime.fromtimestamp(s.start_s, UTC).hour for s in plan.grid_slots] == [2] * 4
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["mode"] == "pv" and saved["plan"]["energy_kwh"] == 11.04  # the mode kept beside it

    # a restart finds it again, and it still steers
    restarted = Daemon(daemon.config, daemon.meter, daemon.charger, clock=clock, state_file=daemon.state_file)
    again = service_of(restarted)
    assert again.runtime == set_
    await restarted.cycle()
    clock.t_s = utc(8, 2)
    await again.step(clock())
    assert restarted.mode == "fast"
    assert again.describe()["plans"][0]["text"] == "11.04 kWh by 07:00"

    # past the deadline: dropped, from the state file too, and the user's mode is back
    clock.t_s = utc(8, 7)
    assert await again.step(clock()) is None
    assert again.runtime is None and restarted.mode == "pv"
    saved = json.loads((tmp_path / "state.json").read_text())
    assert "plan" not in saved and load_mode(tmp_path / "state.json") == "pv"


async def test_a_one_off_saved_before_a_long_outage_is_not_restored(tmp_path: Path) -> None:
    daemon, service, clock, _ = make(tmp_path, utc(7, 22))
    service.set_plan(runtime.parse_json({"energy_kwh": 5, "deadline": "07:00"}), source="mqtt")
    clock.t_s = utc(8, 9)
    with capture_logs() as logs:
        again = PlanService(daemon, (), limits=LIMITS, prices=None, forecast=None, fallback_price_per_kwh=0.3)
    assert again.runtime is None
    assert [e["event"] for e in logs] == ["plan_expired"]
    assert "plan" not in json.loads((tmp_path / "state.json").read_text())


async def test_a_repeating_plan_stays_until_cleared(tmp_path: Path) -> None:
    daemon, service, clock, _ = make(tmp_path, utc(7, 22))  # Monday 7 December 2026
    service.plans = ()
    entry, repeating = runtime.parse_command("3 kWh by 06:00 on wed")
    service.set_plan(entry, source="api", repeating=repeating)
    await daemon.cycle()
    await service.step(clock())
    assert service.target is not None and service.target.deadline_s == utc(9, 6)
    clock.t_s = utc(9, 7)
    await service.step(clock())
    assert service.target is not None and service.target.deadline_s == utc(16, 6)  # next Wednesday
    assert service.clear_plan(source="api") and not service.clear_plan(source="api")
    await service.step(clock())
    assert service.target is None and service.plan is None


def test_the_state_file_keeps_mode_and_plan_side_by_side(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert save_plan(path, {"energy_kwh": 5.0, "deadline": "07:00"}) and load_mode(path) is None
    assert save_mode(path, "fast", 1.0) and load_plan(path) == {"energy_kwh": 5.0, "deadline": "07:00"}
    assert save_plan(path, None) and load_mode(path) == "fast" and load_plan(path) is None


async def test_a_damaged_saved_plan_is_ignored_with_a_warning(tmp_path: Path) -> None:
    daemon, *_ = make(tmp_path, utc(7, 22))
    save_plan(tmp_path / "state.json", {"energy_kwh": "lots", "deadline": "07:00"})
    with capture_logs() as logs:
        again = service_of(daemon)
    assert again.runtime is None
    [warning] = [e for e in logs if e["event"] == "plan_unreadable"]
    assert warning["error"].startswith("energy_kwh: expected a number")


# --- the API -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(tmp_path: Path, *, with_plans: bool = True) -> AsyncIterator[tuple[str, PlanService]]:
    daemon, service, clock, _ = make(tmp_path, utc(7, 22))
    service.plans = ()
    await daemon.cycle()
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, clock))
    plans = {service.loadpoint: service} if with_plans else None
    server = await start_api(daemon, loopback(), loadpoint_plans=plans)
    assert server.url is not None
    try:
        yield server.url, service
    finally:
        stop.set()
        await task
        await server.stop()


async def test_the_api_sets_lists_and_clears_the_plan(tmp_path: Path) -> None:
    async with served(tmp_path) as (url, service), httpx.AsyncClient(base_url=url) as client:
        empty = (await client.get("/api/plans")).json()
        assert empty["plans"] == [] and empty["plan"] is None and empty["car_connected"]
        answer = await client.put("/api/plans/next", json={"energy_kwh": 11.04, "deadline": "07:00"})
        assert answer.status_code == 200, answer.text
        state = answer.json()
        assert [(p["text"], p["source"], p["once"], p["next_deadline_s"]) for p in state["plans"]] == [
            ("11.04 kWh by 07:00", "api", True, utc(8, 7))
        ]
        plan = state["plan"]  # the re-plan done before the answer
        assert (
            plan["met"]
            and plan["need_kwh"] == 11.04
            and plan["notes"] == ["no solar forecast: assuming no PV"]
        )
        grid = [s for s in plan["slots"] if s["power_w"] > 0]
        assert [s["start_s"] for s in grid] == [utc(8, 2, m) for m in (0, 15, 30, 45)]
        assert plan["summary"].startswith("plan 11.04 kWh by 07:00: met") and "02:00–03:00" in plan["summary"]
        assert state["target"] == {
            "source": "api",
            "deadline_s": utc(8, 7),
            "energy_kwh": 11.04,
            "charged_kwh": 0.0,
        }
        assert (await client.get("/api/plans")).json() == state
        assert service.runtime is not None

        bad = await client.put("/api/plans/next", json={"energy_kwh": 20, "deadline": "7 am"})
        assert bad.status_code == 422 and bad.json()["error"].startswith("deadline: ")
        assert service.runtime is not None and service.runtime.entry.energy_kwh == 11.04  # unchanged

        cleared = await client.delete("/api/plans/next")
        assert cleared.status_code == 200 and cleared.json()["plans"] == [] and cleared.json()["plan"] is None
        assert service.runtime is None


async def test_without_a_plan_service_the_plan_routes_answer_404(tmp_path: Path) -> None:
    async with served(tmp_path, with_plans=False) as (url, _), httpx.AsyncClient(base_url=url) as client:
        for method in ("GET", "DELETE"):
            path = "/api/plans" if method == "GET" else "/api/plans/next"
            answer = await client.request(method, path)
            assert answer.status_code == 404 and "no plan service" in answer.json()["error"]
        # the plan chart says the same
        errors = {(await client.get(path)).json()["error"] for path in ("/api/plans", "/api/forecast")}
        assert errors == {NO_PLANS}


# --- the CLI -------------------------------------------------------------------------------------


def _parse(*argv: str) -> Any:
    parser = argparse.ArgumentParser(prog="pvcharge")
    add_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def test_cli_plan_set_show_and_clear_talk_to_the_running_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with served(tmp_path) as (url, service):
        args = _parse("plan", "set", "11.04 kWh by 7:00", "--url", url)
        assert await asyncio.to_thread(args.func, args) == 0
        out = capsys.readouterr().out
        assert "api     11.04 kWh by 07:00, once (next: Tue 08 07:00)" in out, out
        assert "plan 11.04 kWh by 07:00: met" in out and "note: no solar forecast" in out, out
        assert service.runtime is not None and service.runtime.source == "api"

        args = _parse("plan", "--url", url, "--json")
        assert await asyncio.to_thread(args.func, args) == 0
        assert json.loads(capsys.readouterr().out)["plans"][0]["text"] == "11.04 kWh by 07:00"

        args = _parse("plan", "set", "lots by 7", "--url", url)
        assert await asyncio.to_thread(args.func, args) == 2
        assert 'expected "20 kWh by 07:00"' in capsys.readouterr().err

        args = _parse("plan", "clear", "--url", url)
        assert await asyncio.to_thread(args.func, args) == 0
        assert "no plans (set one" in capsys.readouterr().out
        assert service.runtime is None


# --- MQTT and Home Assistant ---------------------------------------------------------------------


def test_home_assistant_gets_a_text_entity_a_clear_button_and_the_summary() -> None:
    config = mqtt_config(1883)
    plain = discovery_messages(config)
    messages = discovery_messages(config, plans=True)
    added = {topic: payload for topic, payload in messages.items() if topic not in plain}
    assert sorted(added) == [
        "homeassistant/button/pvcharge/clear_plan/config",
        "homeassistant/sensor/pvcharge/plan_summary/config",
        "homeassistant/text/pvcharge/plan/config",
    ]
    text = added["homeassistant/text/pvcharge/plan/config"]
    assert (text["state_topic"], text["command_topic"]) == ("pvcharge/plan", "pvcharge/plan/set")
    assert text["max"] == 255 and text["unique_id"] == "pvcharge_plan"
    button = added["homeassistant/button/pvcharge/clear_plan/config"]
    assert button["command_topic"] == "pvcharge/plan/clear" and "state_topic" not in button


async def test_mqtt_plan_set_and_clear_round_trip(tmp_path: Path, broker: Any) -> None:
    daemon, service, clock, _ = make(tmp_path, utc(7, 22))
    service.plans = ()
    await daemon.cycle()
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, clock))
    bridge = MqttBridge(daemon, mqtt_config(broker.port), loadpoint_plans={service.loadpoint: service})
    async with Watcher(broker.port) as setup:  # a retained command left over from some tool
        await setup.publish("pvcharge/plan/set", "5 kWh by 05:00", retain=True)
    try:
        with capture_logs() as logs:
            async with running(bridge), Watcher(broker.port) as ha:
                await ha.wait(lambda: ha.json("pvcharge/plan") is not None, what="pvcharge/plan")
                assert ha.json("pvcharge/plan")["plans"] == []
                await ha.publish("pvcharge/plan/set", "not a plan")
                await ha.publish("pvcharge/plan/set", "11.04 kWh by 07:00")
                await ha.wait(lambda: service.runtime is not None, what="the plan set")
                await service.request_replan().wait()
                await daemon.cycle()  # the bridge publishes after each cycle
                await ha.wait(
                    lambda: (ha.json("pvcharge/plan") or {}).get("plan") is not None,
                    what="the plan published",
                )
                reasons = [e["reason"] for e in logs if e["event"] == "mqtt_command_ignored"]
                published = ha.json("pvcharge/plan")
                assert [p["text"] for p in published["plans"]] == ["11.04 kWh by 07:00"]
                assert published["plans"][0]["source"] == "mqtt" and published["plan"]["met"]
                assert len(reasons) == 2 and "retained" in reasons[0] and "expected" in reasons[1], reasons
                await ha.publish("pvcharge/plan/set", "")  # Home Assistant's text entity emptied
                await ha.wait(lambda: service.runtime is None, what="the plan cleared")
                await ha.publish(
                    "pvcharge/plan/set", '{"energy_kwh": 2, "deadline": "06:00", "weekdays": "tue"}'
                )
                await ha.wait(lambda: service.runtime is not None, what="the JSON plan set")
                assert service.runtime is not None and not service.runtime.once
                await ha.publish("pvcharge/plan/clear", "")
                await ha.wait(lambda: service.runtime is None, what="the plan cleared by plan/clear")
    finally:
        stop.set()
        await task


# --- the real daemon: kept across a restart ----------------------------------------------------


async def test_pvcharge_run_keeps_a_plan_set_over_the_api_across_a_restart(tmp_path: Path) -> None:
    site = evening_site()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    deadline = datetime.fromtimestamp(time.time() + 7200, UTC).strftime("%H:%M")
    answers: list[dict[str, Any]] = []

    def asked(method: str, body: dict[str, Any] | None = None) -> bool:
        path = "/api/plans/next" if method == "PUT" else "/api/plans"
        try:
            answer = httpx.request(method, url + path, json=body, timeout=5)
        except httpx.TransportError:
            return False  # not listening yet
        answers.append(answer.json())
        return answer.status_code == 200

    async with HuaweiEmulator(site) as meter, WarpEmulator(site) as charger:
        path = run_config(tmp_path, meter, charger, f"api: {{port: {port}}}\n")

        def set_then_planned() -> bool:  # (a plan is made once the daemon has seen the car)
            if not answers:
                return asked("PUT", {"energy_kwh": 5, "deadline": deadline}) and False
            return asked("GET") and answers[-1]["plan"] is not None

        set_, code, log = await run_daemon(path, until=set_then_planned, polls=300)
        assert set_ and code == 0, log
        assert answers[0]["plans"][0]["text"] == f"5 kWh by {deadline}"
        assert answers[-1]["plan"]["met"], answers[-1]  # 5 kWh in 2 h at up to 3.7 kW (1 phase, 16 A)
        saved = json.loads((tmp_path / "state.json").read_text())["plan"]
        assert saved["energy_kwh"] == 5 and saved["source"] == "api"

        found, code, log = await run_daemon(path, until=lambda: asked("GET"), polls=300)
    assert found and code == 0, log
    assert "plan_restored" in log
    [entry] = answers[-1]["plans"]
    assert (entry["text"], entry["source"], entry["once"]) == (f"5 kWh by {deadline}", "api", True)
