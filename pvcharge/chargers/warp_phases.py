"""Phase switching of a Tinkerforge WARP3/WARP4 (``phase_switching: true``): :class:`WarpPhases`, which
:class:`pvcharge.chargers.warp.WarpCharger` asks to bring the box to a command's phases before it writes
the current; the current on the phases the box is on meanwhile is the charger's (``warp.py``).

Device facts (reference ``chargers.md`` §3.2–3.4, W-fw ``power_manager``, W-evcc ``charger/warp-ws.go``):

- The box offers it only if at boot its energy manager's phase switching is "external" (PV-excess
  charging off), ``evse/management_enabled`` is off, the EVSE is >= 3.0 and ``phases_connected`` > 1;
  then ``info/features`` lists ``phase_switch`` and ``power_manager/external_control`` accepts writes.
- Once per connection the driver checks that, and writes ``evse/phase_auto_switch {"enabled": false}``
  (evcc does the same for warp3/warp4) so the box does not switch by itself.
- ``evse/low_level_state``: ``phases_current`` 1 or 3 (``power_manager/low_level_state.is_3phase``
  agrees), ``phases_requested``, ``phases_state`` 0 idle, 1 stopping charge, 2 contactor off, 3 CP
  disconnect, 4 switching, 5 CP reconnect, 6 waiting for the car, 7 contactor on.
- ``power_manager/state.external_control``: 0 available, 1 nothing requested yet (§3.4 step 2, where
  evcc goes ahead on 0 and 1; §3.3 calls 1 "disabled in settings": a box that then refuses gets the
  back-off below), 2 unavailable (contactor check, no CP disconnect, input block), 3 switching.
- ``POST power_manager/external_control {"phases_wanted": 1|3}`` starts a switch: the box stops the
  charge, switches its contactors and reconnects the car, which then draws the external current on the
  new phases.  400 with a reason when not allowed (e.g. to 3 while ``phases_info`` bit 0 marks a
  single-phase car) or on a *different* request mid-switch; the same request while busy is ignored.
- After a reconnect evcc sends the last ``phases_wanted`` again (a rebooted box may have lost it).

The requests and the decoding of ``evse/low_level_state`` and ``power_manager/state`` are
:mod:`pvcharge.clients.warp`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pvcharge.clients.warp import PhaseSwitchState, WarpClient, parse_external_control, parse_low_level_state
from pvcharge.errors import DeviceProtocolError

#: after a ``phases_wanted`` request, accepted or refused, the next one waits at least this long, in s:
#: a refused switch is retried later, never in a loop (firmware that silently ignores a request is
#: covered too).
PHASE_REQUEST_INTERVAL_S = 60.0

#: ``info/name.type`` values of boxes that switch phases themselves (chargers.md §3.4: WARP2 switches
#: only through a WARP Energy Manager, WARP1 not at all).
PHASE_SWITCH_TYPES = ("warp3", "warp4")

#: ``power_manager/state.external_control`` codes in which a request is not sent (chargers.md §3.3, §3.4).
_EXTERNAL_CONTROL_REFUSED = {
    2: "unavailable (contactor check, no CP disconnect or input block)",
    3: "switching, requests are ignored",
}


@dataclass(frozen=True)
class PhaseStep:
    """What :meth:`WarpPhases.switch` found or did toward a command's phases.

    Attributes:
        box_phases: the phases the box is switched to or switching to (``phases_requested``, 1 or 3).
        why: ``None``: the box is on the phases and not switching; else what holds the current back:
            a switch to them in progress or requested now, or (``refused``) why none was requested.
        refused: no switch to the phases is under way: the box stays on ``box_phases`` meanwhile.
        retry_after_s: with ``refused``, s until the next phase request may go out (0: now).
    """

    box_phases: int
    why: str | None = None
    refused: bool = False
    retry_after_s: float = 0.0


class WarpPhases:
    """The phase switching of one WARP3/WARP4 and what it remembers across applies: whether this
    connection was prepared, the last ``phases_wanted`` the box accepted, the request back-off.

    Args:
        api: the charger's HTTP client.
        name: the device name, on errors.
        clock: seconds on the daemon's clock, for the request back-off.
        log: the charger's bound logger.

    Attributes:
        box_phases: the phases the box's contactors are switched to (1 or 3,
            ``evse/low_level_state.phases_current``) as last read; ``None`` before that.
    """

    def __init__(self, api: WarpClient, *, name: str, clock: Callable[[], float], log: Any) -> None:
        self.name = name
        self.box_phases: int | None = None
        self._api = api
        self._base_url = api.base_url
        self._clock = clock
        self._log = log
        self._prepared = False  # phase switching checked and auto switching off on this connection
        self._phases_wanted: int | None = None  # the last phases_wanted the box accepted
        self._resend_phases = False  # a connection broke since that request: send it again
        self._next_request_s = -math.inf  # no phases_wanted request before this clock time
        self._unavailable_logged: int | None = None  # external_control code last logged as refusal

    async def prepare(self) -> None:
        """Once per connection: check the box offers phase switching and turn its auto switching off;
        after a broken connection, send the last accepted ``phases_wanted`` again."""
        if not self._prepared:
            await self._check()
            self._prepared = True
        if self._resend_phases and self._phases_wanted is not None and self._request_wait_s() == 0:
            self._resend_phases = False
            self._log.info("warp.phases_resend", phases=self._phases_wanted, note="after a reconnect")
            await self._request(self._phases_wanted)

    def forget(self) -> None:
        """Send the last accepted ``phases_wanted`` again with the next :meth:`prepare`."""
        self._resend_phases = self._phases_wanted is not None

    def closed(self) -> None:
        """The connection was closed: check the box again with the next :meth:`prepare`."""
        self._prepared = False

    def connection_lost(self) -> None:
        """The box did not answer and may reboot: redo the preparation and send the last
        ``phases_wanted`` again."""
        self._prepared = False
        self.forget()

    async def _check(self) -> None:
        """Check ``info/name.type`` and ``info/features``, then POST ``evse/phase_auto_switch
        {"enabled": false}``."""
        info = await self._api.get_json("info/name")
        box_type = info.get("type") if isinstance(info, dict) else None
        if box_type not in PHASE_SWITCH_TYPES:
            raise DeviceProtocolError(
                self.name,
                f"phase_switching needs a WARP3 or WARP4, but info/name.type is {box_type!r} (a WARP2 "
                "switches phases only through a WARP Energy Manager); set charger.phase_switching: false",
            )
        if not await self._api.has_feature("phase_switch"):
            raise DeviceProtocolError(
                self.name,
                "phase_switching is set, but the box does not offer it ('phase_switch' is not in "
                "info/features). On the WARP: energy manager settings: PV-excess charging off and phase "
                'switching "external"; EVSE management (evse/management_enabled) off; EVSE >= 3.0 and '
                "phases_connected 3. The box reads these at boot: restart it after a change. Or set "
                "charger.phase_switching: false",
            )
        if await self._api.request("POST", "evse/phase_auto_switch", {"enabled": False}) is None:
            raise self._api.not_found("POST", "evse/phase_auto_switch")

    async def switch(self, phases: int) -> PhaseStep:
        """Bring the box toward ``phases`` (see :meth:`pvcharge.chargers.warp.WarpCharger.apply`): read
        ``evse/low_level_state``; unless the box is on or switching to ``phases``, another switch is in
        progress or the last request was less than :data:`PHASE_REQUEST_INTERVAL_S` ago, request them."""
        box = await self.read_state()
        if box.phases_requested == phases:
            if not box.switching:
                return PhaseStep(phases)
            return PhaseStep(phases, f"switch to {phases}p in progress ({box.describe()})")
        if box.switching:
            why: str | None = f"another switch is in progress ({box.describe()})"
        elif self._request_wait_s() > 0:
            why = f"the last phase request was less than {PHASE_REQUEST_INTERVAL_S:g} s ago"
        else:
            why = await self._request(phases)
        if why is None:
            return PhaseStep(phases, f"switch to {phases}p requested")
        return PhaseStep(box.phases_requested, why, refused=True, retry_after_s=self._request_wait_s())

    async def _request(self, phases: int) -> str | None:
        """Ask the box to switch to ``phases`` unless ``external_control`` refuses: ``None`` when the box
        accepted, else why not (logged)."""
        control = await self._external_control()
        if control in _EXTERNAL_CONTROL_REFUSED:
            why = f"power_manager/state.external_control is {control}: {_EXTERNAL_CONTROL_REFUSED[control]}"
            if self._unavailable_logged != control:
                self._log.info("warp.phase_switch_unavailable", phases=phases, reason=why)
                self._unavailable_logged = control
            return why
        self._unavailable_logged = None
        response = await self._api.request(
            "POST", "power_manager/external_control", {"phases_wanted": phases}, refusal_ok=True
        )
        self._next_request_s = self._clock() + PHASE_REQUEST_INTERVAL_S
        if response is None:
            raise self._api.not_found(
                "POST",
                "power_manager/external_control",
                "the box offers phase switching only if it was set up for it at boot (chargers.md §3.4)",
            )
        if response.status_code == 400:
            reason = response.text.strip()[:200]
            self._log.warning(
                "warp.phase_switch_refused", phases=phases, reason=reason, retry_in_s=PHASE_REQUEST_INTERVAL_S
            )
            return f"the box refused it (HTTP 400): {reason}"
        self._phases_wanted = phases
        self._resend_phases = False
        self._log.info("warp.phase_switch_requested", phases=phases)
        return None

    def _request_wait_s(self) -> float:
        """Seconds until the next ``phases_wanted`` request may go out (0: now)."""
        return max(0.0, self._next_request_s - self._clock())

    async def read_state(self) -> PhaseSwitchState:
        """GET ``evse/low_level_state``; updates :attr:`box_phases` and logs a completed switch.

        Raises:
            DeviceProtocolError: no such endpoint (HTTP 404), or a malformed state.
        """
        payload = await self._api.get_json("evse/low_level_state")
        if payload is None:
            raise self._api.not_found("GET", "evse/low_level_state")
        try:
            state = parse_low_level_state(payload)
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{self._base_url}: {exc}") from exc
        if self.box_phases is not None and state.phases_current != self.box_phases:
            self._log.info("warp.phases_switched", phases=state.phases_current, before=self.box_phases)
        self.box_phases = state.phases_current
        return state

    async def _external_control(self) -> int:
        """GET ``power_manager/state.external_control``."""
        payload = await self._api.get_json("power_manager/state")
        if payload is None:
            raise self._api.not_found("GET", "power_manager/state")
        try:
            return parse_external_control(payload)
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{self._base_url}: {exc}") from exc
