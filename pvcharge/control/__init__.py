"""The pure control core: no I/O, the clock is passed in.

Public API::

    from pvcharge.control import Controller, ControlConfig, ChargePoint, SiteConfig
    ctl = Controller(ControlConfig(mode="pv"), ChargePoint(max_current_a=16, phases=3))
    decision = ctl.step(now, site_reading, charger_reading)
    decision.command.current_a, decision.command.phases, decision.reason
"""

from pvcharge.control.config import MODES, ChargePoint, ControlConfig, Mode, SiteConfig
from pvcharge.control.controller import Controller, Decision

__all__ = ["MODES", "ChargePoint", "ControlConfig", "Controller", "Decision", "Mode", "SiteConfig"]
