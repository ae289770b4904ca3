"""The API's session history (:mod:`pvcharge.sessions`): its routes, and the status page's chart.

==========================  =======================================================================
``GET /api/sessions``       charging sessions (``?from=&to=&loadpoint=``), oldest first
``GET /api/sessions.csv``   the same as CSV (a download)
``GET /api/energy``         the site's energy per day (``?from=&to=``, default the last 30 days) and today
``GET /api/power``          the power per minute (``?from=&to=``, default today so far), for the chart
==========================  =======================================================================

``from`` and ``to`` are a local date ``YYYY-MM-DD`` (``to`` included) or an RFC 3339 time (``400``
otherwise).  Without a recorder (``sessions.enabled: false``, or a database that could not be opened)
every route answers ``404`` saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pvcharge.api.http import HTTPError, Request, Response, Router
from pvcharge.sessions.export import day_dict, parse_bound, session_dict, sessions_csv
from pvcharge.sessions.tally import Session, local_day

if TYPE_CHECKING:
    from pvcharge.sessions import SessionRecorder

HISTORY_DAYS = 30  #: /api/energy without ``from``: this many days up to today
#: the query parameters each history route takes (any other is a 400)
HISTORY_QUERY_PARAMETERS = {
    "/api/sessions": {"from", "to", "loadpoint"},
    "/api/sessions.csv": {"from", "to", "loadpoint"},
    "/api/energy": {"from", "to"},
    "/api/power": {"from", "to"},
}
#: the status page and the chart library (read as files, not through importlib.resources: its zip
#: reader would load zipfile, 350 kB resident, into the daemon; pvcharge is installed as files)
STATIC = Path(__file__).with_name("static")
#: the chart library the page gets inline with a history (uPlot, MIT: static/uplot/LICENSE, SOURCE.md)
CHART_FILES = ("uplot/uPlot.min.css", "uplot/uPlot.iife.min.js")
CHART_PLACEHOLDER = "<!-- chart library: inlined by the server with a session history -->"


def page_with_history(page: str) -> str:
    """The status page marked to show the history (without the mark it never asks for it: no 404s)
    with the chart library inline."""
    return inline_chart_library(page.replace('<body data-history="0">', '<body data-history="1">', 1))


def inline_chart_library(page: str) -> str:
    """The page with the chart library inline (once), so the page's CSP hashes cover it and it needs
    no token of its own."""
    if CHART_PLACEHOLDER not in page:
        return page
    css, js = ((STATIC / name).read_text("utf-8") for name in CHART_FILES)
    return page.replace(CHART_PLACEHOLDER, f"<style>{css}</style><script>{js}</script>", 1)


class HistoryRoutes:
    """The history's handlers.

    Args:
        sessions: the recorder (``None``: every route answers 404).
        clock: the daemon's clock (now in Unix s).
        json: the server's JSON answer (secrets masked).
        mask: masks the configured secrets in a text (the CSV).
    """

    def __init__(
        self,
        sessions: SessionRecorder | None,
        clock: Callable[[], float],
        json: Callable[[Any], Response],
        mask: Callable[[str], str],
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.json = json
        self.mask = mask

    def add_routes(self, router: Router) -> None:
        router.add_get("/api/sessions", self.get_sessions)
        router.add_get("/api/sessions.csv", self.get_sessions_csv)
        router.add_get("/api/energy", self.get_energy)
        router.add_get("/api/power", self.get_power)

    def _recorder(self) -> SessionRecorder:
        if self.sessions is None:
            raise HTTPError(
                404,
                "no session history: sessions.enabled is false or the database could not be opened "
                "(see the daemon's log)",
            )
        return self.sessions

    def _bounds(self, request: Request, recorder: SessionRecorder) -> tuple[float | None, float | None]:
        bounds: list[float | None] = []
        for key in ("from", "to"):
            text = request.query.get(key)
            try:
                bounds.append(parse_bound(text, recorder.tz, end=key == "to") if text is not None else None)
            except ValueError as exc:
                raise HTTPError(400, f"{key}: {exc}") from None
        return bounds[0], bounds[1]

    def _sessions(self, request: Request) -> tuple[SessionRecorder, list[Session]]:
        recorder = self._recorder()
        from_s, to_s = self._bounds(request, recorder)
        found = recorder.sessions(from_s=from_s, to_s=to_s, loadpoint=request.query.get("loadpoint"))
        return recorder, found

    async def get_sessions(self, request: Request) -> Response:
        recorder, found = self._sessions(request)
        return self.json({"sessions": [session_dict(s, recorder.tz) for s in found]})

    async def get_sessions_csv(self, request: Request) -> Response:
        recorder, found = self._sessions(request)
        return Response(
            text=self.mask(sessions_csv(found, recorder.tz)),
            content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="pvcharge-sessions.csv"'},
        )

    async def get_energy(self, request: Request) -> Response:
        recorder = self._recorder()
        now_s = self.clock()
        from_s, to_s = self._bounds(request, recorder)
        today = recorder.day(now_s)
        first = local_day(from_s, recorder.tz) if from_s is not None else None
        last = local_day(to_s - 1, recorder.tz) if to_s is not None else today.day
        if first is None:
            first = local_day(now_s - (HISTORY_DAYS - 1) * 86400, recorder.tz)
        days = {d.day: d for d in recorder.days(from_day=first, to_day=last)}
        if first <= today.day <= last:
            days.setdefault(today.day, today)  # (before any energy today)
        return self.json({"today": day_dict(today), "days": [day_dict(days[name]) for name in sorted(days)]})

    async def get_power(self, request: Request) -> Response:
        recorder = self._recorder()
        from_s, to_s = self._bounds(request, recorder)
        now_s = self.clock()
        if from_s is None:
            from_s = parse_bound(local_day(now_s, recorder.tz), recorder.tz)
        if to_s is None:
            to_s = now_s + 60
        return self.json(recorder.power(from_s=from_s, to_s=to_s))
