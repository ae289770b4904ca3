"""A fixed site state for emulator tests: ``state()`` returns what the test set, and counts calls."""

from __future__ import annotations

from pvcharge.sim.site import SiteState


class FixedSite:
    """A state source whose state the test sets; ``calls`` counts ``state()`` calls (one a request)."""

    def __init__(self, state: SiteState) -> None:
        self.current = state
        self.calls = 0

    def state(self) -> SiteState:
        self.calls += 1
        return self.current
