"""The API's plan chart: ``GET /api/forecast`` (:func:`pvcharge.planning.chart.chart_data`: the PV
forecast, prices and the plan per 15-min slot) and the status page's plan section.

Without a plan service (no ``plans:`` and no ``tariff.smart_cost_limit``) the route answers ``404``
saying so, and the page never asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pvcharge.api.history import inline_chart_library
from pvcharge.api.http import HTTPError, Request, Response, Router
from pvcharge.planning.chart import chart_data

if TYPE_CHECKING:
    from pvcharge.planning.service import PlanService

NO_PLANS = "no plan service: set plans: (or tariff.smart_cost_limit) in the config"


def page_with_plan(page: str) -> str:
    """The status page marked to show the plan section (``data-plan="1"``), with the chart library."""
    return inline_chart_library(page.replace('id="plan" data-plan="0"', 'id="plan" data-plan="1"', 1))


class ChartRoutes:
    """The plan chart's handler.

    Args:
        plans: the plan service (``None``: 404).
        clock: the daemon's clock (now in Unix s).
        json: the server's JSON answer (secrets masked).
        currency: ``tariff.currency``, the prices' unit.
    """

    def __init__(
        self,
        plans: PlanService | None,
        clock: Callable[[], float],
        json: Callable[[Any], Response],
        currency: str,
    ) -> None:
        self.plans = plans
        self.clock = clock
        self.json = json
        self.currency = currency

    def add_routes(self, router: Router) -> None:
        router.add_get("/api/forecast", self.get_forecast)

    async def get_forecast(self, request: Request) -> Response:
        if self.plans is None:
            raise HTTPError(404, NO_PLANS)
        return self.json(chart_data(self.plans, self.clock(), currency=self.currency))
