"""The pure control core: no I/O, the clock is passed in.

Public API::

    from pvcharge.control import Controller, ControlConfig, ChargePoint, SiteConfig
    ctl = Controller(ControlConfig(mode="pv"), ChargePoint(max_current_a=16, phases=3))
    decision = ctl.step(now, site_reading, charger_reading)
    decision.command.current_a, decision.command.phases, decision.reason

    # several chargers on one site (pvcharge.control.site)
    sc = SiteController(
        ControlConfig(), SiteConfig(max_grid_current_a=25),
        [Loadpoint("a"), Loadpoint("b")]
    )
    decisions = sc.step(now, site_reading, {"a": reading_a, "b": reading_b})
"""

from pvcharge.control.config import MODES, ChargePoint, Circuit, ControlConfig, Mode, SiteConfig
from pvcharge.control.controller import Controller, Decision
from pvcharge.control.site import Loadpoint, SiteController
from pvcharge.control.vehicle import Vehicle

__all__ = [
    "MODES",
    "ChargePoint",
    "Circuit",
    "ControlConfig",
    "Controller",
    "Decision",
    "Loadpoint",
    "Mode",
    "SiteConfig",
    "SiteController",
    "Vehicle",
]
