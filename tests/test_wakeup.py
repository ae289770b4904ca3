"""The resume-recovery detector (pvcharge.control.wakeup) on a fake clock, and the daemon's use of it
(pvcharge.resume) with small in-process drivers."""

from __future__ import annotations

import pytest
from sitestub import FakeClock
from structlog.testing import capture_logs
from test_daemon import Charger as FakeCharger
from test_daemon import Clock
from test_daemon import Meter as FakeMeter
from test_daemon import run as run_cycles

from pvcharge.config import parse_config
from pvcharge.control.wakeup import WakeUp, WakeUpDetector
from pvcharge.daemon import Daemon
from pvcharge.errors import DeviceUnavailable, WriteDeferred
from pvcharge.readings import ChargerCommand, ChargerReading, IecState

T0 = 1_700_000_000.0
ON = ChargerCommand(10.0, 3)
PAUSED = ChargerCommand(0.0, 3)


def reading(
    clock: FakeClock, *, state: IecState | None = IecState.B, power_w: float = 0.0, connected: bool = True
) -> ChargerReading:
    charging = state in (IecState.C, IecState.D) if state is not None else power_w > 0
    return ChargerReading(
        connected=connected,
        charging=charging,
        power_w=power_w,
        current_a=10.0 if connected else 0.0,
        phases=3 if charging else 0,
        timestamp_s=clock(),
        iec_state=state if connected else IecState.A,
    )


def run(
    detector: WakeUpDetector,
    clock: FakeClock,
    seconds: float,
    *,
    command: ChargerCommand | None = ON,
    wake: bool = True,
    **kind: object,
) -> list[tuple[float, WakeUp]]:
    """Step every 5 s for ``seconds``; perform each wake-up asked for (``wake``). Returns the answers."""
    answers = []
    for _ in range(int(seconds // 5)):
        clock.advance(5)
        answer = detector.step(clock(), command, reading(clock, **kind))  # type: ignore[arg-type]
        if answer is not None:
            answers.append((clock() - T0, answer))
            if answer.send and wake:
                detector.attempted(clock())
    return answers


def test_a_car_that_does_not_start_is_woken_after_60_s_then_every_60_s_up_to_the_cap() -> None:
    clock = FakeClock(T0)
    detector = WakeUpDetector(2, 60.0, available=True)
    answers = run(detector, clock, 600)
    sent = [(t, a.attempt, a.of) for t, a in answers if a.send]
    # first cycle seen waiting at 5 s; 60 s later the first wake-up, 60 s after it the second, then none
    assert sent == [(65.0, 1, 2), (125.0, 2, 2)]
    [(t, told)] = [(t, a) for t, a in answers if not a.send]
    assert told.exhausted and t == 185.0  # said once, when a third would have been due
    assert detector.as_dict() == {"attempts": 2, "max_attempts": 2, "last_at_s": T0 + 125, "available": True}


def test_a_car_that_charges_is_never_woken() -> None:
    clock = FakeClock(T0)
    detector = WakeUpDetector(2, 60.0, available=True)
    assert run(detector, clock, 600, state=IecState.C, power_w=6900.0) == []
    # a charger without IEC states: charging is read from the reading's flag and the power
    assert run(detector, clock, 600, state=None, power_w=6900.0) == []
    assert detector.attempts_made == 0


def test_a_trickle_under_100_w_counts_as_not_charging_and_100_w_as_charging() -> None:
    clock = FakeClock(T0)
    assert run(WakeUpDetector(1, 60.0, available=True), clock, 70, power_w=99.0) != []
    assert run(WakeUpDetector(1, 60.0, available=True), clock, 70, power_w=100.0) == []


def test_a_paused_command_resets_the_wait_and_a_resume_starts_it_again() -> None:
    clock = FakeClock(T0)
    detector = WakeUpDetector(2, 60.0, available=True)
    assert run(detector, clock, 55) == []  # 50 s waited
    assert run(detector, clock, 30, command=PAUSED) == []  # paused: not waiting
    assert run(detector, clock, 55) == []  # the wait starts anew at the resume: 50 s
    assert run(detector, clock, 15) != []  # 60 s after the resume
    assert run(detector, clock, 30, command=None) == []  # the command is unknown (a failed write)


def test_wake_up_attempts_0_never_answers() -> None:
    clock = FakeClock(T0)
    assert run(WakeUpDetector(0, 60.0, available=True), clock, 600) == []
    assert run(WakeUpDetector(0, 60.0, available=False), clock, 600) == []


def test_a_charger_without_wake_up_is_reported_once_per_session() -> None:
    clock = FakeClock(T0)
    detector = WakeUpDetector(2, 60.0, available=False)
    answers = run(detector, clock, 600)
    assert [(t, a.available, a.send) for t, a in answers] == [(65.0, False, False)]
    run(detector, clock, 10, connected=False)  # unplugged: a new session
    assert [a.available for _, a in run(detector, clock, 600)] == [False]


def test_unplugging_ends_the_session_and_gives_the_attempts_back() -> None:
    clock = FakeClock(T0)
    detector = WakeUpDetector(1, 60.0, available=True)
    assert [a.send for _, a in run(detector, clock, 300)] == [True, False]  # one, then "exhausted"
    assert run(detector, clock, 10, connected=False) == []
    assert detector.attempts_made == 0 and detector.last_at_s is None
    assert [a.attempt for _, a in run(detector, clock, 70) if a.send] == [1]


def test_a_missing_reading_changes_nothing() -> None:
    clock = FakeClock(T0)
    detector = WakeUpDetector(1, 60.0, available=True)
    run(detector, clock, 30)
    clock.advance(100)
    assert detector.step(clock(), ON, None) is None
    assert run(detector, clock, 5) != []  # the wait went on through the gap


def test_the_next_wake_up_waits_after_s_from_the_last_one() -> None:
    clock = FakeClock(T0)
    detector = WakeUpDetector(3, 30.0, available=True)
    assert [(t, a.attempt) for t, a in run(detector, clock, 35)] == [(35.0, 1)]
    # until the daemon reports it as attempted (sent, or failed), the same wake-up is asked for again
    asked = run(detector, clock, 40, wake=False)
    assert [(t, a.attempt) for t, a in asked] == [(65.0, 2), (70.0, 2), (75.0, 2)]
    assert [(t, a.attempt) for t, a in run(detector, clock, 35)] == [(80.0, 2), (110.0, 3)]


@pytest.mark.parametrize(("attempts", "after_s"), [(-1, 60.0), (1, 0.0)])
def test_nonsense_settings_are_refused(attempts: int, after_s: float) -> None:
    with pytest.raises(ValueError, match="attempts must be"):
        WakeUpDetector(attempts, after_s, available=True)


# -- the daemon's part (pvcharge.resume.CarWaker) with small in-process drivers ----------------------

FAST = parse_config(
    "meter: {type: huawei, host: 127.0.0.1}\n"
    "charger: {type: warp, url: 'http://127.0.0.1', phases: 1}\n"
    "control: {mode: fast, interval_s: 5, max_age_s: 30}\n"
)


class WakingCharger(FakeCharger):
    """A charger whose car never starts; ``wake_up`` raises the queued errors, then succeeds."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.wake_errors: list[BaseException] = []
        self.wake_ups = 0

    async def wake_up(self) -> None:
        self.wake_ups += 1
        if self.wake_errors:
            raise self.wake_errors.pop(0)


async def test_a_failing_wake_up_is_logged_counted_and_the_command_sent_again() -> None:
    clock = Clock()
    charger = WakingCharger(clock)
    daemon = Daemon(FAST, FakeMeter(clock), charger, clock=clock)
    charger.wake_errors = [DeviceUnavailable(charger.name, "no answer"), RuntimeError("driver bug")]
    with capture_logs() as logs:
        await run_cycles(daemon, clock, 14)  # 65 s: the first wake-up is due
        assert charger.wake_ups == 1 and len(charger.applied) == 2  # sent again after the failure
        assert charger.forgotten == 1
        await run_cycles(daemon, clock, 12)  # 60 s later the second, a driver bug: still no crash
    failed = [e for e in logs if e["event"] == "car_wake_up_failed"]
    assert [(e["attempt"], e["of"]) for e in failed] == [(1, 2), (2, 2)]
    assert failed[0]["error"] == "no answer" and failed[1]["error"] == "RuntimeError('driver bug')"
    status = daemon.status()["wake_up"]
    assert status["attempts"] == 2 and status["failures"] == 2
    assert status["last_error"] == "RuntimeError('driver bug')"


async def test_a_deferred_wake_up_is_not_counted_and_goes_next_cycle() -> None:
    clock = Clock()
    charger = WakingCharger(clock)
    daemon = Daemon(FAST, FakeMeter(clock), charger, clock=clock)
    charger.wake_errors = [WriteDeferred(charger.name, "budget", 10.0)]
    with capture_logs() as logs:
        await run_cycles(daemon, clock, 13)  # 60 s: the first wake-up is due, and deferred
        assert charger.wake_ups == 1
        assert charger.forgotten == 0  # nothing was sent by the deferred one: no need to send again
        await run_cycles(daemon, clock, 2)
    assert charger.wake_ups == 2  # deferred once, sent the next cycle
    assert [e["attempt"] for e in logs if e["event"] == "car_wake_up"] == [1]
    assert charger.forgotten == 1  # a wake-up that went out: the command is sent again
    assert daemon.status()["wake_up"]["attempts"] == 1


async def test_a_charger_without_wake_up_says_once_that_the_car_does_not_start() -> None:
    clock = Clock()
    charger = FakeCharger(clock)
    daemon = Daemon(FAST, FakeMeter(clock), charger, clock=clock)
    with capture_logs() as logs:
        await run_cycles(daemon, clock, 60)
    [told] = [e for e in logs if e["event"].startswith("car_")]
    assert told["event"] == "car_not_starting" and "cannot wake a car" in told["action"]
    assert daemon.status()["wake_up"] == {
        "attempts": 0,
        "max_attempts": 2,
        "last_at_s": None,
        "available": False,
        "failures": 0,
        "last_error": None,
    }


async def test_a_vehicle_with_wake_up_false_is_never_woken_and_a_reload_keeps_it_so() -> None:
    """Two loadpoints whose cars never start: carport's gets its wake-up, garage's car has
    ``vehicle: {wake_up: false}`` and gets none (not after a reload either)."""
    text = (
        "meter: {type: huawei, host: 127.0.0.1}\n"
        "control: {interval_s: 5, max_age_s: 30}\n"
        "site: {max_grid_current_a: 35}\n"
        "loadpoints:\n"
        "  - {name: carport, mode: fast, charger: {type: warp, url: 'http://127.0.0.1', phases: 1}}\n"
        "  - {name: garage, mode: fast, charger: {type: warp, url: 'http://127.0.0.2', phases: 1},\n"
        "     vehicle: {wake_up: false}}\n"
    )
    clock = Clock()
    carport, garage = WakingCharger(clock), WakingCharger(clock)
    garage.name = "charger garage"  # type: ignore[misc]
    config = parse_config(text, environ={})
    daemon = Daemon(config, FakeMeter(clock), [carport, garage], clock=clock)  # type: ignore[list-item]
    await run_cycles(daemon, clock, 14)  # 65 s: carport's first wake-up is due
    assert (carport.wake_ups, garage.wake_ups) == (1, 0)
    assert len(garage.applied) == 1  # garage was offered current all along: it would have been due
    daemon.reload(config)
    await run_cycles(daemon, clock, 12)
    assert (carport.wake_ups, garage.wake_ups) == (2, 0)
    status = {lp["name"]: lp["wake_up"] for lp in daemon.status()["loadpoints"]}
    assert status["garage"]["max_attempts"] == 0 and status["carport"]["max_attempts"] == 2
