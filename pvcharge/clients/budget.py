"""A request budget for a server that counts requests in a rolling window: at most ``requests`` in any
``window_s``, as the server counts them, whatever the latency.

The server counts a request when it arrives, which the client does not see: some time between sending
it and getting the answer (or giving up on it).  So a request takes its slot when it is sent and keeps it
until ``window_s + margin_s`` after it ended (free again at that instant); a request in flight keeps its
slot until it ends.  Then no window of ``window_s`` on the server's clock (half-open; closed too if
``margin_s > 0``) can hold more than ``requests`` of them: if it held one more, the last of them to be
sent was sent less than ``window_s`` after the others arrived, hence after they were sent and less than
``window_s`` after they ended, so it found every slot taken.  ``margin_s`` covers a server that rounds
its times (to whole seconds, say) and a window it counts inclusively.

``reserve`` slots are kept for the requests that must go when the rest of the budget is spent (a stop
command): an ordinary request may use ``requests - reserve`` slots, a reserved one all of them.

A server that refused a request for want of room (HTTP 429 with ``Retry-After``, :meth:`hold_until`)
has shown that it counts more than the client knew of (another client on the account, a request the
client took for lost): nothing goes before the time it gave, and from then on its window counts as
full, one slot freeing at that time and the others later (see :meth:`RequestBudget.hold_until`).

A command the budget had no room for (:meth:`command_waiting`) gets the next free slot: until it is
sent, or for ``window_s + margin_s`` if it is not offered again, polls leave one slot for it.  Without
that, polls that come as often as the window is long (a poll every 10 s for a window of 10 s) take every
free slot as it frees, and a command offered after them never goes.

A token bucket (:class:`TokenBucket`: a burst, then a steady rate) suits a server that publishes a rate
rather than a window (the Easee cloud's settings and state reads); both meet :class:`Budget`, the
protocol a client takes requests from.

Pure: no I/O, no sleeping; time comes from ``clock`` (a clock stepping backwards counts as no time
passing).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from pvcharge.errors import RateLimited


class BudgetSpent(RateLimited):
    """A request not carried out for want of request budget: the client's budget had no slot for it
    (nothing sent), or the server refused it as one too many (HTTP 429, nothing applied), as the
    raising client documents.  ``retry_after_s``: when the budget has room again."""


class RequestBudget:
    """At most ``requests`` requests in any ``window_s`` on the server's count (see the module docstring).

    Args:
        requests: requests the server allows in any ``window_s``, >= 1.
        window_s: the server's window, in s, > 0.
        clock: seconds, e.g. ``time.time``.
        reserve: slots kept for reserved requests (:meth:`wait_s` with ``reserved=True``), 0 <= reserve
            < requests.
        margin_s: a finished request keeps its slot this much longer than ``window_s``, in s, >= 0.

    Raises:
        ValueError: an argument out of its range.
    """

    def __init__(
        self,
        requests: int,
        window_s: float,
        clock: Callable[[], float],
        *,
        reserve: int = 0,
        margin_s: float = 1.0,
    ) -> None:
        if requests < 1 or not window_s > 0 or not 0 <= reserve < requests or not margin_s >= 0:
            raise ValueError(
                "expected requests >= 1, window_s > 0, 0 <= reserve < requests and margin_s >= 0, got "
                f"{requests}, {window_s}, {reserve}, {margin_s}"
            )
        self.requests = requests
        self.window_s = window_s
        self.reserve = reserve
        self.margin_s = margin_s
        self._clock = clock
        self._held_until: list[float] = []  #: per finished request still counted: when it stops counting
        self._command_waits_until = -float("inf")  #: polls leave a slot for a waiting command until then
        self.in_flight = 0  #: requests sent and not yet ended

    def __repr__(self) -> str:
        return f"RequestBudget({self.requests} per {self.window_s:g} s, reserve={self.reserve})"

    def wait_s(self, count: int = 1, *, reserved: bool = False, command: bool = False) -> float:
        """Seconds until ``count`` more requests may be sent; 0 if they may go now; ``inf`` if more than
        the budget ever lets through at once (``requests``, ``requests - reserve`` unless ``reserved``).

        ``reserved``: the requests may use the reserve.  ``command``: they are commands, for which polls
        leave a slot while one waits (:meth:`command_waiting`); other requests (polls) do.  If they
        could go only after requests now in flight end, which takes as long as they take, the least it
        can be: ``window_s + margin_s``.
        """
        now = self._clock()
        held = sorted(t for t in self._held_until if t > now)
        self._held_until = held
        limit = self.requests - (0 if reserved else self.reserve)
        if count > limit:
            return math.inf
        if not command and now <= self._command_waits_until:
            limit -= 1
        excess = self.in_flight + len(held) + count - limit
        if excess <= 0:
            return 0.0
        if excess > len(held):
            return self.window_s + self.margin_s
        return held[excess - 1] - now

    def command_waiting(self) -> None:
        """A command found no room (:meth:`wait_s`): polls leave a slot for it for ``window_s + margin_s``,
        or until a command is sent (:meth:`begin` with ``command=True``)."""
        self._command_waits_until = self._clock() + self.window_s + self.margin_s

    def begin(self, *, command: bool = False) -> None:
        """A request is being sent (call :meth:`wait_s` first): it takes a slot.  ``command``: a command,
        which ends a wait of :meth:`command_waiting`."""
        self.in_flight += 1
        if command:
            self._command_waits_until = -float("inf")

    def end(self) -> None:
        """The request :meth:`begin` announced ended (answered, failed or cut off): its slot is held
        ``window_s + margin_s`` more."""
        self.in_flight = max(0, self.in_flight - 1)
        self._held_until.append(self._clock() + self.window_s + self.margin_s)

    def hold_until(self, t_s: float, *, refused: bool = False) -> None:
        """The server refused a request for want of room until ``t_s`` (its ``Retry-After``; call it
        after the refused request's :meth:`end`).

        Nothing goes before ``t_s``, and from then on the window counts as full as the server said: one
        slot frees at ``t_s``, then the slots known here that are held longer (the newest ``requests -
        1``), the rest ``(window_s + margin_s) / requests`` apart (what the server counts is not known);
        never fewer slots or shorter holds than known here.  ``refused``: the request that ended last
        drew the refusal; it did not go through, so its slot is given back first.  Requests in flight
        keep their slots on top, until a window after they end.
        """
        now = self._clock()
        held = sorted(t for t in self._held_until if t > now)
        if refused and held:
            held.pop()  # the slot of the request that ended last: held longest (a steady clock)
        hold_s = self.window_s + self.margin_s
        known = [t for t in held if t > t_s][-(self.requests - 1) :] if self.requests > 1 else []
        step_s = hold_s / self.requests
        spaced = [t_s + i * step_s for i in range(1, self.requests - len(known))]
        server = [t_s, *spaced, *known]
        self._held_until = sorted([*server, *held[: len(held) - len(known)]])[-self.requests :]


class Budget(Protocol):
    """A request budget on an injected clock (:class:`TokenBucket`, :class:`RequestBudget`): what a client
    asks of it around each request."""

    def wait_s(self, count: int = 1) -> float:
        """Seconds until ``count`` requests may go (0 if they may now)."""
        ...

    def begin(self) -> None:
        """A request is being sent (:meth:`wait_s` said it may): it takes from the budget."""
        ...

    def end(self) -> None:
        """The request :meth:`begin` announced ended (answered, failed or cut off)."""
        ...

    def hold_until(self, t_s: float, *, refused: bool = False) -> None:
        """Nothing before ``t_s`` (a server's ``Retry-After``); ``refused``: the request that ended last
        drew it."""
        ...


class TokenBucket:
    """A token bucket on an injected clock: at most ``capacity + per_minute × T / 60`` takes in any T s.

    It starts full.  Pure: no I/O, no sleeping; time comes from ``clock`` (a clock stepping backwards
    counts as no time passing).

    Args:
        capacity: the most tokens it holds (the burst), >= 1.
        per_minute: refill rate in tokens per minute, > 0.
        clock: seconds, e.g. ``time.time``.

    Raises:
        ValueError: capacity < 1 or per_minute <= 0.
    """

    def __init__(self, capacity: int, per_minute: float, clock: Callable[[], float]) -> None:
        if capacity < 1 or not per_minute > 0:
            raise ValueError(f"capacity must be >= 1 and per_minute > 0, got {capacity}, {per_minute}")
        self.capacity = capacity
        self.per_minute = per_minute
        self._clock = clock
        self._tokens = float(capacity)
        self._at = clock()
        self._not_before = -math.inf  # a server's Retry-After: no token before this time

    @property
    def max_per_minute(self) -> float:
        """The most takes in any 60 s: ``capacity + per_minute``."""
        return self.capacity + self.per_minute

    def _refill(self) -> None:
        now = self._clock()
        if now > self._at:
            self._tokens = min(float(self.capacity), self._tokens + (now - self._at) * self.per_minute / 60)
        self._at = now

    def wait_s(self, count: int = 1) -> float:
        """Seconds until ``count`` tokens are there (0 if they are now)."""
        self._refill()
        held_s = self._not_before - self._at
        missing = count - self._tokens
        refill_s = 0.0 if missing <= 1e-9 else missing * 60 / self.per_minute
        return max(refill_s, held_s) if held_s > 0 else refill_s

    def try_take(self, count: int = 1) -> float:
        """Take ``count`` tokens if they are there and return 0; otherwise take none and return the wait
        in s."""
        wait = self.wait_s(count)
        if wait == 0.0:
            self._tokens -= count
        return wait

    def begin(self) -> None:
        """A request is being sent (:meth:`wait_s` said it may): it takes a token."""
        self._refill()
        self._tokens -= 1

    def end(self) -> None:
        """The request ended: nothing to do (a token is taken when it is sent)."""

    def hold_until(self, t_s: float, *, refused: bool = False) -> None:
        """No token before ``t_s`` (a server's ``Retry-After``); one token is there at ``t_s``.  The token
        of a ``refused`` take is not given back: the hold covers it."""
        self._refill()
        self._tokens = min(self._tokens, 1.0 - (t_s - self._at) * self.per_minute / 60)
        self._not_before = max(self._not_before, t_s)
