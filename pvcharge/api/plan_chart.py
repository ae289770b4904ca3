"""The API's plan chart: ``GET /api/forecast`` (:func:`pvcharge.planning.chart.chart_data`: the PV
forecast, prices and the plan per 15-min slot, the first loadpoint's), ``GET
/api/loadpoints/{name}/forecast`` (the same for the loadpoint ``name``) and the status page's plan
section (with several loadpoints, a selector picks whose plan it shows).

Without a plan service (``pvcharge run`` always has one; the day demo has none) ``/api/forecast``
answers ``404`` saying so, as ``/api/plans`` does, and the page never asks for it. The ``{name}``
route answers ``404`` with ``{"error": ..., "loadpoints": [the names]}`` for a loadpoint of no such
name or one without a plan service (the same answer as ``/api/loadpoints/{name}/plans``,
:meth:`pvcharge.api.plans.PlanRoutes.service_for`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pvcharge.api.history import inline_chart_library
from pvcharge.api.http import Request, Response, Router
from pvcharge.planning.chart import chart_data

if TYPE_CHECKING:
    from pvcharge.planning.service import PlanService


def page_with_plan(page: str) -> str:
    """The status page marked to show the plan section (``data-plan="1"``), with the chart library."""
    return inline_chart_library(page.replace('id="plan" data-plan="0"', 'id="plan" data-plan="1"', 1))


class ChartRoutes:
    """The plan chart's handler.

    Args:
        clock: the daemon's clock (now in Unix s).
        json: the server's JSON answer (secrets masked).
        currency: ``tariff.currency``, the prices' unit.
        service_for: the plan service of a request (its ``{name}``'s, else the first loadpoint's), or
            the 404 naming the loadpoints (:meth:`pvcharge.api.plans.PlanRoutes.service_for`; it raises
            the 404 of no plan service).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        json: Callable[[Any], Response],
        currency: str,
        service_for: Callable[[Request], PlanService | Response],
    ) -> None:
        self.service_for = service_for
        self.clock = clock
        self.json = json
        self.currency = currency

    def add_routes(self, router: Router) -> None:
        router.add_get("/api/forecast", self.get_forecast)
        router.add_get("/api/loadpoints/{name}/forecast", self.get_forecast)

    async def get_forecast(self, request: Request) -> Response:
        service = self.service_for(request)
        if isinstance(service, Response):
            return service
        return self.json(chart_data(service, self.clock(), currency=self.currency))
