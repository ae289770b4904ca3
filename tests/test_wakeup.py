"""The resume-recovery detector (pvcharge.control.wakeup) on a fake clock."""

from __future__ import annotations

import pytest
from sitestub import FakeClock

from pvcharge.control.wakeup import WakeUp, WakeUpDetector
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
