"""The API's charge plans (:mod:`pvcharge.planning.service`): their routes.

==========================================  =======================================================
``GET /api/plans``                          the plans in force (``plans:`` and the one set at run
                                            time) and the last plan made: slots from PV and from the
                                            grid, energy expected by the deadline, met or not, the
                                            fallbacks in force; all of the first loadpoint, whose
                                            name is ``loadpoint``
``PUT /api/plans/next``                     set the first loadpoint's run-time plan: ``{"energy_kwh":
                                            20, "deadline": "07:00"}`` (or ``soc_pct`` with
                                            ``capacity_kwh``; ``weekdays``: repeating; ``timezone``),
                                            :func:`pvcharge.planning.runtime.parse_json`
``DELETE /api/plans/next``                  clear it (the config's plans stay)
``GET /api/loadpoints/{name}/plans``        the same for the loadpoint ``name``
``PUT /api/loadpoints/{name}/plans/next``
``DELETE /api/loadpoints/{name}/plans/next``
==========================================  =======================================================

``PUT`` and ``DELETE`` answer with the plans after the re-plan they cause (waiting at most
:data:`REPLAN_WAIT_S` for the plan service's task; the plan result is the previous one if it takes
longer). Without a plan service every route answers ``404``; so does a ``{name}`` route for a
loadpoint of no such name, or one without a plan service, with ``{"error": ..., "loadpoints": [the
names]}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pvcharge.api import shown
from pvcharge.api.http import HTTPError, Request, Response, Router
from pvcharge.planning import runtime
from pvcharge.settings import SettingError

if TYPE_CHECKING:
    from pvcharge.planning.service import PlanService

REPLAN_WAIT_S = 3.0  #: how long PUT/DELETE wait for the re-plan before answering, s
#: the 404 of /api/plans and /api/forecast without a plan service (``pvcharge run`` builds one per
#: loadpoint, :func:`pvcharge.planning.service.build_services`; the day demo runs none)
NO_PLANS = "no plan service runs in this process"


def state_of(service: PlanService) -> dict[str, Any]:
    """``service``'s :meth:`~PlanService.describe` (MQTT's ``P/plan``) and ``loadpoint``, the name of the
    loadpoint it steers."""
    return {**service.describe(), "loadpoint": service.loadpoint}


class PlanRoutes:
    """The plans' handlers.

    Args:
        by_loadpoint: each loadpoint's plan service by its name (``None`` or empty: every route answers
            404); the routes without ``{name}`` act on the first loadpoint's (``loadpoints[0]``).
        json: the server's JSON answer (secrets masked).
        loadpoints: the names of all loadpoints, the first loadpoint's first, for the routes without
            ``{name}`` and the 404 of an unknown one (default: those of ``by_loadpoint``).
    """

    def __init__(
        self,
        by_loadpoint: Mapping[str, PlanService] | None,
        json: Callable[..., Response],
        loadpoints: Sequence[str] = (),
    ) -> None:
        self.json = json
        self.by_loadpoint = dict(by_loadpoint or {})
        self.loadpoints = list(loadpoints) or list(self.by_loadpoint)
        #: the first loadpoint's service: ``/api/plans`` (``None``: those routes answer 404)
        self.first = self.by_loadpoint.get(self.loadpoints[0]) if self.loadpoints else None

    def add_routes(self, router: Router) -> None:
        router.add_get("/api/plans", self.get_plans)
        router.add_put("/api/plans/next", self.put_next)
        router.add_delete("/api/plans/next", self.delete_next)
        router.add_get("/api/loadpoints/{name}/plans", self.get_plans)
        router.add_put("/api/loadpoints/{name}/plans/next", self.put_next)
        router.add_delete("/api/loadpoints/{name}/plans/next", self.delete_next)

    def service_for(self, request: Request) -> PlanService | Response:
        """The service a route is for (its ``{name}``, else the first loadpoint's), or the 404 naming the
        loadpoints (for ``{name}``; also the plan chart's, :mod:`pvcharge.api.plan_chart`).

        Raises:
            HTTPError: 404 without ``{name}`` when no plan service runs.
        """
        name = request.match_info.get("name")
        if name is None:
            if self.first is None:
                raise HTTPError(404, NO_PLANS)
            return self.first
        service = self.by_loadpoint.get(name)
        if service is not None:
            return service
        problem = "no plan service runs for loadpoint" if name in self.loadpoints else "no loadpoint"
        with_plans = [n for n in self.loadpoints if n in self.by_loadpoint]
        hint = f"expected one of {', '.join(with_plans)}" if with_plans else "no plan service runs at all"
        error = f"{problem} {shown(name)} ({hint})"[:300]
        return self.json({"error": error, "loadpoints": self.loadpoints}, 404)

    async def _replanned(self, service: PlanService) -> Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.request_replan().wait(), REPLAN_WAIT_S)
        return self.json(state_of(service))

    async def get_plans(self, request: Request) -> Response:
        service = self.service_for(request)
        return service if isinstance(service, Response) else self.json(state_of(service))

    async def put_next(self, request: Request) -> Response:
        service = self.service_for(request)
        if isinstance(service, Response):
            return service
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
        service = self.service_for(request)
        if isinstance(service, Response):
            return service
        service.clear_plan(source="api")
        return await self._replanned(service)
