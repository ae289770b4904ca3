"""The API's charge plans (:mod:`pvcharge.planning.service`): their routes.

==============================  ===================================================================
``GET /api/plans``              the plans in force (``plans:`` and the one set at run time) and the
                                last plan made: slots from PV and from the grid, energy expected by
                                the deadline, met or not, the fallbacks in force; all of the first
                                loadpoint, whose name is ``loadpoint``
``PUT /api/plans/next``         set the run-time plan: ``{"energy_kwh": 20, "deadline": "07:00"}``
                                (or ``soc_pct`` with ``capacity_kwh``; ``weekdays``: repeating;
                                ``timezone``), :func:`pvcharge.planning.runtime.parse_json`
``DELETE /api/plans/next``      clear it (the config's plans stay)
==============================  ===================================================================

``PUT`` and ``DELETE`` answer with the plans after the re-plan they cause (waiting at most
:data:`REPLAN_WAIT_S` for the plan service's task; the plan result is the previous one if it takes
longer). Without a plan service every route answers ``404``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pvcharge.api.http import HTTPError, Request, Response, Router
from pvcharge.planning import runtime
from pvcharge.settings import SettingError

if TYPE_CHECKING:
    from pvcharge.planning.service import PlanService

REPLAN_WAIT_S = 3.0  #: how long PUT/DELETE wait for the re-plan before answering, s


def state_of(service: PlanService) -> dict[str, Any]:
    """``service``'s :meth:`~PlanService.describe` (MQTT's ``P/plan``) and ``loadpoint``, the name of the
    loadpoint it steers."""
    return {**service.describe(), "loadpoint": service.loadpoint}


class PlanRoutes:
    """The plans' handlers.

    Args:
        plans: the plan service (``None``: every route answers 404).
        json: the server's JSON answer (secrets masked).
    """

    def __init__(self, plans: PlanService | None, json: Callable[..., Response]) -> None:
        self.plans = plans
        self.json = json

    def add_routes(self, router: Router) -> None:
        router.add_get("/api/plans", self.get_plans)
        router.add_put("/api/plans/next", self.put_next)
        router.add_delete("/api/plans/next", self.delete_next)

    def _service(self) -> PlanService:
        if self.plans is None:
            raise HTTPError(404, "no plan service runs in this process")
        return self.plans

    async def _replanned(self, service: PlanService) -> Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.request_replan().wait(), REPLAN_WAIT_S)
        return self.json(state_of(service))

    async def get_plans(self, request: Request) -> Response:
        return self.json(state_of(self._service()))

    async def put_next(self, request: Request) -> Response:
        service = self._service()
        raw = await request.read()  # 413 above the server's MAX_BODY_BYTES
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        try:
            if body is None:
                raise SettingError("plan", "the body is not JSON")
            entry = runtime.parse_json(body)
        except SettingError as exc:
            return self.json(
                {
                    "error": f"{exc.key}: {exc.problem}"[:300],
                    "example": {"energy_kwh": 20, "deadline": "07:00"},
                },
                422,
            )
        service.set_plan(entry, source="api", repeating="weekdays" in body and body["weekdays"] is not None)
        return await self._replanned(service)

    async def delete_next(self, request: Request) -> Response:
        service = self._service()
        service.clear_plan(source="api")
        return await self._replanned(service)
