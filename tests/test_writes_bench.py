"""benchmarks.writes: the kinds of charger writes and the ones soon undone, on scripted decisions."""

from __future__ import annotations

from collections import Counter

from benchmarks.writes import Counted, kind_of, table
from pvcharge.control import Decision
from pvcharge.readings import ChargerCommand


def test_kind_of_reads_the_reason_and_the_step() -> None:
    six, seven, nine = ChargerCommand(6, 3), ChargerCommand(7, 3), ChargerCommand(9, 3)
    assert kind_of(six, seven, "up: surplus 4900 W -> 7 A on 3p") == "rise 1 A"
    assert kind_of(six, nine, "up: surplus 6300 W -> 9 A on 3p") == "rise ≥ 2 A"
    assert kind_of(nine, six, "down: surplus 4200 W -> 6 A on 3p") == "decrease ≥ 2 A"
    assert kind_of(six, ChargerCommand(16, 1), "switch to 1p: …") == "phase switch"
    assert kind_of(None, six, "start: surplus >= 4140 W for 144 s -> 6 A on 3p") == "start"
    assert kind_of(six, ChargerCommand(0, 3), "stop: surplus below 1380 W for 480 s") == "stop"
    assert kind_of(six, ChargerCommand(0, 3), "no vehicle connected") == "other"


class Scripted:
    """Returns the scripted (time → command, reason) decisions, holding the last one in between."""

    def __init__(self, script: dict[float, tuple[float, str]]) -> None:
        self.script, self.decision = script, Decision(ChargerCommand(0, 3), "waiting", "pv")

    def step(self, now: float, site: object, charger: object) -> Decision:
        if now in self.script:
            current_a, reason = self.script[now]
            self.decision = Decision(ChargerCommand(current_a, 3), reason, "pv")
        return self.decision


def test_a_rise_taken_back_soon_is_undone_and_a_second_rise_soon_is_a_staircase() -> None:
    kinds: Counter[str] = Counter()
    policy = Counted(
        Scripted(
            {
                0: (6, "start: …"),
                100: (7, "up: …"),
                130: (8, "up: …"),  # 30 s after a rise: a staircase step
                150: (7, "down: …"),  # 20 s after a rise: the rise undone
                400: (8, "up: …"),  # 250 s later: neither
            }
        ),
        kinds,
    )
    for t in range(0, 500, 5):
        policy.step(float(t), None, None)
    assert kinds == Counter({"start": 1, "rise 1 A": 3, "decrease 1 A": 1, "staircase": 1, "undone": 1})
    text = table({"variable": (1, kinds)})
    assert "| variable | 1 | 5 | 60 % |" in text  # 5 writes a day, 3 of them 1-A rises
    assert text.count("| 20 % | 20 % |") == 2  # undone and staircase: 1 of 5 each, in both rows
