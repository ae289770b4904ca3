"""A controller decision in words for people: the status page, ``pvcharge status`` and Home Assistant.

:attr:`Decision.reason <pvcharge.control.controller.Decision>` is written for the log: it carries the
numbers behind the decision ("holding 16 A: 0.0 Wh over the surplus of 6 Wh"), and stays as it is in
the structured ``decision`` event. :func:`in_words` says the same to someone looking at the page
("Holding 16 A through a short dip in the surplus."), from the reason's kind (the text before its first
colon) and the decision's own fields. A reason of a kind this module does not know is shown as it is.
"""

from __future__ import annotations

from pvcharge.control.controller import Decision

#: The reason kinds :func:`in_words` puts into words; tests check that the controller produces no other.
KINDS = (
    "mode off",
    "mode fast",
    "no vehicle connected",
    "no meter reading yet",
    "waiting for a new meter reading",
    "meter reading stale",
    "fuse limit",
    "paused",
    "cloud filter filling",
    "waiting",
    "start",
    "stop",
    "switch to 1p",
    "switch to 3p",
    "down",
    "up",
    "holding",
    "pv",
    "minpv",
)


def kind_of(reason: str) -> str:
    """The kind of a reason: the text before its first colon, e.g. ``"up"``, ``"meter reading stale"``;
    ``"holding"`` for ``"holding 16 A: …"``."""
    kind = reason.split(":", 1)[0].strip()
    return "holding" if kind.startswith("holding ") else kind


def _amps(decision: Decision) -> str:
    c = decision.command
    return f"{c.current_a:g} A on {c.phases} phase{'s' if c.phases > 1 else ''}"


def _safe(decision: Decision) -> str:
    kept = "kept at the minimum current" if decision.command.current_a > 0 else "paused"
    return f"the car is {kept} to be safe."


def in_words(decision: Decision) -> str:
    """One sentence for people saying what the controller does and why, without internal numbers.

    Args:
        decision: a controller decision (:meth:`pvcharge.control.Controller.step`).

    Returns:
        e.g. ``"More surplus: current raised to 10 A on 1 phase."``; the reason itself for an unknown kind.
    """
    reason = decision.reason
    kind = kind_of(reason)
    charging = decision.command.current_a > 0
    if kind == "mode off":
        return "Mode off: pvcharge does not charge."
    if kind == "mode fast":
        return f"Fast mode: charging at {_amps(decision)}."
    if kind == "no vehicle connected":
        return "No car plugged in."
    if kind == "no meter reading yet":
        return "No reading from the meter yet: " + _safe(decision)
    if kind == "waiting for a new meter reading":
        return "Waiting for a new reading from the meter."
    if kind == "meter reading stale":
        return "The meter has not sent fresh values for a while: " + _safe(decision)
    if kind == "fuse limit":
        if not charging:
            return "Paused to stay within the main fuse."
        return f"Turned down to {_amps(decision)} to stay within the main fuse."
    if kind == "paused":
        return "Paused: waiting out the minimum pause before charging again."
    if kind == "cloud filter filling":
        return "Watching the surplus for a few minutes before deciding."
    if kind == "waiting":
        return "Not enough surplus to start the car yet."
    if kind == "start":
        return f"Enough surplus for several minutes: charging started at {_amps(decision)}."
    if kind == "stop":
        if "grid" in reason:
            return "Charging paused: the car was drawing from the grid."
        return "Charging paused: not enough surplus for several minutes."
    if kind in ("switch to 1p", "switch to 3p"):
        if "grid" in reason:
            return f"Switched to {_amps(decision)}: the car was drawing from the grid."
        if "beyond the surplus" in reason:
            return f"Switched to {_amps(decision)}: the least current on 3 phases was above the surplus."
        return f"Switched to {_amps(decision)}: that uses the surplus better."
    if kind == "down":
        return f"Less surplus: current lowered to {_amps(decision)}."
    if kind == "up":
        return f"More surplus: current raised to {_amps(decision)}."
    if kind == "holding":
        return f"Holding {_amps(decision)} through a short dip in the surplus."
    if kind == "pv":
        return f"Charging from the surplus at {_amps(decision)}."
    if kind == "minpv":
        return f"Min+PV: charging at {_amps(decision)}, at least the minimum current."
    return reason
