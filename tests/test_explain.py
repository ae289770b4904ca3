"""The controller's decisions in words for people (status page, `pvcharge status`, Home Assistant)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvcharge.control import ChargePoint, ControlConfig, Controller
from pvcharge.control.controller import Decision
from pvcharge.control.explain import KINDS, in_words, kind_of
from pvcharge.readings import ChargerCommand
from pvcharge.sim.replay import ReplaySite, replay
from pvcharge.sim.trace import load_trace

TRACES = Path(__file__).resolve().parent.parent / "pvcharge" / "sim" / "data"


def decision(reason: str, current_a: float = 10.0, phases: int = 1) -> Decision:
    return Decision(ChargerCommand(current_a, phases), reason, "pv", 2500.0)


@pytest.mark.parametrize(
    ("reason", "current_a", "phases", "words"),
    [
        (
            "holding 16 A: 0.1 Wh over the surplus of 6 Wh",
            16,
            1,
            "Holding 16 A on 1 phase through a short dip",
        ),
        ("up: surplus 2500 W -> 10 A on 1p", 10, 1, "More surplus: current raised to 10 A on 1 phase."),
        (
            "stop: importing from the grid for 60 s",
            0,
            3,
            "Charging paused: the car was drawing from the grid.",
        ),
        ("stop: surplus below 4140 W for 240 s (max 3900 W)", 0, 3, "not enough surplus for several minutes"),
        ("meter reading stale: 42 s old > max_age_s 30 s: safe state, paused", 0, 1, "the car is paused"),
        ("meter reading stale: 42 s old > max_age_s 30 s: safe state, min current", 6, 1, "minimum current"),
        (
            "switch to 3p: 3p would have done 150 Wh better (needed 100 Wh)",
            6,
            3,
            "Switched to 6 A on 3 phases",
        ),
        ("fuse limit: 25 A per phase leaves the car 8.0 A (pv: ...)", 8, 3, "to stay within the main fuse"),
        (
            "switch to 1p: min current on 3p drew 161 Wh beyond the surplus (phase_down_deficit_wh 160 Wh)",
            13,
            1,
            "the least current on 3 phases was above the surplus",
        ),
    ],
)
def test_a_reason_in_words_has_no_internal_numbers(
    reason: str, current_a: float, phases: int, words: str
) -> None:
    text = in_words(decision(reason, current_a, phases))
    assert words in text
    assert "Wh" not in text and "max_age_s" not in text and "->" not in text


def test_an_unknown_kind_is_shown_as_it_is() -> None:
    assert in_words(decision("something new: 3 W")) == "something new: 3 W"


def test_every_reason_the_controller_gives_on_a_day_is_put_into_words() -> None:
    """Replays the bundled day in every mode with 1p/3p switching: each reason kind the controller
    produces must be one :data:`KINDS` knows (a new kind needs its words)."""
    trace = load_trace(TRACES / "serf_east_2022-03-19.csv")
    seen: set[str] = set()
    for mode in ("pv", "minpv", "fast", "off"):
        controller = Controller(ControlConfig(mode=mode), ChargePoint(phases="auto"))
        step = controller.step

        def spy(*args: object, _step: object = step) -> Decision:
            d: Decision = _step(*args)  # type: ignore[operator]
            seen.add(kind_of(d.reason))
            return d

        controller.step = spy  # type: ignore[method-assign]
        replay(trace, controller, interval_s=5.0, site=ReplaySite())
    unknown = seen - set(KINDS)
    assert not unknown, f"reason kinds without words: {unknown}"
    assert {"start", "up", "down", "pv", "mode fast", "mode off", "no vehicle connected"} <= seen, seen
