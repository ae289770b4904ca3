"""The local HTTP API, the status page and ``/metrics``, served by the daemon's own event loop (h11 on
asyncio streams: :mod:`pvcharge.api.http`; aiohttp is not imported).

Routes (the OpenAPI document at ``/api/openapi.json`` describes them, :mod:`pvcharge.api.openapi`):

==========================  =======================================================================
``GET /``                   the status page (one static HTML file, polls ``/api/status``)
``GET /api/status``         ``Daemon.status()``: readings, command, reason, mode, device health
``PUT /api/mode``           ``{"mode": "off|pv|minpv|fast"}`` → ``Daemon.set_mode(mode, source="api")``
                            (the first loadpoint's, the only one of a ``charger:`` config)
``PUT /api/loadpoints/{name}/mode``  the same for one loadpoint (``404``: no such loadpoint)
``GET /api/config``         the effective config, secrets as ``***``
``GET /api/openapi.json``   the OpenAPI document
``GET /api/sessions…``      the session history: sessions, CSV, energy per day, power per minute
                            (:mod:`pvcharge.api.history`)
``GET /api/forecast``       the plan chart: PV forecast, prices and the plan per 15-min slot
                            (:mod:`pvcharge.api.plan_chart`; each loadpoint's:
                            ``/api/loadpoints/{name}/forecast``)
``GET /api/plans``          the charge plans in force and the last plan made (:mod:`pvcharge.api.plans`;
                            each loadpoint's: ``/api/loadpoints/{name}/plans``)
``PUT|DELETE /api/plans/next``  set or clear the plan set at run time
``GET /metrics``            Prometheus metrics (:mod:`pvcharge.api.metrics`)
==========================  =======================================================================

Security:

- bound to 127.0.0.1 by default; any other address needs ``api.token`` (the config loader refuses it
  otherwise, and so does :func:`start_api`);
- with a token, **every** request (the page and ``/metrics`` included, unknown paths too) must carry
  ``Authorization: Bearer <token>``, compared in constant time; otherwise ``401`` with
  ``WWW-Authenticate: Bearer``.  The page alone also takes ``?token=`` so a browser can open it once
  (it keeps the token in sessionStorage and sends it as a bearer header from then on);
- without a token, only requests whose ``Host`` is a loopback name or address are answered, so a web
  page in the user's browser cannot reach the API through DNS rebinding; ``PUT`` is never a "simple"
  cross-origin request, so other sites cannot switch the mode either (no CORS headers are sent);
- every configured secret (driver passwords, app secrets, the token) is masked as ``***`` in every
  JSON answer, should one ever turn up in a device's error message;
- no access log: the query string of ``/?token=`` never reaches a log.
- no route takes a query parameter but the page's ``token`` and the history's ``from``, ``to`` and
  ``loadpoint``: any other is a ``400`` (``/api/mode?mode=fast`` would otherwise be silently ignored).

The handlers only read the daemon's state and call :meth:`Daemon.set_mode` (or set and clear the
run-time plan; those wait for the plan service's own task to re-plan); none of them awaits a device, so
a client polling the API never holds up a control cycle (measured in ``tests/test_api.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from pvcharge.api import shown, url_for
from pvcharge.api.history import HISTORY_QUERY_PARAMETERS, STATIC, HistoryRoutes, page_with_history
from pvcharge.api.http import (
    MAX_CONNECTIONS,
    TIMEOUT_S,
    Handler,
    HTTPError,
    HttpServer,
    Request,
    Response,
    Router,
)
from pvcharge.api.openapi import openapi_document
from pvcharge.api.plan_chart import ChartRoutes, page_with_plan
from pvcharge.api.plans import PlanRoutes
from pvcharge.config import ApiConfig, secret_values, to_dict
from pvcharge.control.config import MODES
from pvcharge.errors import PvchargeError
from pvcharge.settings import is_loopback, mask_secrets

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from pvcharge.daemon import Daemon
    from pvcharge.planning.service import PlanService
    from pvcharge.sessions import SessionRecorder

log = structlog.get_logger("pvcharge.api")

MAX_BODY_BYTES = 64 * 1024  #: the largest request body taken (413 above)
SHUTDOWN_S = 2.0  #: how long stop() waits for requests still being answered
TOKEN_KEY = "pvcharge-token"  #: the sessionStorage key the page keeps the token under
#: the query parameters each route takes (any other is a 400)
QUERY_PARAMETERS = {
    "/": {"token"},
    **HISTORY_QUERY_PARAMETERS,
}


class ApiError(PvchargeError):
    """The API cannot start (address in use, an address off loopback without a token)."""


def _host_of(header: str) -> str:
    """The host part of a ``Host`` header: ``[::1]:7080`` → ``::1``, ``127.0.0.1:7080`` → ``127.0.0.1``."""
    header = header.strip()
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode() + "'"


def content_security_policy(page: str) -> str:
    """A CSP for one self-contained page: only its own inline script and style (by hash), requests
    only to this server, no frames, no external anything."""
    scripts = " ".join(_hash(s) for s in re.findall(r"<script>(.*?)</script>", page, re.S)) or "'none'"
    styles = " ".join(_hash(s) for s in re.findall(r"<style>(.*?)</style>", page, re.S)) or "'none'"
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


_LOGIN_SCRIPT = """
const key = "pvcharge-token";
const rejected = document.body.dataset.rejected === "1";
const saved = sessionStorage.getItem(key);
if (rejected) { sessionStorage.removeItem(key); }
else if (saved) { location.replace("/?token=" + encodeURIComponent(saved)); }
"""

_LOGIN_STYLE = """
body { font: 16px system-ui, sans-serif; max-width: 32em; margin: 3em auto; padding: 0 1em; color: #222; }
input { font: inherit; padding: .3em; width: 16em; } button { font: inherit; padding: .3em 1em; }
.bad { color: #b00020; }
"""


def _login_page(rejected: bool) -> str:
    message = (
        '<p class="bad">That token was not accepted.</p>'
        if rejected
        else "<p>This pvcharge needs its API token (<code>api.token</code> in its config).</p>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,"><title>pvcharge: token needed</title>'
        f"<style>{_LOGIN_STYLE}</style></head>"
        f'<body data-rejected="{int(rejected)}"><h1>pvcharge</h1>{message}'
        '<form method="get" action="/"><label>Token <input type="password" name="token" '
        'autocomplete="current-password" required></label> <button>Open</button></form>'
        f"<script>{_LOGIN_SCRIPT}</script></body></html>"
    )


def _dumps(data: Any) -> str:
    return json.dumps(data, default=str)


class _Api:
    """The handlers and the guard of one server."""

    def __init__(
        self,
        daemon: Daemon,
        config: ApiConfig,
        sessions: SessionRecorder | None = None,
        loadpoint_plans: Mapping[str, PlanService] | None = None,
    ) -> None:
        self.daemon = daemon
        self.sessions = sessions
        self.token: bytes | None = config.token.reveal().encode("utf-8") if config.token is not None else None
        self._token_secret = [config.token.reveal()] if config.token is not None else []
        self._registry: CollectorRegistry | None = None  #: built at the first scrape (prometheus_client)
        self.page = (STATIC / "index.html").read_text("utf-8")
        if sessions is not None:
            self.page = page_with_history(self.page)
        self.history = HistoryRoutes(
            sessions, daemon.clock, self.json, lambda text: mask_secrets(text, self.secrets())
        )
        self.plans = PlanRoutes(loadpoint_plans, self.json, [lp.name for lp in daemon.loadpoints])
        if self.plans.first is not None:
            self.page = page_with_plan(self.page)
        self.plan_chart = ChartRoutes(
            daemon.clock, self.json, daemon.config.tariff.currency, self.plans.service_for
        )
        self.page_csp = content_security_policy(self.page)
        self.login = {rejected: _login_page(rejected) for rejected in (False, True)}
        self.login_csp = content_security_policy(self.login[False])
        self.openapi = openapi_document(token_required=self.token is not None)

    def secrets(self) -> list[str]:
        return [*secret_values(self.daemon.config), *self._token_secret]

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = mask_secrets(self.daemon.status(), self.secrets())
        return result

    def json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        """A JSON answer; every configured secret in it masked (even one a client sent)."""
        return Response(
            text=_dumps(mask_secrets(data, self.secrets())),
            status=status,
            content_type="application/json",
            headers=headers,
        )

    # --- the guard: host check, bearer token, errors as JSON, security headers -------------------

    def _valid(self, given: str | None) -> bool:
        assert self.token is not None
        if not given:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self.token)

    def _unauthorized(self, request: Request, given: bool) -> Response:
        challenge = 'Bearer realm="pvcharge"' + (', error="invalid_token"' if given else "")
        headers = {"WWW-Authenticate": challenge}
        log.debug("api_unauthorized", path=request.path, remote=request.remote, token_given=given)
        if request.path == "/" and request.method in ("GET", "HEAD"):
            rejected = "token" in request.query
            response = Response(
                text=self.login[rejected], status=401, content_type="text/html", headers=headers
            )
            response.headers["Content-Security-Policy"] = self.login_csp
            return response
        return self.json(
            {"error": "a bearer token is needed: Authorization: Bearer <api.token>"}, 401, headers
        )

    async def guard(self, request: Request, handler: Handler) -> Response:
        try:
            response = await self._guarded(request, handler)
        except HTTPError as exc:
            return self.error_response(exc)
        except Exception as exc:
            log.error("api_error", path=request.path, error=repr(exc), exc_info=exc)
            response = self.json({"error": "internal error (see the daemon's log)"}, 500)
        return self.secured(response)

    def error_response(self, exc: HTTPError) -> Response:
        """``exc`` as a JSON error (also the server's answer to a malformed request)."""
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")
        }
        return self.secured(self.json({"error": exc.reason}, exc.status, headers))

    @staticmethod
    def secured(response: Response) -> Response:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    async def _guarded(self, request: Request, handler: Handler) -> Response:
        if self.token is None:
            host = request.headers.get("Host")
            if host is not None and not is_loopback(_host_of(host)):
                return self.json(
                    {
                        "error": "this API answers only requests to a loopback address (Host: 127.0.0.1, "
                        "localhost or [::1]); set api.token to reach it under another name"
                    },
                    403,
                )
            return await self._checked(request, handler)
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        bearer = credentials.strip() if scheme.lower() == "bearer" else None
        if self._valid(bearer):
            return await self._checked(request, handler)
        if (
            request.path == "/"
            and request.method in ("GET", "HEAD")
            and self._valid(request.query.get("token"))
        ):
            return await self._checked(request, handler)
        return self._unauthorized(request, bool(bearer) or "token" in request.query)

    async def _checked(self, request: Request, handler: Handler) -> Response:
        """Only the query parameters of :data:`QUERY_PARAMETERS`: anything else is a mistake
        (``/api/mode?mode=fast`` would otherwise be silently ignored)."""
        allowed = QUERY_PARAMETERS.get(request.path, set())
        unknown = sorted(set(request.query) - allowed)
        if unknown:
            names = ", ".join(repr(name[:40]) for name in unknown[:5])
            takes = ", ".join(sorted(allowed - {"token"})) or "none"
            return self.json(
                {"error": f"unknown query parameter(s) {names}: {request.path} takes {takes}"}, 400
            )
        return await handler(request)

    # --- the routes ------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        response = Response(text=self.page, content_type="text/html")
        response.headers["Content-Security-Policy"] = self.page_csp
        return response

    async def get_status(self, request: Request) -> Response:
        return self.json(self.daemon.status())

    async def put_mode(self, request: Request) -> Response:
        return await self._put_mode(request, None)

    async def put_loadpoint_mode(self, request: Request) -> Response:
        name = request.match_info["name"]
        names = [lp.name for lp in self.daemon.loadpoints]
        if name not in names:
            return self.json({"error": f"no loadpoint {shown(name)}", "loadpoints": names}, 404)
        return await self._put_mode(request, name)

    async def _put_mode(self, request: Request, loadpoint: str | None) -> Response:
        raw = await request.read()  # 413 above MAX_BODY_BYTES

        def bad(problem: str) -> Response:
            return self.json(
                {"error": f'{problem}; expected {{"mode": "<mode>"}}', "allowed": list(MODES)}, 422
            )

        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return bad("the body is not JSON")
        if not isinstance(body, dict):
            return bad("the body is not a JSON object")
        extra = sorted(str(k) for k in body if k != "mode")
        if extra:
            return bad(f"unknown key(s) {', '.join(repr(k[:40]) for k in extra[:5])}")
        mode = body.get("mode")
        if not isinstance(mode, str) or mode not in MODES:
            return bad(f"unknown mode {shown(mode)}" if "mode" in body else "no mode given")
        self.daemon.set_mode(mode, source="api", loadpoint=loadpoint)
        return self.json(self.daemon.status())

    async def get_config(self, request: Request) -> Response:
        return self.json(to_dict(self.daemon.config))

    async def get_openapi(self, request: Request) -> Response:
        return self.json(self.openapi)

    async def metrics(self, request: Request) -> Response:
        # prometheus_client (and the http.server, wsgiref, gzip it imports) only once /metrics is scraped
        from prometheus_client.exposition import choose_encoder

        if self._registry is None:
            from pvcharge.api.metrics import metrics_registry

            totals = self.sessions.totals if self.sessions is not None else None
            self._registry = metrics_registry(self.status, totals)
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(body=encoder(self._registry), headers={"Content-Type": content_type})


def build_server(
    daemon: Daemon,
    config: ApiConfig,
    sessions: SessionRecorder | None = None,
    loadpoint_plans: Mapping[str, PlanService] | None = None,
    *,
    timeout_s: float = TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
) -> HttpServer:
    """The HTTP server serving ``daemon``, its ``sessions`` and its loadpoints' plan services
    (``loadpoint_plans``, by loadpoint name; all three as :func:`start_api`'s), no socket yet:
    :func:`start_api` binds it; ``timeout_s`` and ``max_connections``: :class:`HttpServer`'s."""
    api = _Api(daemon, config, sessions, loadpoint_plans)
    router = Router()
    router.add_get("/", api.index)
    router.add_get("/api/status", api.get_status)
    router.add_put("/api/mode", api.put_mode)
    router.add_put("/api/loadpoints/{name}/mode", api.put_loadpoint_mode)
    router.add_get("/api/config", api.get_config)
    router.add_get("/api/openapi.json", api.get_openapi)
    api.history.add_routes(router)
    api.plan_chart.add_routes(router)
    api.plans.add_routes(router)
    router.add_get("/metrics", api.metrics)
    return HttpServer(
        router,
        api.guard,
        error_response=api.error_response,
        max_body_bytes=MAX_BODY_BYTES,
        timeout_s=timeout_s,
        max_connections=max_connections,
    )


class ApiServer:
    """A running (or disabled) API server; :meth:`stop` closes it."""

    def __init__(self, server: HttpServer | None, host: str, port: int | None) -> None:
        self._server = server
        self.host = host
        self.port = port  #: the bound port (the real one when api.port was 0); None when disabled
        self.url = url_for(host, port) if port is not None else None  #: http://host:port, None when disabled

    @property
    def enabled(self) -> bool:
        return self._server is not None

    async def stop(self) -> None:
        """Stop listening and close the open connections (waits at most ``SHUTDOWN_S``)."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(SHUTDOWN_S)
            log.info("api_stopped", url=self.url)


async def start_api(
    daemon: Daemon,
    config: ApiConfig,
    sessions: SessionRecorder | None = None,
    loadpoint_plans: Mapping[str, PlanService] | None = None,
    *,
    timeout_s: float = TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
) -> ApiServer:
    """Serve the API for ``daemon`` on ``config.listen:config.port`` (port 0: a free one); ``sessions``:
    the recorder behind ``/api/sessions`` and ``/api/energy`` (``None``: they answer 404);
    ``loadpoint_plans``: each loadpoint's plan service by loadpoint name, behind
    ``/api/loadpoints/{name}/plans`` and ``/api/loadpoints/{name}/forecast``, the first loadpoint's also
    behind ``/api/plans`` and ``/api/forecast`` (``None``, or a loadpoint missing: its routes answer
    404); ``timeout_s`` (for a request head, and each piece of a body) and ``max_connections``:
    :class:`HttpServer`'s limits.

    With ``api.enabled: false`` nothing listens and the returned server's ``url`` is ``None``.

    Raises:
        ApiError: the address cannot be bound (in use, not local).  (A listen address off loopback
            without a token, or an empty token, never gets here: ``ApiConfig`` refuses them.)
    """
    if not config.enabled:
        log.info("api_disabled")
        return ApiServer(None, config.listen, None)
    if config.token is not None and len(config.token.reveal()) < 16:
        log.warning(
            "api_token_short", length=len(config.token.reveal()), action="use 32 random hex digits or more"
        )
    http = build_server(
        daemon,
        config,
        sessions,
        loadpoint_plans,
        timeout_s=timeout_s,
        max_connections=max_connections,
    )
    try:
        port = await http.start(config.listen, config.port)
    except OSError as exc:
        raise ApiError(
            f"api: cannot listen on {url_for(config.listen, config.port)}: {exc.strerror or exc} "
            "(another pvcharge running? change api.port or api.listen)"
        ) from exc
    server = ApiServer(http, config.listen, port)
    log.info("api_listening", url=server.url, token_required=config.token is not None)
    return server
