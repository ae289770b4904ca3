"""Sessions with several loadpoints: each loadpoint's sessions under its own name, the cars sharing the
site's PV, battery and grid in proportion to their power (the daemon on a fake clock, a real SQLite file)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC
from itertools import pairwise
from pathlib import Path

import pytest
from test_daemon import Charger, Clock, run
from test_daemon_loadpoints import TWO

from pvcharge.cli import main
from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.errors import DeviceUnavailable
from pvcharge.readings import ChargerReading, SiteReading
from pvcharge.sessions import SessionRecorder, open_recorder
from pvcharge.sessions.store import SessionStore
from pvcharge.sessions.tally import local_day

PV_W, HOUSE_W, BATTERY_W = 8000.0, 1000.0, 2000.0  # the house without the cars; the battery discharges


class Car(Charger):
    """Draws what it was last offered, on three phases at 230 V, while plugged in."""

    def power_w(self) -> float:
        offered = self.applied[-1].current_a if self.applied and self.connected else 0.0
        return offered * 3 * 230.0

    async def read(self) -> ChargerReading:
        p = self.power_w()
        return ChargerReading(self.connected, p > 0, p, p / 690.0, 3 if p else 0, self.clock())


class Site:
    """PV, a house and a discharging battery; the grid balances the two cars."""

    name = "meter site"

    def __init__(self, clock: Clock, cars: list[Car]) -> None:
        self.clock, self.cars = clock, cars

    async def read(self) -> SiteReading:
        cars_w = sum(car.power_w() for car in self.cars)
        grid_w = HOUSE_W + cars_w - PV_W - BATTERY_W
        return SiteReading(grid_w, PV_W, BATTERY_W, 50.0, self.clock())

    async def close(self) -> None:
        pass


async def test_two_cars_are_recorded_per_loadpoint_sharing_the_sites_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    carport, garage = Car(clock), Car(clock)
    config = parse_config(TWO, environ={})
    daemon = Daemon(config, Site(clock, [carport, garage]), [carport, garage], clock=clock)  # type: ignore[list-item]
    recorder = open_recorder(config, path=tmp_path / "sessions.db")
    assert recorder is not None
    daemon.listeners.append(recorder)
    await run(daemon, clock, 20)  # 16 A and 9 A (the 25 A fuse) from the first cycle's writes on
    live = recorder.sessions()  # the API's answer: both open sessions, by name
    assert [(s.loadpoint, s.end_s) for s in live] == [("carport", None), ("garage", None)]
    assert recorder.sessions(loadpoint="garage") == [live[1]]
    last = recorder.last_session()
    assert last is not None and last.loadpoint == "carport"
    carport.connected = garage.connected = False
    await run(daemon, clock, 1)
    recorder.close(clock())

    store = SessionStore(tmp_path / "sessions.db")
    sessions = {s.loadpoint: s for s in store.sessions()}
    (day,) = store.days()
    store.close()
    assert sorted(sessions) == ["carport", "garage"] and all(s.end_s is not None for s in sessions.values())
    carport_w, garage_w = 16 * 690.0, 9 * 690.0
    cars_w = carport_w + garage_w
    # each car draws from the second cycle on (the first reads before it writes) until the unplug at the
    # 21st: 19 intervals of 5 s at full power less the two half intervals of the ramps, 95 s
    hours = 95 / 3600
    for name, power_w in (("carport", carport_w), ("garage", garage_w)):
        s = sessions[name]
        share = power_w / cars_w  # at full power: 16 / 25 and 9 / 25
        assert s.energy_wh == pytest.approx(power_w * hours)
        # PV after the house (7000 W) and the battery's 2000 W (the rest from the grid) go to the cars by
        # their power; each car alone would have seen the house plus the other car before it
        assert s.pv_wh == pytest.approx((PV_W - HOUSE_W) * share * hours)
        assert s.battery_wh == pytest.approx(BATTERY_W * share * hours)
        assert s.grid_wh == pytest.approx(s.energy_wh - s.pv_wh - s.battery_wh)
    assert day.car_wh == pytest.approx(sessions["carport"].energy_wh + sessions["garage"].energy_wh)
    assert day.car_pv_wh == pytest.approx(sessions["carport"].pv_wh + sessions["garage"].pv_wh)
    assert day.pv_wh == pytest.approx(PV_W * 100 / 3600)  # the site's, once: 20 intervals
    assert sessions["carport"].pv_wh / sessions["garage"].pv_wh == pytest.approx(16 / 9)

    capsys.readouterr()  # (the daemon's log lines)
    assert main(["sessions", "--database", str(tmp_path / "sessions.db"), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["loadpoint"], r["energy_kwh"]) for r in rows] == [
        ("carport", f"{carport_w * hours / 1000:.3f}"),
        ("garage", f"{garage_w * hours / 1000:.3f}"),
    ]


class Flaky(Car):
    """A :class:`Car` whose charger does not answer while ``away``."""

    away = False

    async def read(self) -> ChargerReading:
        if self.away:
            raise DeviceUnavailable("charger carport", "connection refused")
        return await super().read()


class Logged(Site):
    """:class:`Site` whose PV wobbles by a watt (a meter repeating its values is frozen, treated as
    stale), keeping each reading."""

    def __init__(self, clock: Clock, cars: list[Car]) -> None:
        super().__init__(clock, cars)
        self.readings: list[SiteReading] = []

    async def read(self) -> SiteReading:
        reading = await super().read()
        wobble_w = len(self.readings) % 2
        reading = replace(
            reading, pv_power_w=reading.pv_power_w + wobble_w, grid_power_w=reading.grid_power_w - wobble_w
        )
        self.readings.append(reading)
        return reading

    def wh(self, power_w: Callable[[SiteReading], float]) -> float:
        """The energy of ``power_w`` (W) over the readings, by trapezoids, Wh."""
        pairs = pairwise((r.timestamp_s, power_w(r)) for r in self.readings)
        return sum((a + b) / 2 * (t1 - t0) for (t0, a), (t1, b) in pairs) / 3600


async def test_the_sites_energy_is_counted_while_the_first_charger_is_unreachable(tmp_path: Path) -> None:
    clock = Clock()
    carport, garage = Flaky(clock), Car(clock)
    config = parse_config(TWO, environ={})
    meter = Logged(clock, [carport, garage])
    daemon = Daemon(config, meter, [carport, garage], clock=clock)  # type: ignore[list-item]
    recorder = open_recorder(config, path=tmp_path / "sessions.db", tz=UTC)
    assert recorder is not None
    daemon.listeners.append(recorder)
    await run(daemon, clock, 10)
    carport.away = True  # 20 cycles (100 s, longer than any gap the tally bridges) without its reading
    cycles = await run(daemon, clock, 20)
    assert all(c.charger is None and c.loadpoints[1].charger is not None for c in cycles)
    carport.away = False
    await run(daemon, clock, 10)
    (day,) = recorder.days()
    # every interval between the 40 cycles, the stretch included
    assert len(meter.readings) == 40 and meter.wh(lambda r: r.pv_power_w) > PV_W * 39 * 5 / 3600 - 1
    assert day.pv_wh == pytest.approx(meter.wh(lambda r: r.pv_power_w))
    assert day.battery_discharge_wh == pytest.approx(BATTERY_W * 39 * 5 / 3600)
    assert day.import_wh == pytest.approx(meter.wh(lambda r: max(0.0, r.grid_power_w)))
    assert day.export_wh == pytest.approx(meter.wh(lambda r: max(0.0, -r.grid_power_w)))
    assert day.import_wh > 0 and day.export_wh > 0  # (the cars start a cycle late)
    # the cars' part of it: the garage throughout, the carport only while its charger answered (its
    # session is not integrated across the stretch either), but for the two intervals at the edges of
    # the stretch, which count it at one end (at most 16 A on 3 phases, the first's share of the fuse)
    sessions = [recorder.tallies[name].session for name in ("carport", "garage")]
    both_wh = sum(s.energy_wh for s in sessions if s is not None)
    assert both_wh > 0 and both_wh <= day.car_wh <= both_wh + 16 * 690.0 * 5 / 3600 + 1e-6
    recorder.close(clock())


def test_a_charger_config_records_under_the_chargers_type(tmp_path: Path) -> None:
    config = parse_config(
        "meter: {type: huawei, host: 127.0.0.1}\ncharger: {type: warp, url: 'http://127.0.0.1'}\n", environ={}
    )
    recorder = open_recorder(config, path=tmp_path / "sessions.db")
    assert isinstance(recorder, SessionRecorder)
    assert list(recorder.tallies) == ["warp"] and recorder.tally is recorder.tallies["warp"]
    recorder.close(0.0)


async def test_a_restart_continues_each_loadpoints_open_session(tmp_path: Path) -> None:
    clock = Clock()
    carport, garage = Car(clock), Car(clock)
    config = parse_config(TWO, environ={})
    path = tmp_path / "sessions.db"
    for _ in range(2):  # two runs of the daemon on one file, the cars plugged in throughout
        daemon = Daemon(config, Site(clock, [carport, garage]), [carport, garage], clock=clock)  # type: ignore[list-item]
        recorder = open_recorder(config, path=path)
        assert recorder is not None
        daemon.listeners.append(recorder)
        await run(daemon, clock, 5)
        recorder.close(clock())
    store = SessionStore(path)
    found = store.sessions()
    store.close()
    assert [(s.loadpoint, s.end_s) for s in found] == [("carport", None), ("garage", None)]
    # the first run ramps up (2.5 s) then draws for 15 s; the second draws at once, for 4 intervals (the
    # gap between the runs is not integrated): both runs' energy in one session per loadpoint
    for session, amps in zip(found, (16, 9), strict=True):
        assert session.energy_wh == pytest.approx(amps * 690.0 * (17.5 + 20) / 3600)


async def test_each_loadpoints_last_session_and_today_also_after_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    carport, garage = Car(clock), Car(clock)
    config = parse_config(TWO, environ={})
    daemon = Daemon(config, Site(clock, [carport, garage]), [carport, garage], clock=clock)  # type: ignore[list-item]
    recorder = open_recorder(config, path=tmp_path / "sessions.db", tz=UTC)
    assert recorder is not None
    daemon.listeners.append(recorder)
    assert recorder.last_session("garage") is None
    await run(daemon, clock, 10)
    carport.connected = False  # the first loadpoint's car leaves; the garage's keeps charging
    await run(daemon, clock, 2)
    carport_s, garage_s = recorder.last_session("carport"), recorder.last_session("garage")
    assert carport_s is not None and carport_s.loadpoint == "carport" and carport_s.end_s is not None
    assert garage_s is not None and garage_s.loadpoint == "garage" and garage_s.end_s is None
    assert recorder.last_session() is garage_s  # the site's: the first open one
    summary = recorder.summary(clock(), "carport")
    assert summary["last_session"]["id"] == carport_s.id and summary["last_session"]["open"] is False
    assert summary["today"]["car_kwh"] == round(carport_s.energy_wh / 1000, 3) > 0
    assert summary["today"]["pv_kwh"] is None and summary["today"]["day"] == local_day(clock(), UTC)
    site = recorder.summary(clock())["today"]
    assert site["car_kwh"] > summary["today"]["car_kwh"] and site["pv_kwh"] > 0
    with pytest.raises(KeyError):
        recorder.last_session("shed")
    recorder.close(clock())

    again = open_recorder(config, path=tmp_path / "sessions.db", tz=UTC)  # the closed one from the file
    assert again is not None
    assert again.last_session("carport") == carport_s
    again.close(clock())
