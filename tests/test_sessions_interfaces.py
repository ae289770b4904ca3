"""The session history's interfaces: /api/sessions, /api/sessions.csv, /api/energy, /metrics and
``pvcharge sessions`` (MQTT's P/energy is in test_mqtt.py)."""

from __future__ import annotations

import csv
import dataclasses
import io
import sqlite3
from datetime import UTC
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_api import cycles, loopback, make_daemon

from pvcharge.api.server import start_api
from pvcharge.cli import main
from pvcharge.readings import SiteReading
from pvcharge.sessions import SessionRecorder
from pvcharge.sessions.export import CSV_COLUMNS, parse_bound
from pvcharge.sessions.store import SessionStore
from pvcharge.sessions.tally import DayTotals, Session, Tariff

DAY_S = 86400.0
# a closed session of two days before the fake clock's now (1_700_000_000 = 2023-11-14 22:13:20 UTC)
OLD = Session(
    "warp",
    start_s=1_700_000_000 - 2 * DAY_S,
    end_s=1_700_000_000 - 2 * DAY_S + 7200,
    updated_s=1_700_000_000 - 2 * DAY_S + 7200,
    energy_wh=7000,
    pv_wh=5000,
    battery_wh=1000,
    grid_wh=1000,
    peak_power_w=3680,
    phases=[1],
    starts=2,
    cost=0.3,
    savings=1.32,
)


def recorder_with_history(path: Path) -> SessionRecorder:
    store = SessionStore(path)
    store.write(
        [dataclasses.replace(OLD)], [DayTotals("2023-11-12", pv_wh=21000, car_wh=7000, car_pv_wh=5000)]
    )
    return SessionRecorder(store, "warp", Tariff(0.30, 0.08, "EUR"), tz=UTC)


async def test_sessions_json_csv_filters_and_errors(tmp_path: Path) -> None:
    daemon, _, _, clock = make_daemon()
    recorder = recorder_with_history(tmp_path / "s.db")
    daemon.listeners.append(recorder)
    await cycles(daemon, clock, 13)  # a minute at 5 s: the car charges from PV (5.2 kW, house 600 W)
    server = await start_api(daemon, loopback(), recorder)
    try:
        async with httpx.AsyncClient(base_url=str(server.url)) as client:
            body = (await client.get("/api/sessions")).json()
            old, live = body["sessions"]
            assert old["start"] == "2023-11-12T22:13:20+00:00" and old["end"] == "2023-11-13T00:13:20+00:00"
            assert (old["energy_kwh"], old["pv_kwh"], old["battery_kwh"], old["grid_kwh"]) == (7, 5, 1, 1)
            assert (old["solar_share"], old["open"], old["duration_s"], old["phases"]) == (
                0.857,
                False,
                7200,
                [1],
            )
            assert live["open"] is True and live["end"] is None and live["energy_kwh"] > 0.05
            assert live["pv_kwh"] == live["energy_kwh"] and live["solar_share"] == 1.0
            # sessions started on 2023-11-14 (UTC) only; a date for "to" includes that day
            today = (await client.get("/api/sessions", params={"from": "2023-11-14"})).json()["sessions"]
            assert [s["open"] for s in today] == [True]
            until = (await client.get("/api/sessions", params={"to": "2023-11-12"})).json()["sessions"]
            assert [s["id"] for s in until] == [old["id"]]
            none = await client.get("/api/sessions", params={"loadpoint": "garage"})
            assert none.json() == {"sessions": []}
            bad = await client.get("/api/sessions", params={"from": "yesterday"})
            assert bad.status_code == 400 and "from: expected a date YYYY-MM-DD" in bad.json()["error"]
            unknown = await client.get("/api/sessions", params={"since": "2023-11-14"})
            assert unknown.status_code == 400 and "takes from, loadpoint, to" in unknown.json()["error"]
            response = await client.get("/api/sessions.csv")
            assert response.headers["Content-Type"].startswith("text/csv")
            assert "attachment" in response.headers["Content-Disposition"]
            rows = list(csv.DictReader(io.StringIO(response.text)))
            assert tuple(rows[0]) == CSV_COLUMNS
            assert rows[0]["energy_kwh"] == "7.0" and rows[0]["cost"] == "0.3" and rows[0]["phases"] == "1"
            assert rows[1]["end"] == "" and float(rows[1]["pv_kwh"]) == live["pv_kwh"]
            energy = (await client.get("/api/energy")).json()
            assert energy["today"]["day"] == "2023-11-14" and energy["today"]["car_kwh"] == live["energy_kwh"]
            assert [d["day"] for d in energy["days"]] == ["2023-11-12", "2023-11-14"]
            assert energy["days"][0]["pv_kwh"] == 21.0
            assert (energy["days"][0]["solar_share"], energy["today"]["solar_share"]) == (0.714, 1.0)
            power = (await client.get("/api/power")).json()  # today so far, a minute each
            assert set(power) == {"t_s", "pv_w", "house_w", "car_w", "grid_w", "battery_w"}
            assert 1 <= len(power["t_s"]) <= 2 and power["pv_w"][-1] == 5200 and power["car_w"][-1] > 0
            page = (await client.get("/")).text
            assert '<body data-history="1">' in page and "var uPlot=" in page  # the chart library, inline
            text = (await client.get("/metrics")).text
    finally:
        await server.stop()
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    car_j = samples[("pvcharge_car_energy_joules_total", ("pv",))]
    assert car_j == pytest.approx((5000 + live["energy_kwh"] * 1000) * 3600, rel=1e-3)
    assert samples[("pvcharge_car_energy_joules_total", ("grid",))] == 0
    assert samples[("pvcharge_site_energy_joules_total", ("pv",))] > 21000 * 3600


async def test_energy_per_day_has_the_days_not_written_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day whose energy is still in memory (the disk refused the checkpoints, or midnight passed
    since the last one) is in /api/energy, as it is in the metrics' totals."""
    daemon, _, _, clock = make_daemon()
    recorder = recorder_with_history(tmp_path / "s.db")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(recorder.store, "write", disk_full)
    yesterday_s = clock.t - DAY_S  # 2023-11-13: the PV of 60 s at 3000 W
    for t in (yesterday_s, yesterday_s + 60):
        site = SiteReading(
            grid_power_w=-2500, pv_power_w=3000, battery_power_w=0, battery_soc_pct=None, timestamp_s=t
        )
        recorder.site_tally.step(t, site, 0.0)
    daemon.listeners.append(recorder)
    await cycles(daemon, clock, 2)
    assert recorder.writes == 0
    server = await start_api(daemon, loopback(), recorder)
    try:
        async with httpx.AsyncClient(base_url=str(server.url)) as client:
            days = {d["day"]: d for d in (await client.get("/api/energy")).json()["days"]}
    finally:
        await server.stop()
    assert list(days) == ["2023-11-12", "2023-11-13", "2023-11-14"]
    assert days["2023-11-13"]["pv_kwh"] == 0.05
    assert sum(d["pv_kwh"] for d in days.values()) == pytest.approx(recorder.totals().pv_wh / 1000, abs=2e-3)


async def test_without_a_history_the_routes_say_why_and_metrics_have_no_energy() -> None:
    daemon, _, _, _ = make_daemon()
    server = await start_api(daemon, loopback())
    try:
        async with httpx.AsyncClient(base_url=str(server.url)) as client:
            for path in ("/api/sessions", "/api/sessions.csv", "/api/energy"):
                response = await client.get(path)
                assert response.status_code == 404
                assert "sessions.enabled is false" in response.json()["error"]
            assert "pvcharge_car_energy" not in (await client.get("/metrics")).text
            page = (await client.get("/")).text
            assert '<body data-history="0">' in page and "var uPlot=" not in page
    finally:
        await server.stop()


def test_parse_bound_dates_times_and_errors() -> None:
    assert parse_bound("2023-11-14", UTC) == 1_699_920_000
    assert parse_bound("2023-11-14", UTC, end=True) == 1_699_920_000 + DAY_S
    assert parse_bound("2023-11-14T10:00:00+02:00", UTC) == 1_699_920_000 + 8 * 3600
    assert parse_bound("2023-11-14t10:00:00z", UTC) == 1_699_920_000 + 10 * 3600
    with pytest.raises(ValueError, match="expected a date YYYY-MM-DD"):
        parse_bound("14.11.2023", UTC)


def test_cli_lists_sessions_as_table_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.db"
    recorder_with_history(path).close(1_700_000_000)
    assert main(["sessions", "--database", str(path), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 and rows[0]["loadpoint"] == "warp" and rows[0]["savings"] == "1.32"
    assert main(["sessions", "--database", str(path)]) == 0
    table = capsys.readouterr().out
    assert "kWh" in table and "7.00" in table and "85.7%" in table
    assert main(["sessions", "--database", str(path), "--from", "2030-01-01"]) == 0
    assert "no sessions recorded" in capsys.readouterr().out
    assert main(["sessions", "--database", str(path), "--from", "soon"]) == 2
    # the config's sessions.database; without flags the state directory, as run and demo use it
    config = tmp_path / "c.yaml"
    config.write_text(f"meter: {{type: nonsense}}\nsessions: {{database: '{path}'}}\n")
    assert main(["sessions", "--config", str(config), "--csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["sessions"]) == 1  # the test's state directory (conftest) holds none
    assert "no session database at" in capsys.readouterr().err
