"""The wallbox behind the AlphaESS Open API emulator (:class:`~pvcharge.sim.alphaess.AlphaEssEmulator`):
its ``evchargerStatus`` and what a start or a stop offers the car of the
:class:`~pvcharge.sim.site.SiteModel` (reference ``chargers.md`` §2.1, the SMILE-EVCT11, and its status
table).

The status follows ``remoteControlEvCharger`` and the simulated car: 1 (Available) while the car is
unplugged, which also ends a started session; 2 (Preparing) plugged in and not started; a start (allowed
in 2, 4, 5) offers ``wallbox_current_a`` on ``wallbox_phases`` to the site (the current set in the
AlphaESS app: the Open API cannot change it) and gives 3 (Charging) while the car draws and 5
(SuspendedEV) while it does not (not yet after the car's start delay, full, waiting); a stop (allowed in
3, 4, 5) offers 0 A and gives 6 (Finishing) while the car still draws and for at least
:data:`FINISHING_S`, then 2.  4 (SuspendedEVSE) and 9 (Faulted) do not occur: the emulated wallbox has no
load management of its own and no faults.  Which statuses allow a start or a stop is the HA
integration's reading (:data:`START_ALLOWED`, :data:`STOP_ALLOWED`); what the cloud answers otherwise
(6008) is the emulator's choice.

The endpoints that read and command it are :mod:`pvcharge.sim.alphaess`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pvcharge.sim.site import SiteModel

#: a stopped session shows status 6 (Finishing) at least this long, in s (the emulator's choice)
FINISHING_S = 5.0
WALLBOX_MODEL = "SMILE-EVCT11"  #: ``evchargerModel`` (chargers.md §2.1)

#: ``evchargerStatus`` codes the emulator gives (chargers.md §2.1).
AVAILABLE, PREPARING, CHARGING, SUSPENDED_EV, FINISHING = 1, 2, 3, 5, 6
#: statuses in which the HA integration sends a start / a stop (chargers.md §2.1 [A-ha ``can_control_ev``]).
START_ALLOWED = frozenset({2, 4, 5})
STOP_ALLOWED = frozenset({3, 4, 5})


class AlphaEssWallbox:
    """One AlphaESS wallbox at the simulated site: its status, started and stopped by the Open API.

    The state half of :class:`~pvcharge.sim.alphaess.AlphaEssEmulator`, which inherits it and serves it;
    its arguments are documented there.

    Args:
        site: the simulated site; ``site.offer()`` on a start, a stop and an unplug ending a session.
        wallbox_current_a: the current per phase it offers the car once started, in A.
        wallbox_phases: the phases it offers them on, 1 or 3.

    Raises:
        ValueError: ``wallbox_phases`` not 1 or 3.
    """

    _clock: Callable[[], float]  #: the serving emulator's (Unix seconds), for :data:`FINISHING_S`

    def __init__(self, site: SiteModel, *, wallbox_current_a: float, wallbox_phases: int) -> None:
        if wallbox_phases not in (1, 3):
            raise ValueError(f"wallbox_phases must be 1 or 3, got {wallbox_phases}")
        self.site = site
        self.wallbox_current_a = wallbox_current_a
        self.wallbox_phases = wallbox_phases
        self._started = False  #: a session was started and not stopped or ended by unplugging
        self._stopped_s = -math.inf  #: when the last session was stopped

    def wallbox_status(self) -> int:
        """The ``evchargerStatus`` now (see the module docstring); unplugging ends a started session."""
        state = self.site.state()
        if not state.car_connected:
            if self._started:
                self._started = False
                self.site.offer(0.0)
            self._stopped_s = -math.inf
            return AVAILABLE
        if self._started:
            return CHARGING if state.car_power_w > 0 else SUSPENDED_EV
        if state.car_power_w > 0 or self._clock() - self._stopped_s < FINISHING_S:
            return FINISHING
        return PREPARING

    def _control(self, mode: int) -> bool:
        """Start (``mode`` 1) or stop (0) a session; ``False`` (nothing done) when the status does not
        allow it."""
        status = self.wallbox_status()
        if status not in (START_ALLOWED if mode == 1 else STOP_ALLOWED):
            return False
        if mode == 1:
            self._started = True
            self.site.offer(self.wallbox_current_a, self.wallbox_phases)
        else:
            self._started = False
            self._stopped_s = self._clock()
            self.site.offer(0.0)
        return True
