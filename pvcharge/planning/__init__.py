"""Charge plans ("80 % by 7:00"): the pure planner (:mod:`.planner`), and the sources it plans from:
day-ahead prices (:mod:`.tariffs`) and solar forecasts (:mod:`.forecast`). See docs/plans.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pvcharge.config import Config


def wanted(config: Config) -> bool:
    """Whether ``config`` needs the plan service (:func:`.service.build_service`): some ``plans:``, or
    a ``tariff.smart_cost_limit``.  Without either, ``pvcharge run`` imports none of the planner."""
    return bool(config.plans) or config.tariff.smart_cost_limit is not None
