"""What an Easee write sends: the requests that take the charger to a command or wake its car, in the
order that keeps it never above the command, and what the charger holds once each is accepted
(reference ``chargers.md`` §1.3–§1.5; sources as keyed there).

- ``charger_current``: one ``set_dynamic_charger_current {"amps": A, "minutes": 0}`` command (0 A
  pauses).
- ``circuit_current``: the circuit settings with all three phases (P1 = current and P2 = P3 = 0 on one
  phase, else all three = current; an omitted phase goes to 0 [GEN; ioBroker.easee#23]), and
  ``resume_charging`` while the charger's own pause is unknown; the resume sets 32 A (§1.4 [EV]), so it
  goes first only while the circuit held is no more than the command on every phase, else after the
  circuit write: a request refused after the first leaves the charger no higher than the command.
- The wake-up: ``pause_charging``, then ``resume_charging`` under the circuit current held
  (``circuit_current``) or ``set_dynamic_charger_current`` with the current held before
  (``charger_current``).

Pure: no I/O.  The driver that sends them, within its budgets and intervals, is
:mod:`pvcharge.chargers.easee`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from pvcharge.chargers.easee_observations import OBSERVATIONS

Control = Literal["charger_current", "circuit_current"]


@dataclass(frozen=True, slots=True)
class Held:
    """What the charger holds as far as the driver knows; ``None`` = unknown (send it)."""

    dcc_a: int | None = None  #: charger_current: dynamic charger current in A, 0 = paused
    circuit_a: tuple[int, int, int] | None = None  #: circuit_current: dynamic circuit current P1..P3 in A
    resumed: bool | None = None  #: circuit_current: ``resume_charging`` accepted since the state was lost


@dataclass(frozen=True, slots=True)
class Write:
    """One request of a write and what the charger holds once it is accepted."""

    budget: str
    path: str
    body: dict[str, int] | None
    after: Held


@dataclass(frozen=True, slots=True)
class Paths:
    """The request paths of one charger (chargers.md §1.2–§1.4); see :func:`paths_for`."""

    state: str  #: ``GET``: the observations the driver reads
    dcc: str  #: ``POST``: the dynamic charger current command
    resume: str  #: ``POST``: ``resume_charging``
    pause: str  #: ``POST``: ``pause_charging``
    settings: str  #: ``POST``: the charger settings
    circuit: str  #: ``POST``: the circuit settings


def paths_for(charger_id: str, site_id: int | None, circuit_id: int | None) -> Paths:
    """The request paths of charger ``charger_id`` on circuit ``circuit_id`` of site ``site_id``."""
    commands = f"/api/chargers/{charger_id}/commands"
    return Paths(
        state=f"/state/{charger_id}/observations?ids={','.join(str(i) for i in OBSERVATIONS)}",
        dcc=f"{commands}/set_dynamic_charger_current",
        resume=f"{commands}/resume_charging",
        pause=f"{commands}/pause_charging",
        settings=f"/api/chargers/{charger_id}/settings",
        circuit=f"/api/sites/{site_id}/circuits/{circuit_id}/settings",
    )


def plan(
    held: Held, amps: int, phases: int, *, control: Control, phase_switching: bool, paths: Paths
) -> list[Write]:
    """The requests that take a charger holding ``held`` to ``amps`` A (0 pauses) on ``phases``, in order;
    empty when it holds them already.  ``phases`` counts only with ``phase_switching``."""
    if control == "charger_current":
        if held.dcc_a == amps:
            return []
        body = {"amps": amps, "minutes": 0}
        return [Write("commands", paths.dcc, body, replace(held, dcc_a=amps))]
    one_phase = phase_switching and phases == 1
    circuit = (amps, 0, 0) if one_phase else (amps, amps, amps)
    body = {f"dynamicCircuitCurrentP{i + 1}": a for i, a in enumerate(circuit)}
    set_circuit = Write("circuit_settings", paths.circuit, body, replace(held, circuit_a=circuit))
    if amps == 0 or held.resumed is True:
        return [] if held.circuit_a == circuit else [set_circuit]
    # the 32 A a resume sets stay capped by the circuit: resume first while the circuit held is no
    # more than the command on every phase (e.g. 0 A, paused), so a circuit write refused after it
    # leaves the charger as it was; otherwise the circuit first
    resume = Write("commands", paths.resume, None, replace(held, resumed=True))
    if held.circuit_a is not None and all(h <= c for h, c in zip(held.circuit_a, circuit, strict=True)):
        after = replace(set_circuit.after, resumed=True)
        resume_first = [resume, replace(set_circuit, after=after)]
        return resume_first if held.circuit_a != circuit else [resume]
    return [set_circuit, replace(resume, after=replace(set_circuit.after, resumed=True))]


def wake_up_writes(held: Held, amps: int, *, control: Control, paths: Paths) -> tuple[Write, Write]:
    """The pause and the resume that wake a car, for a charger holding ``held`` at ``amps`` A (> 0)."""
    if control == "circuit_current":
        pause = Write("commands", paths.pause, None, replace(held, resumed=False))
        resume = Write("commands", paths.resume, None, replace(held, resumed=True))
    else:
        pause = Write("commands", paths.pause, None, replace(held, dcc_a=0))
        resume = Write("commands", paths.dcc, {"amps": amps, "minutes": 0}, held)
    return pause, resume


def total_a(held: Held, control: Control) -> float:
    """Amps offered summed over phases (charger_current: per phase), ``inf`` when unknown."""
    offered = held.dcc_a if control == "charger_current" else held.circuit_a
    if offered is None:
        return math.inf
    return float(offered if isinstance(offered, int) else sum(offered))
