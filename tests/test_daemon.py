"""The daemon loop with small in-process drivers: deferred writes, blocked writes, failing devices."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.errors import ConfigError, DeviceUnavailable, WriteDeferred, WritesBlocked
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading, SiteReading

CONFIG = parse_config(
    "meter: {type: huawei, host: 127.0.0.1}\n"
    "charger: {type: warp, url: 'http://127.0.0.1', phases: 1}\n"
    "control: {cloud_filter: 'off', interval_s: 5, max_age_s: 30}\n"
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Meter:
    name = "meter fake"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.fail: BaseException | None = None

    async def read(self) -> SiteReading:
        if self.fail is not None:
            raise self.fail
        return SiteReading(-3000.0, 3500.0, 0.0, 50.0, self.clock())

    async def close(self) -> None:
        pass


class Charger:
    name = "charger fake"
    capabilities = ChargerCapabilities()

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.errors: list[BaseException] = []
        self.applied: list[ChargerCommand] = []
        self.calls = 0
        self.forgotten = 0
        self.connected = True

    async def read(self) -> ChargerReading:
        return ChargerReading(self.connected, False, 0.0, 0.0, 0, self.clock())

    async def apply(self, command: ChargerCommand) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.applied.append(command)

    def forget(self) -> None:
        self.forgotten += 1

    async def close(self) -> None:
        pass


async def run(daemon: Daemon, clock: Clock, cycles: int) -> list[Any]:
    out = []
    for _ in range(cycles):
        out.append(await daemon.cycle())
        clock.t += 5
    return out


def make() -> tuple[Daemon, Meter, Charger, Clock]:
    clock = Clock()
    meter, charger = Meter(clock), Charger(clock)
    return Daemon(CONFIG, meter, charger, clock=clock), meter, charger, clock


async def test_a_deferred_write_is_offered_again_next_cycle_without_a_warning() -> None:
    daemon, _, charger, clock = make()
    charger.errors = [WriteDeferred(charger.name, "rate limit", retry_after_s=5)] * 2
    with capture_logs() as logs:
        await run(daemon, clock, 4)
    assert daemon.stats.deferred_writes == 2
    assert [c.current_a for c in charger.applied] == [12.0]  # (3000 W export - 100 W deadzone) / 230 V
    assert daemon.stats.write_failures == 0
    assert not [e for e in logs if e["log_level"] in ("warning", "error")]


async def test_blocked_writes_stop_all_writes_and_say_so_once() -> None:
    daemon, _, charger, clock = make()
    charger.errors = [WritesBlocked(charger.name, "HTTP 403: IP blocked")]
    with capture_logs() as logs:
        cycles = await run(daemon, clock, 5)
    assert charger.calls == 1  # never tried again
    errors = [e for e in logs if e["event"] == "charger_writes_blocked"]
    assert len(errors) == 1 and "IP blocked" in errors[0]["error"]
    assert all(e.get("writes_blocked") for e in logs if e["event"] == "decision")
    assert all(c.written is False for c in cycles)
    await daemon._shutdown()
    assert charger.calls == 1  # not even the pause on the way out


async def test_a_dead_meter_pauses_the_car_after_max_age() -> None:
    daemon, meter, charger, clock = make()
    await run(daemon, clock, 2)
    assert charger.applied[-1].current_a > 0
    meter.fail = DeviceUnavailable(meter.name, "connection refused")
    with capture_logs() as logs:
        cycles = await run(daemon, clock, 8)
    assert charger.applied[-1].current_a == 0
    paused_at = next(c.now for c in cycles if c.decision.command.current_a == 0)
    assert paused_at - 1005 > 30  # the last good reading was taken at t = 1005
    assert "stale" in next(c.decision.reason for c in cycles if c.decision.command.current_a == 0)
    assert sum(1 for e in logs if e["event"] == "device_unavailable") == 1  # logged once per outage


@pytest.mark.parametrize("bug", [ZeroDivisionError("driver bug"), KeyError("x")])
async def test_a_driver_bug_never_ends_the_loop(bug: Exception) -> None:
    daemon, meter, _, clock = make()
    meter.fail = bug
    with capture_logs() as logs:
        await run(daemon, clock, 3)
    assert daemon.stats.cycles == 3
    assert any(e["event"] == "driver_error" for e in logs)


async def test_the_command_is_sent_again_when_the_charger_comes_back() -> None:
    daemon, _, charger, clock = make()
    await run(daemon, clock, 2)
    assert len(charger.applied) == 1  # written once, then unchanged

    async def unreachable() -> ChargerReading:
        raise DeviceUnavailable(charger.name, "no route to host")

    working = charger.read
    charger.read = unreachable  # type: ignore[method-assign]
    await run(daemon, clock, 2)
    charger.read = working  # type: ignore[method-assign]
    await run(daemon, clock, 2)
    assert len(charger.applied) == 2  # re-asserted once after the outage, not every cycle
    assert charger.applied[1] == charger.applied[0]
    assert charger.forgotten == 1  # and the driver forgot what it believed the charger holds


async def test_a_charger_refusing_writes_is_logged_once_per_outage_and_once_on_recovery() -> None:
    daemon, _, charger, clock = make()
    failing = 4
    charger.errors = [DeviceUnavailable(charger.name, "connection refused")] * failing
    with capture_logs() as logs:
        await run(daemon, clock, failing + 3)
    assert charger.calls == failing + 1  # tried every cycle until it took the command, then left alone
    assert len(charger.applied) == 1 and daemon.stats.write_failures == failing
    warnings = [e for e in logs if e["log_level"] in ("warning", "error")]
    assert [e["event"] for e in warnings] == ["charger_write_failed"]
    assert warnings[0]["error"] == "connection refused" and warnings[0]["device"] == charger.name
    quiet = [e for e in logs if e["event"] == "charger_write_still_failing"]
    assert len(quiet) == failing - 1 and all(e["log_level"] == "debug" for e in quiet)
    recovered = [e for e in logs if e["event"] == "charger_write_recovered"]
    assert len(recovered) == 1
    assert (recovered[0]["failures"], recovered[0]["outage_s"]) == (failing, failing * 5.0)  # 5-s cycles

    charger.errors = [DeviceUnavailable(charger.name, "timeout")]  # a second outage is logged again
    daemon.loadpoint().reassert("test")
    with capture_logs() as logs:
        await run(daemon, clock, 2)
    assert [e["event"] for e in logs if e["event"].startswith("charger_write")] == [
        "charger_write_failed",
        "charger_write_recovered",
    ]


async def test_a_newly_connected_car_gets_the_command_again() -> None:
    """Easee clears its pause and dynamic current on plug-in: the daemon re-asserts on A -> B."""
    daemon, _, charger, clock = make()
    await run(daemon, clock, 2)
    charger.connected = False
    await run(daemon, clock, 2)
    sent = len(charger.applied)
    charger.connected = True
    with capture_logs() as logs:
        await run(daemon, clock, 3)
    assert charger.forgotten == 1
    assert len(charger.applied) == sent + 1  # once, not every cycle
    assert any(e["event"] == "command_reasserted" and e["why"] == "vehicle connected" for e in logs)


def config_with(control: str, charger: str = "{type: warp, url: 'http://127.0.0.1', phases: 1}") -> Any:
    return parse_config(f"meter: {{type: huawei, host: 127.0.0.1}}\ncharger: {charger}\ncontrol: {control}\n")


async def test_reload_takes_new_settings_next_cycle_without_stopping_the_car() -> None:
    daemon, _, charger, clock = make()
    await run(daemon, clock, 3)
    assert charger.applied[-1].current_a == 12.0
    daemon.reload(config_with("{cloud_filter: 'off', interval_s: 5, max_age_s: 30, mode: fast}"))
    assert str(daemon.controller.mode) == "pv"  # not before the next cycle
    with capture_logs() as logs:
        cycles = await run(daemon, clock, 2)
    assert daemon.controller.mode == "fast"
    assert [c.decision.command.current_a for c in cycles] == [16.0, 16.0]  # no pause in between
    assert any(e["event"] == "config_reloaded" and e["previous_mode"] == "pv" for e in logs)


async def test_reload_refuses_a_new_device_and_keeps_the_old_config() -> None:
    daemon, _, _, _ = make()
    other = config_with("{mode: fast}", charger="{type: warp, url: 'http://127.0.0.2', phases: 1}")
    with pytest.raises(ConfigError, match=r"charger: changed; .* needs a restart"):
        daemon.reload(other)
    auto = config_with("{mode: fast}", charger="{type: warp, url: 'http://127.0.0.1', phases: auto}")
    with pytest.raises(ConfigError, match=r"charger\.phases"):
        daemon.reload(auto)
    moved = parse_config(
        "meter: {type: huawei, host: 127.0.0.1}\ncharger: {type: warp, url: 'http://127.0.0.1', phases: 1}\n"
        "state: {file: /var/lib/elsewhere/state.json}\n"
    )
    with pytest.raises(ConfigError, match=r"state: changed; a new state section needs a restart"):
        daemon.reload(moved)  # the mode would be saved where the next start does not look
    history = parse_config(
        "meter: {type: huawei, host: 127.0.0.1}\ncharger: {type: warp, url: 'http://127.0.0.1', phases: 1}\n"
        "sessions: {database: /var/lib/elsewhere/sessions.db}\n"
    )
    with pytest.raises(ConfigError, match=r"sessions: changed; a new sessions section needs a restart"):
        daemon.reload(history)  # the recorder keeps its file open; a new one needs a new recorder
    assert daemon.config is CONFIG and daemon._pending_config is None


@pytest.mark.parametrize(("exit_state", "sent"), [("pause", [0.0]), ("leave", [])])
async def test_exit_state_pause_or_leave(exit_state: str, sent: list[float]) -> None:
    clock = Clock()
    meter, charger = Meter(clock), Charger(clock)
    config = config_with(f"{{cloud_filter: 'off', interval_s: 5, max_age_s: 30, exit_state: {exit_state}}}")
    daemon = Daemon(config, meter, charger, clock=clock)
    await run(daemon, clock, 2)
    before = len(charger.applied)
    with capture_logs() as logs:
        await daemon._shutdown()
    assert [c.current_a for c in charger.applied[before:]] == sent
    stopped = next(e for e in logs if e["event"] == "stopped")
    assert stopped["charger_left"] == ("paused" if exit_state == "pause" else "as it was")


async def test_frozen_meter_values_count_as_stale() -> None:
    """A meter that answers with the same values to the watt (SENEC's frozen lala.cgi) is as dead as
    a silent one: after control.frozen_s (120 s) the car goes to the safe state."""
    daemon, meter, _, clock = make()
    with capture_logs() as logs:
        cycles = await run(daemon, clock, 30)  # the fake meter's values never change
    charging = [c.now - 1000 for c in cycles if c.decision.command.current_a > 0]
    assert charging and max(charging) <= 120 + 5
    paused = [c for c in cycles if c.now - 1000 > 125]
    assert paused and all(c.decision.command.current_a == 0 and "stale" in c.decision.reason for c in paused)
    assert sum(1 for e in logs if e["event"] == "meter_values_frozen") == 1
    frozen_read = meter.read

    async def moving() -> SiteReading:
        r = await frozen_read()
        return SiteReading(r.grid_power_w - clock.t % 7, r.pv_power_w, 0.0, 50.0, r.timestamp_s)

    meter.read = moving  # type: ignore[method-assign]
    cycles = await run(daemon, clock, 3)
    assert "stale" not in cycles[-1].decision.reason


async def test_a_hanging_meter_never_holds_up_the_cycle_and_is_cut_off_after_max_age() -> None:
    import asyncio
    import time

    clock = Clock()
    meter, charger = Meter(clock), Charger(clock)
    config = config_with("{cloud_filter: 'off', interval_s: 1, max_age_s: 3, frozen_s: 0}")
    daemon = Daemon(config, meter, charger, clock=clock)
    await daemon.cycle()
    clock.t += 1
    assert charger.applied[-1].current_a == 12.0
    hung = asyncio.Event()

    async def hang() -> SiteReading:
        hung.set()
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    meter.read = hang  # type: ignore[method-assign]
    with capture_logs() as logs:
        for _ in range(5):
            wall0 = time.monotonic()
            cycle = await daemon.cycle()
            assert time.monotonic() - wall0 < 1.5  # one interval at most, never the hang
            clock.t += 1
    assert hung.is_set() and daemon.stats.late_reads >= 2
    assert cycle.decision.command.current_a == 0 and "stale" in cycle.decision.reason
    assert any(e["event"] == "device_unavailable" and "no answer within 3 s" in e["error"] for e in logs)
    assert not daemon._reads.inflight or not daemon._reads.inflight["meter"].task.done()


async def test_a_mode_set_over_the_api_survives_a_restart_until_changed(tmp_path: Any) -> None:
    state = tmp_path / "state" / "state.json"
    clock = Clock()
    daemon = Daemon(CONFIG, Meter(clock), Charger(clock), clock=clock, state_file=state)
    assert daemon.mode == "pv"
    daemon.set_mode("fast", source="api")
    cycle = await daemon.cycle()
    assert cycle.decision.mode == "fast" and cycle.decision.command.current_a == 16
    with pytest.raises(ValueError, match="unknown mode 'turbo'"):
        daemon.set_mode("turbo", source="api")  # type: ignore[arg-type]
    # a restart: the saved mode wins over the config's
    with capture_logs() as logs:
        again = Daemon(CONFIG, Meter(clock), Charger(clock), clock=clock, state_file=state)
    assert again.mode == "fast"
    assert any(e["event"] == "mode_restored" for e in logs)
    # a reload that leaves control.mode alone keeps it; one that changes control.mode wins and is saved
    again.reload(config_with("{cloud_filter: 'off', interval_s: 5, max_age_s: 30, min_on_s: 60}"))
    await again.cycle()
    assert str(again.mode) == "fast"
    again.reload(config_with("{cloud_filter: 'off', interval_s: 5, max_age_s: 30, mode: minpv}"))
    await again.cycle()
    assert str(again.mode) == "minpv"
    assert Daemon(CONFIG, Meter(clock), Charger(clock), clock=clock, state_file=state).mode == "minpv"
    # a damaged state file: the config's mode, and a warning
    state.write_text("{not json")
    with capture_logs() as logs:
        assert Daemon(CONFIG, Meter(clock), Charger(clock), clock=clock, state_file=state).mode == "pv"
    assert any(e["event"] == "state_unreadable" for e in logs)


async def test_status_reports_readings_command_and_device_health() -> None:
    daemon, meter, _, clock = make()
    status = daemon.status()
    assert status["reason"] == "starting" and status["site"] is None
    await run(daemon, clock, 2)
    meter.fail = DeviceUnavailable(meter.name, "connection refused")
    await run(daemon, clock, 2)
    status = daemon.status()
    assert status["mode"] == "pv" and status["command"] == {"current_a": 12.0, "phases": 1}
    assert status["site"]["grid_power_w"] == -3000.0 and status["site"]["house_power_w"] == 500.0
    assert status["site"]["age_s"] == 15.0  # the last good reading was 3 cycles of 5 s ago
    assert status["charger"]["connected"] is True
    meter_health = status["devices"]["meter"]
    assert meter_health["ok"] is False and meter_health["consecutive_failures"] == 2
    assert "connection refused" in meter_health["last_error"]
    assert status["devices"]["charger"]["ok"] is True
    assert status["uptime_s"] == 20.0 and status["stats"]["cycles"] == 4
