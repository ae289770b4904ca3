"""Charging sessions: attribution by source, session boundaries, daily totals, money, the SQLite store."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
from datetime import UTC
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pvcharge.config import SessionsConfig, StateConfig, parse_config
from pvcharge.daemon import Daemon
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading, SiteReading
from pvcharge.sessions import CHECKPOINT_S, SessionRecorder, database_path, open_recorder
from pvcharge.sessions.site_energy import SiteTally
from pvcharge.sessions.store import MIGRATIONS, SCHEMA_VERSION, SessionStore, StoreError
from pvcharge.sessions.tally import IDLE_CLOSE_S, DayTotals, Session, Tally, Tariff, attribute
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace

T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC
DAY_S = 86400.0


def site(t: float, *, pv: float, grid: float, battery: float = 0.0) -> SiteReading:
    return SiteReading(
        grid_power_w=grid, pv_power_w=pv, battery_power_w=battery, battery_soc_pct=50.0, timestamp_s=t
    )


def car(t: float, power_w: float, *, connected: bool = True, phases: int = 1) -> ChargerReading:
    return ChargerReading(
        connected=connected,
        charging=power_w > 0,
        power_w=power_w,
        current_a=power_w / 230 / max(phases, 1),
        phases=phases if power_w > 0 else 0,
        timestamp_s=t,
    )


def test_attribute_pv_first_then_battery_and_grid_in_proportion() -> None:
    # house 1000 W without the car, PV 2000 W, car 3000 W: 1000 W from PV, the rest 2000 W from
    # battery 1500 W and grid 500 W in proportion
    reading = site(T0, pv=2000, grid=500, battery=1500)  # house incl. car = 4000 W
    split = attribute(reading, 3000)
    assert (split.car, split.pv, split.battery, split.grid) == pytest.approx((3000, 1000, 1500, 500))
    # all from PV while exporting
    split = attribute(site(T0, pv=5000, grid=-1000), 3000)
    assert (split.pv, split.battery, split.grid) == pytest.approx((3000, 0, 0))
    assert attribute(site(T0, pv=0, grid=300), 0).car == 0


def test_attribution_matches_the_site_models_tally() -> None:
    """Integrating the model's state each second through attribute() gives the model's own tally."""
    trace = bundled_trace()
    start, _ = trace.daylight()
    model = SiteModel(trace, t_s=start + 3 * 3600)
    model.offer(10, 1)
    pv = battery = grid = total = 0.0
    for _ in range(3600):
        model.advance(1.0)
        s = model.state()
        split = attribute(
            site(s.t_s, pv=s.pv_power_w, grid=s.grid_power_w, battery=s.battery_power_w), s.car_power_w
        )
        total += split.car / 3600
        pv += split.pv / 3600
        battery += split.battery / 3600
        grid += split.grid / 3600
    e = model.energy
    assert total > 1000
    assert total == pytest.approx(e.car_wh, rel=1e-9)
    assert pv == pytest.approx(e.pv_to_car_wh, rel=1e-9)
    assert battery == pytest.approx(e.battery_to_car_wh, abs=1e-6)
    assert grid == pytest.approx(e.grid_to_car_wh, abs=1e-6)


def run(tally: Tally, steps: list[tuple[float, SiteReading | None, ChargerReading | None]]) -> None:
    for t, s, c in steps:
        tally.step(t, s, c)


def test_session_from_plug_in_to_unplug_with_energy_money_and_peak() -> None:
    tariff = Tariff(grid_price_per_kwh=0.40, feed_in_per_kwh=0.08, currency="CHF")
    tally = Tally("warp", tariff)
    tally.step(T0, site(T0, pv=500, grid=-100), car(T0, 0, connected=False))
    assert tally.session is None
    t = T0 + 10
    # plugged in, charging 2300 W for one hour: PV 3300 W, house 1000 W → all PV
    for i in range(0, 361):
        now = t + 10 * i
        tally.step(now, site(now, pv=3300, grid=0), car(now, 2300))
    session = tally.session
    assert session is not None and session.start_s == t
    ramp_wh = 2300 / 2 * 10 / 3600  # from the last cycle before plug-in (0 W) to the first (2300 W)
    assert session.energy_wh == pytest.approx(2300 + ramp_wh, rel=1e-9)
    assert session.pv_wh == pytest.approx(2300 + ramp_wh, rel=1e-9)
    assert session.peak_power_w == 2300 and session.phases == [1]
    assert session.cost == 0
    assert session.savings == pytest.approx((2.3 + ramp_wh / 1000) * (0.40 - 0.08))
    # one more hour on the grid alone (no PV): cost 2.3 kWh × 0.40
    t2 = t + 3600
    for i in range(1, 361):
        now = t2 + 10 * i
        tally.step(now, site(now, pv=0, grid=3300), car(now, 2300))
    # the interval from the last PV sample to the first grid one is shared half and half
    grid_wh = 2300 - 2300 / 2 * 10 / 3600
    assert session.grid_wh == pytest.approx(grid_wh, rel=1e-9)
    assert session.cost == pytest.approx(grid_wh / 1000 * 0.40)
    assert session.solar_share == pytest.approx(0.5, abs=0.002)
    end = t2 + 3600 + 10
    tally.step(end, site(end, pv=0, grid=1000), car(end, 0, connected=False))
    assert tally.session is None
    [closed] = tally.take_closed()
    assert closed.end_s == end and closed.currency == "CHF"
    assert tally.take_closed() == []


def test_gaps_and_stale_readings_are_not_integrated() -> None:
    tally = Tally("warp", Tariff(), max_age_s=30, max_gap_s=60)
    run(tally, [(T0, site(T0, pv=5000, grid=0), car(T0, 2300))])
    # the meter's last reading is 40 s old at the next cycles: not used
    run(tally, [(T0 + 40, site(T0, pv=5000, grid=0), car(T0 + 40, 2300))])
    # then 100 s without any reading, then fresh ones
    run(tally, [(T0 + 140, site(T0 + 140, pv=5000, grid=0), car(T0 + 140, 2300))])
    assert tally.session is not None and tally.session.energy_wh == 0
    assert tally.gap_s == 140
    run(tally, [(T0 + 150, site(T0 + 150, pv=5000, grid=0), car(T0 + 150, 2300))])
    assert tally.session.energy_wh == pytest.approx(2300 * 10 / 3600)


def test_starts_and_phase_switches_count_written_commands() -> None:
    tally = Tally("warp", Tariff())
    commands = [
        (0, 1, True),
        (6, 1, True),
        (6, 1, False),
        (0, 1, True),
        (8, 3, True),
        (8, 1, False),
        (8, 1, True),
    ]
    for i, (amps, phases, written) in enumerate(commands):
        now = T0 + 5 * i
        tally.step(now, site(now, pv=5000, grid=0), car(now, 1000), ChargerCommand(amps, phases), written)
    assert tally.session is not None
    assert tally.session.starts == 2
    assert tally.session.phase_switches == 2


def test_a_charger_that_cannot_see_the_car_opens_at_first_power_and_closes_when_idle() -> None:
    tally = Tally("alphaess", Tariff())
    run(tally, [(T0, site(T0, pv=3000, grid=0), car(T0, 0, connected=False))])
    assert tally.session is None
    run(tally, [(T0 + 5, site(T0 + 5, pv=3000, grid=0), car(T0 + 5, 2000, connected=False))])
    assert tally.session is not None
    quiet = T0 + 10
    run(tally, [(quiet, site(quiet, pv=3000, grid=0), car(quiet, 0, connected=False))])
    assert tally.session is not None  # a pause is not the end
    later = T0 + 5 + IDLE_CLOSE_S
    run(tally, [(later, site(later, pv=3000, grid=0), car(later, 0, connected=False))])
    [closed] = tally.take_closed()
    assert closed.end_s == T0 + 5


def test_the_sites_tally_skips_gaps_and_stale_readings_as_a_sessions_tally_does() -> None:
    tally = SiteTally(tz=UTC, max_age_s=30, max_gap_s=60)
    tally.step(T0, site(T0, pv=5000, grid=-2700), 2300)
    # the meter's last reading is 40 s old at the next cycle: not used; then none at all
    tally.step(T0 + 40, site(T0, pv=5000, grid=-2700), 2300)
    tally.step(T0 + 100, None, 0.0)
    # fresh again after 140 s: the gap is not integrated
    tally.step(T0 + 140, site(T0 + 140, pv=5000, grid=-2700), 2300)
    assert tally.days == {} and tally.gap_s == 140
    assert sum(minute[0] for minute in tally.power.values()) == 2  # samples: only the fresh readings
    tally.step(T0 + 150, site(T0 + 150, pv=5000, grid=-2700), 2300)
    (day,) = tally.take_days()
    assert (day.pv_wh, day.export_wh) == pytest.approx((5000 * 10 / 3600, 2700 * 10 / 3600))
    assert (day.car_wh, day.car_pv_wh, day.import_wh) == pytest.approx(
        (2300 * 10 / 3600, 2300 * 10 / 3600, 0)
    )


def test_daily_totals_split_at_local_midnight() -> None:
    tz = UTC
    midnight = 1_750_032_000.0  # 2025-06-16 00:00 UTC
    tally = SiteTally(tz=tz)
    for i in range(-6, 7):
        now = midnight + 10 * i
        tally.step(now, site(now, pv=1000, grid=-400, battery=-200), 0.0)
    days = {d.day: d for d in tally.take_days()}
    assert set(days) == {"2025-06-15", "2025-06-16"}
    # an interval is booked on the day of its end: the one ending at midnight on the new day
    assert days["2025-06-15"].pv_wh == pytest.approx(1000 * 50 / 3600)
    assert days["2025-06-16"].export_wh == pytest.approx(400 * 70 / 3600)
    assert days["2025-06-16"].battery_charge_wh == pytest.approx(200 * 70 / 3600)
    assert days["2025-06-16"].import_wh == 0
    assert tally.take_days() == []


# --- the store -------------------------------------------------------------------------------------


def test_database_path_beside_the_state_file_or_configured(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": str(tmp_path / "state")}
    assert database_path(SessionsConfig(), StateConfig(), env) == tmp_path / "state" / "sessions.db"
    other = str(tmp_path / "x.db")
    assert database_path(SessionsConfig(database=other), StateConfig(), env) == Path(other)


def test_store_round_trip_wal_and_schema_version(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db")
    assert store.journal_mode == "wal"
    session = Session("warp", start_s=T0, updated_s=T0 + 60, energy_wh=1234.5, pv_wh=1000, phases=[1, 3])
    store.write([session], [DayTotals("2025-06-15", pv_wh=10, car_wh=2)])
    assert session.id is not None
    session.energy_wh = 2000.0
    session.end_s = T0 + 120
    store.write([session], [DayTotals("2025-06-15", pv_wh=5, car_wh=1)])
    [back] = store.sessions()
    assert (back.id, back.energy_wh, back.end_s, back.phases) == (session.id, 2000.0, T0 + 120, [1, 3])
    [day] = store.days()
    assert (day.pv_wh, day.car_wh) == (15, 3)
    assert store.sessions(from_s=T0 + 1) == []
    assert store.sessions(loadpoint="other") == []
    assert store.integrity() == "ok"
    store.close()
    raw = sqlite3.connect(tmp_path / "s.db")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer than this pvcharge"):
        SessionStore(tmp_path / "s.db")


def test_store_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"sessions.database .*junk.db"):
        SessionStore(path)


class _Cycle:
    """What the recorder reads of a daemon Cycle."""

    def __init__(self, now: float, s: SiteReading | None, c: ChargerReading | None) -> None:
        from pvcharge.control import Decision

        self.now, self.site, self.charger, self.written = now, s, c, False
        self.decision = Decision(ChargerCommand(0, 1), "test", "pv", None)


def test_recorder_checkpoints_at_most_once_a_minute_and_continues_after_restart(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db")
    recorder = SessionRecorder(store, "warp", Tariff(), tz=UTC)
    for i in range(0, 25):  # two minutes at 5 s
        now = T0 + 5 * i
        recorder(_Cycle(now, site(now, pv=3000, grid=0), car(now, 2300)))  # type: ignore[arg-type]
    assert recorder.writes == 3  # the first cycle, +60 s, +120 s
    [stored] = SessionStore(tmp_path / "s.db").sessions()
    assert stored.end_s is None and stored.energy_wh == pytest.approx(2300 * 120 / 3600)
    assert recorder.sessions()[0].energy_wh == pytest.approx(2300 * 120 / 3600)
    # a "crash": a new recorder on the same file continues the open session when the car is still there
    again = SessionRecorder(SessionStore(tmp_path / "s.db"), "warp", Tariff(), tz=UTC)
    now = T0 + 200
    again(_Cycle(now, site(now, pv=3000, grid=0), car(now, 2300)))  # type: ignore[arg-type]
    now = T0 + 205
    again(_Cycle(now, site(now, pv=3000, grid=0), car(now, 0, connected=False)))  # type: ignore[arg-type]
    [closed] = SessionStore(tmp_path / "s.db").sessions()
    assert closed.id == stored.id and closed.end_s == now
    assert closed.energy_wh == pytest.approx(2300 * 120 / 3600 + 2300 / 2 * 5 / 3600)


class _Meter:
    name = "meter fake"

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock

    async def read(self) -> SiteReading:
        wobble = self.clock[0] % 10 / 5  # 0 or 1 W: values that never change count as a frozen meter
        return site(self.clock[0], pv=3500 + wobble, grid=-1200 - wobble)

    async def close(self) -> None:
        pass


class _Charger:
    name = "charger fake"
    capabilities = ChargerCapabilities()

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock

    async def read(self) -> ChargerReading:
        return car(self.clock[0], 2300)

    async def apply(self, command: ChargerCommand) -> None:
        pass

    def forget(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_the_daemon_records_through_its_listener_and_a_failing_disk_never_stops_it(
    tmp_path: Path,
) -> None:
    config = parse_config(
        "meter: {type: huawei, host: 127.0.0.1}\n"
        "charger: {type: warp, url: 'http://127.0.0.1', phases: 1}\n"
        f"sessions: {{database: '{tmp_path / 'h.db'}'}}\n"
        "tariff: {grid_price_per_kwh: 0.3, feed_in_per_kwh: 0.1, currency: EUR}\n"
    )
    clock = [T0]
    daemon = Daemon(config, _Meter(clock), _Charger(clock), clock=lambda: clock[0])  # type: ignore[arg-type]
    recorder = open_recorder(config, tz=UTC)
    assert recorder is not None and recorder.store.path == tmp_path / "h.db"
    daemon.listeners.append(recorder)
    broken = sqlite3.OperationalError("disk I/O error")

    def refuse(*args: object) -> None:
        raise broken

    good_write = recorder.store.write
    with capture_logs() as logs:
        for i in range(60):  # 5 min at 5 s; the disk fails in the second and third minute
            recorder.store.write = refuse if 12 <= i < 36 else good_write  # type: ignore[method-assign]
            await daemon.cycle()
            clock[0] += 5
    assert daemon.stats.cycles == 60
    assert [e["event"] for e in logs if e["event"].startswith("sessions_")] == [
        "sessions_not_saved",
        "sessions_saved_again",
    ]
    recorder.close(clock[0])
    [session] = SessionStore(tmp_path / "h.db").sessions()
    assert session.loadpoint == "warp" and session.end_s is None
    assert session.energy_wh == pytest.approx(2300 * 295 / 3600)
    assert session.pv_wh == pytest.approx(session.energy_wh)  # 3500 W PV, 0 W house
    assert session.savings == pytest.approx(session.energy_wh / 1000 * 0.2)
    [day] = SessionStore(tmp_path / "h.db").days()
    assert day.export_wh == pytest.approx(1200 * 295 / 3600, rel=1e-3)


def test_sessions_disabled_or_unopenable_means_no_recorder(tmp_path: Path) -> None:
    base = "meter: {type: huawei, host: 127.0.0.1}\ncharger: {type: warp, url: 'http://127.0.0.1'}\n"
    assert open_recorder(parse_config(base + "sessions: {enabled: false}\n")) is None
    (tmp_path / "dir.db").mkdir()
    with capture_logs() as logs:
        assert (
            open_recorder(parse_config(base + f"sessions: {{database: '{tmp_path / 'dir.db'}'}}\n")) is None
        )
    assert [e["event"] for e in logs] == ["sessions_unavailable"]


def _checkpointing_child(path: Path, out_fd: int, start_s: float) -> None:
    """A forked process recording a car at 2300 W every 5 s of a fast fake clock until killed; it writes
    each cycle's time to ``out_fd`` once the cycle (and any checkpoint in it) is done."""
    try:
        recorder = SessionRecorder(SessionStore(path), "warp", Tariff(0.3, 0.1), tz=UTC)
        t = start_s
        while True:
            recorder(_Cycle(t, site(t, pv=3000, grid=0), car(t, 2300)))  # type: ignore[arg-type]
            os.write(out_fd, f"{t}\n".encode())
            t += 5.0
    finally:
        os._exit(1)


def test_kill_9_during_checkpoints_100_times_never_corrupts_and_loses_at_most_a_minute(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crash.db"
    rng = random.Random(16)
    start_s = T0
    for run_no in range(100):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_fd)
            _checkpointing_child(path, write_fd, start_s)
        os.close(write_fd)
        lines = os.fdopen(read_fd, "rb")
        # kill it after a random number of cycles: 1 to 40 (0 to 3 checkpoints after the first write)
        seen = [float(lines.readline()) for _ in range(rng.randint(1, 40))]
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        lines.close()
        store = SessionStore(path)
        assert store.integrity() == "ok", f"run {run_no}"
        [session] = store.sessions()  # continued across every restart: the car stayed plugged in
        assert session.end_s is None
        # what this run integrated and did not store: its cycles after the last checkpoint it wrote
        lost_s = seen[-1] - max(session.updated_s, start_s)
        assert lost_s <= CHECKPOINT_S, f"run {run_no}: {lost_s:g} s lost"
        assert 0 < session.energy_wh <= 2300 * (session.updated_s - session.start_s) / 3600 + 1e-6
        assert session.pv_wh == pytest.approx(session.energy_wh)
        store.close()
        start_s = max(seen[-1], session.updated_s) + 5.0  # the child may have gone on past seen[-1]


def test_a_stored_open_session_is_closed_when_the_car_is_gone_or_the_clock_went_back() -> None:
    stored = Session("warp", start_s=T0, updated_s=T0 + 600, energy_wh=500, id=7)
    tally = Tally("warp", Tariff(), session=stored)
    now = T0 + 3600
    tally.step(now, site(now, pv=0, grid=300), car(now, 0, connected=False))
    [closed] = tally.take_closed()
    assert (closed.id, closed.end_s, closed.energy_wh) == (7, T0 + 600, 500)
    # a demo replaying an earlier day: a new session, the stored one ends where it was left
    stored = Session("warp", start_s=T0, updated_s=T0 + 600, id=8)
    tally = Tally("warp", Tariff(), session=stored)
    tally.step(T0 - DAY_S, site(T0 - DAY_S, pv=3000, grid=0), car(T0 - DAY_S, 2300))
    [closed] = tally.take_closed()
    assert closed.id == 8 and tally.session is not None and tally.session.start_s == T0 - DAY_S


def test_a_version_1_file_is_migrated_with_its_sessions_kept(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    raw = sqlite3.connect(path)
    raw.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    raw.execute(
        "INSERT INTO sessions (loadpoint, start_s, updated_s, energy_wh) VALUES ('warp', ?, ?, 5000)",
        (T0, T0),
    )
    raw.commit()
    raw.close()
    store = SessionStore(path)
    [kept] = store.sessions()
    assert (kept.loadpoint, kept.energy_wh) == ("warp", 5000)
    store.write([], [], {int(T0 // 60 * 60): [2, 6000, 1000, 4000, -1000, 0]})
    assert store.power(from_s=T0 - 60, to_s=T0 + 60) == {int(T0 // 60 * 60): [2, 6000, 1000, 4000, -1000, 0]}
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_the_power_per_minute_for_the_chart(tmp_path: Path) -> None:
    recorder = SessionRecorder(SessionStore(tmp_path / "s.db"), "warp", Tariff(), tz=UTC)
    minute = 1_750_000_020.0  # a minute's start
    for i in range(30):  # 150 s at 5 s from 20 s into the minute: 8, 12 and 10 samples in three minutes
        now = minute + 20 + 5 * i
        car_w = 2300 if now >= minute + 60 else 0  # the car draws from the second minute on
        recorder(_Cycle(now, site(now, pv=3000 + 2 * i, grid=-500), car(now, car_w)))  # type: ignore[arg-type]
        if i == 15:
            recorder.flush(now)  # part of the second minute stored, the rest still in memory
    columns = recorder.power(from_s=minute, to_s=minute + 180)
    assert columns["t_s"] == [minute, minute + 60, minute + 120]
    assert columns["car_w"] == [0, 2300, 2300]
    assert columns["pv_w"] == [3007, 3027, 3049]  # the means of the samples in each minute
    # the house without the car: pv + grid + battery - car
    assert columns["house_w"] == [
        pv - 500 - car for pv, car in zip(columns["pv_w"], columns["car_w"], strict=True)
    ]
    assert recorder.power(from_s=minute + 60, to_s=minute + 120)["t_s"] == [minute + 60]


def test_the_last_session_comes_from_memory_not_from_a_query_per_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MQTT bridge asks for the last session after every cycle: with no car plugged in (most of the
    day) that must not read the sessions table, and after a restart it is the one stored last."""
    path = tmp_path / "s.db"
    recorder = SessionRecorder(SessionStore(path), "warp", Tariff(), tz=UTC)
    for i, car_w in enumerate([2300, 2300, 2300, 0]):
        now = T0 + 5 * i
        recorder(_Cycle(now, site(now, pv=3000, grid=0), car(now, car_w, connected=car_w > 0)))  # type: ignore[arg-type]
    reads: list[object] = []
    monkeypatch.setattr(recorder.store, "sessions", lambda **kw: reads.append(kw) or [])
    last = recorder.last_session()
    assert last is not None and last.end_s == T0 + 15 and last.id is not None
    assert reads == []
    monkeypatch.undo()
    recorder.close(T0 + 20)
    again = SessionRecorder(SessionStore(path), "warp", Tariff(), tz=UTC)
    assert again.last_session() == last
