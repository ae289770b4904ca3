"""The services beside the control loop: the local HTTP API (``api:``) and the MQTT bridge (``mqtt:``).

``pvcharge run`` starts them with the daemon, and on SIGHUP hands the reloaded config to
:meth:`Services.apply`, which restarts only a service whose section changed: the API on its new
address or token, the bridge with its new broker, login or topics (the old bridge publishes "offline"
under its old prefix first).  Neither service is ever needed by the control loop: a service that
cannot start is logged and the loop runs on without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog

from pvcharge.config import ApiConfig, Config, MqttConfig
from pvcharge.errors import PvchargeError

if TYPE_CHECKING:
    from pvcharge.api.server import ApiServer
    from pvcharge.daemon import Daemon
    from pvcharge.mqtt import MqttBridge
    from pvcharge.planning.service import PlanService
    from pvcharge.sessions import SessionRecorder

log = structlog.get_logger("pvcharge.services")


class Services:
    """The daemon's API server and MQTT bridge, and the config sections they run with.

    Args:
        daemon: the daemon they serve (status, mode switching).
        sessions: the session recorder, for the API's and the bridge's history (``None``: none).
        loadpoint_plans: each loadpoint's plan service by loadpoint name, for the API's plans and plan
            chart and the bridge's plans; the first loadpoint's also behind the routes and topics
            without a loadpoint name (``None``: no plans).

    Use: ``await start(config)`` once, ``await apply(new_config)`` on each accepted reload,
    ``await stop()`` at exit.  Calls are serialized: a reload arriving while another is being applied
    waits for it.
    """

    def __init__(
        self,
        daemon: Daemon,
        *,
        sessions: SessionRecorder | None = None,
        loadpoint_plans: Mapping[str, PlanService] | None = None,
    ) -> None:
        self.daemon = daemon
        self.sessions = sessions
        self.loadpoint_plans = loadpoint_plans
        self.server: ApiServer | None = None  #: None: disabled, could not start, or not started yet
        self.bridge: MqttBridge | None = None  #: None: no ``mqtt:`` section
        self._api: ApiConfig | None = None
        self._mqtt: MqttConfig | None = None
        self._lock = asyncio.Lock()

    async def start(self, config: Config) -> None:
        """Start the API (``api.enabled``) and the bridge (an ``mqtt:`` section); never raises for a
        service that cannot start (an address in use, say): that is logged as ``api_unavailable``."""
        async with self._lock:
            await self._start_api(config.api)
            await self._start_mqtt(config.mqtt)

    def differs(self, config: Config) -> bool:
        """Whether :meth:`apply` would restart anything: ``config``'s api: or mqtt: section is not the
        one running (or the API is down: a reload tries again)."""
        return config.api != self._api or config.mqtt != self._mqtt

    async def apply(self, config: Config) -> list[str]:
        """Restart the services whose section differs from the one they run with.

        Returns:
            The sections restarted (``"api"``, ``"mqtt"``), in that order; empty when neither changed.
            A new API address that cannot be bound is logged (``api_unavailable``) and the API is
            started again on its previous settings, so a typo in ``api.port`` does not take it away.
        """
        async with self._lock:
            restarted = []
            if config.api != self._api:
                restarted.append("api")
                previous = self._api
                await self._stop_api()
                if not await self._start_api(config.api) and previous is not None:
                    log.warning("api_kept", action="serving on the previous api: settings until a reload")
                    await self._start_api(previous)
            if config.mqtt != self._mqtt:
                restarted.append("mqtt")
                await self._stop_mqtt()
                await self._start_mqtt(config.mqtt)
            return restarted

    async def stop(self) -> None:
        """Stop the bridge ("offline", clean disconnect) and the API."""
        async with self._lock:
            await self._stop_mqtt()
            await self._stop_api()

    async def _start_api(self, config: ApiConfig) -> bool:
        if not config.enabled:  # nothing listens: the API server is not even imported
            log.info("api_disabled")
            self.server = None
            self._api = config
            return True
        from pvcharge.api.server import start_api

        try:
            self.server = await start_api(self.daemon, config, self.sessions, self.loadpoint_plans)
        except PvchargeError as exc:  # charging control goes on without the API, and says so
            log.error("api_unavailable", error=str(exc), action="control runs on without the API")
            self.server = None
            return False
        self._api = config
        return True

    async def _stop_api(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()

    async def _start_mqtt(self, config: MqttConfig | None) -> None:
        self._mqtt = config
        if config is None:
            return
        from pvcharge.mqtt import MqttBridge

        self.bridge = MqttBridge(
            self.daemon,
            config,
            sessions=self.sessions,
            loadpoint_plans=self.loadpoint_plans,
        )
        await self.bridge.start()

    async def _stop_mqtt(self) -> None:
        if self.bridge is not None:
            bridge, self.bridge = self.bridge, None
            await bridge.stop()
