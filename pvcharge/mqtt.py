"""MQTT bridge: the daemon's status to a broker, mode commands from it, Home Assistant discovery.

Topics (``P`` = ``mqtt.prefix``, default ``pvcharge``; ``D`` = ``mqtt.discovery_prefix``, default
``homeassistant``; ``N`` = the prefix with every character but ``[A-Za-z0-9_-]`` replaced by ``_``)::

    P/availability        "online" / "offline"   retained, QoS 1; "offline" is also the last will, so a
                                                 crashed pvcharge or a dead network turns it offline
    P/status              JSON of Daemon.status() retained, QoS 0, after every control cycle (coalesced)
    P/mode                off | pv | minpv | fast  retained, QoS 1, on change and after each (re)connect
    P/energy              JSON {"today": ..., "last_session": ...} retained, QoS 0, with a session
                          history (``sessions:``): at connect, when a session opens or closes, and at
                          most once per ENERGY_EVERY_S otherwise
                          (:meth:`pvcharge.sessions.SessionRecorder.summary`); always the site's
                          (each loadpoint's: P/loadpoints/<name>/energy)
    P/mode/set            command: publish a mode (not retained); anything else is ignored with a
                          warning, and so is a retained message (it would switch the mode again at
                          every reconnect)
    P/discovery           retained JSON {"topics": [...]}: the discovery topics this installation
                          published last, so a later run knows what to remove
    D/<component>/N/<object_id>/config   Home Assistant discovery, retained, QoS 1
    D/status              Home Assistant's birth message: on "online" the discovery is sent again
    P/plan, P/plan/set, P/plan/clear   the charge plans (:mod:`pvcharge.mqtt_plans`), with a plan service
                          (each loadpoint's: P/loadpoints/<name>/plan...)
    P/loadpoints/<name>/...  with several loadpoints: each one's state and mode command, and one Home
                          Assistant device per loadpoint (:mod:`pvcharge.mqtt_loadpoints`); the topics
                          above keep meaning the first loadpoint

Home Assistant entities and their discovery payloads: :mod:`pvcharge.mqtt_discovery` (with the
:class:`~pvcharge.mqtt_discovery.Topics` of this table).

Removal: every connect reads the retained record ``P/discovery`` (subscribe, then a marker message
through the broker proves every retained message has arrived) and publishes an empty retained
payload to each recorded topic that this run does not publish: all of them with
``discovery: false``, old ones after an upgrade that dropped an entity or after a change of
``discovery_prefix``.  The record then lists exactly what is published now (or is removed).
:func:`remove_all` clears everything, record, status and availability included (for uninstalling).
The record lives under ``P``: change ``prefix`` only after a run with ``discovery: false`` (or
:func:`remove_all`) under the old one.

Network I/O never touches the control loop: the daemon's listener only sets an event; one task
connects, publishes the latest status when woken (older ones are simply skipped) and handles
commands.  While the broker is away nothing queues up; reconnects back off from 1 s, doubling with
jitter, to at most 30 s; the outage is logged once when it starts and once when it ends.
The broker connection itself (login, TLS, last will, timeouts, the client's log lines) is
:mod:`pvcharge.mqtt_client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiomqtt
import structlog

from pvcharge import mqtt_client
from pvcharge import mqtt_loadpoints as lp
from pvcharge.config import MqttConfig
from pvcharge.control.config import MODES
from pvcharge.mqtt_client import KEEPALIVE_S
from pvcharge.mqtt_discovery import OFFLINE, ONLINE, Topics, discovery_messages
from pvcharge.mqtt_plans import PlanTopics, plan_topics

if TYPE_CHECKING:
    from pvcharge.daemon import Cycle, Daemon
    from pvcharge.planning.service import PlanService
    from pvcharge.sessions import SessionRecorder

log = structlog.get_logger("pvcharge.mqtt")

RECONNECT_MIN_S = 1.0  #: first wait after a failed or lost connection, s
RECONNECT_MAX_S = 30.0  #: ceiling of the doubling wait, s
SYNC_TIMEOUT_S = 5.0  #: longest wait for the retained discovery record after subscribing, s
STOP_TIMEOUT_S = 5.0  #: longest :meth:`MqttBridge.stop` waits for "offline" and a clean disconnect, s
ENERGY_EVERY_S = 60.0  #: ``P/energy`` at most this often (monotonic s) while the session stays the same


class _RecordReader:
    """Reads the retained discovery record ``P/discovery`` as the receiving task hands it messages.

    The record is retained, so the broker sends it right after the subscription; a marker published
    afterwards on a subscribed topic comes back behind it, so once the marker is here, so is the record
    (or there is none).
    """

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.marker = secrets.token_hex(8).encode()
        self.previous: list[str] = []
        self.done = asyncio.Event()

    def feed(self, topic: str, payload: bytes) -> bool:
        """Take a message; True if it was the record's or the marker's."""
        if topic == self.topics.record:
            if payload and not self.done.is_set():
                self.previous = _parse_record(payload, self.topics.node)
            return True
        if topic == self.topics.sync:
            if payload == self.marker:
                self.done.set()
            return True
        return False

    async def read(self, client: aiomqtt.Client) -> list[str] | None:
        """The discovery topics a previous run recorded (``[]``: none), or ``None`` if not in time."""
        await client.subscribe([(self.topics.record, 1), (self.topics.sync, 1)])
        await client.publish(self.topics.sync, self.marker, qos=1)
        try:
            await asyncio.wait_for(self.done.wait(), SYNC_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "mqtt_discovery_record_unread",
                topic=self.topics.record,
                waited_s=SYNC_TIMEOUT_S,
                action="nothing removed this time; retried at the next connect",
            )
            return None
        finally:
            await client.unsubscribe([self.topics.record, self.topics.sync])
        return self.previous


def _parse_record(payload: bytes, node: str) -> list[str]:
    """The topics of a record; only discovery config topics of this node (``.../<component>/N/<id>/config``),
    so a record someone else wrote cannot make pvcharge clear other retained topics."""
    try:
        data = json.loads(payload)
    except ValueError:
        log.warning("mqtt_discovery_record_invalid", payload=payload[:200].decode("utf-8", "replace"))
        return []
    recorded = data.get("topics") if isinstance(data, dict) else None
    if not isinstance(recorded, list):
        return []
    ours = re.compile(rf"[^#+]+/[a-z_]+/{re.escape(node)}/[A-Za-z0-9_-]+/config")
    return [t for t in recorded if isinstance(t, str) and ours.fullmatch(t)]


class MqttBridge:
    """Publishes the daemon's status to MQTT, takes mode commands, keeps Home Assistant discovery.

    Args:
        daemon: the running daemon (its ``listeners``, ``status()``, ``mode``, ``set_mode()``).
        config: the ``mqtt:`` section.
        reconnect_min_s, reconnect_max_s: the backoff between connection attempts, doubling from min to
            max; a connection that held longer than max resets it (tests shorten both).
        keepalive_s: MQTT keepalive.
        sessions: the session recorder: ``P/energy`` and its Home Assistant sensors (``None``: neither).
        loadpoint_plans: each loadpoint's plan service by loadpoint name: the first loadpoint's on
            ``P/plan``, its commands and entities, and with several loadpoints each one's on
            ``P/loadpoints/<name>/plan`` and its commands (``None``, or without the first loadpoint's:
            no plan topics).

    :meth:`start` returns at once (connecting is the bridge task's job); :meth:`stop` publishes
    "offline" and disconnects cleanly, so the last will is not sent.
    """

    def __init__(
        self,
        daemon: Daemon,
        config: MqttConfig,
        *,
        reconnect_min_s: float = RECONNECT_MIN_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
        keepalive_s: int = KEEPALIVE_S,
        sessions: SessionRecorder | None = None,
        loadpoint_plans: Mapping[str, PlanService] | None = None,
    ) -> None:
        self.daemon = daemon
        self.config = config
        self.sessions = sessions
        self._plans = PlanTopics(config.prefix, loadpoint_plans, [x.name for x in daemon.loadpoints])
        self.topics = Topics.of(config)
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.keepalive_s = keepalive_s
        self.connected = False
        self.connects = 0  #: successful connections so far
        self.published = 0  #: status messages published so far
        self._wake = asyncio.Event()  # the "queue of size 1": a new status is there to publish
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._published_mode: str | None = None
        self._published_values: dict[str, dict[str, str]] = {}  # per loadpoint: value topic key → payload
        #: per energy topic: monotonic s and session key of its last publication
        self._energy_at: dict[str, tuple[float, object]] = {}
        self._rediscover = False  # Home Assistant came back: send the discovery again
        self._reader = _RecordReader(self.topics)
        self._listener: Callable[[Cycle], None] = self._on_cycle

    def __repr__(self) -> str:
        return f"MqttBridge({self.config.host}:{self.config.port}, prefix={self.config.prefix!r})"

    async def start(self) -> None:
        """Register with the daemon and start the bridge task; does not wait for the broker."""
        if self._task is not None:
            raise RuntimeError("MqttBridge already started")
        self.daemon.listeners.append(self._listener)
        self._task = asyncio.create_task(self._run(), name="pvcharge-mqtt")

    async def stop(self) -> None:
        """Publish "offline", disconnect cleanly (at most ``STOP_TIMEOUT_S``) and end the task."""
        if self._listener in self.daemon.listeners:
            self.daemon.listeners.remove(self._listener)
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("mqtt_stop_timeout", waited_s=STOP_TIMEOUT_S, action="connection dropped")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_cycle(self, cycle: Cycle) -> None:
        """The daemon's listener: only note that there is something new (never blocks, never fails)."""
        self._wake.set()

    async def _run(self) -> None:
        attempt = 0
        down_since: float | None = None
        connected_at: float | None = None
        while not self._stopping.is_set():
            error: str | None = None
            try:
                client = mqtt_client.client(
                    self.config, client_id=self.config.client_id, will=True, keepalive_s=self.keepalive_s
                )
                async with client:
                    self.connected = True
                    self.connects += 1
                    connected_at = time.monotonic()
                    outage_s = round(time.monotonic() - down_since, 1) if down_since is not None else None
                    down_since = None
                    if self.connects > 1:
                        log.info("mqtt_reconnected", outage_s=outage_s)
                    else:
                        log.info(
                            "mqtt_connected",
                            host=self.config.host,
                            port=self.config.port,
                            tls=self.config.tls,
                            client_id=self.config.client_id,
                            prefix=self.config.prefix,
                            **({"after_s": outage_s} if outage_s is not None else {}),
                        )
                    await self._session(client)
            except aiomqtt.MqttError as exc:
                error = str(exc) or type(exc).__name__
            except Exception as exc:  # a bug here must not end the bridge, let alone the daemon
                log.error("mqtt_error", error=repr(exc), exc_info=exc)
                error = repr(exc)
            finally:
                self.connected = False
            if self._stopping.is_set():
                break
            if connected_at is not None and time.monotonic() - connected_at > self.reconnect_max_s:
                attempt = 0  # only a connection that held resets the backoff: a flapping one backs off
            connected_at = None
            delay = min(self.reconnect_max_s, self.reconnect_min_s * 2**attempt)
            delay *= random.uniform(0.8, 1.0)
            attempt = min(attempt + 1, 30)
            if down_since is None:
                down_since = time.monotonic()
                log.warning(
                    "mqtt_unavailable",
                    host=self.config.host,
                    port=self.config.port,
                    error=error or "connection closed",
                    retry_in_s=round(delay, 1),
                    action="retrying with backoff; the control loop is not affected",
                )
            else:
                log.debug("mqtt_still_unavailable", error=error, retry_in_s=round(delay, 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        log.info("mqtt_stopped")

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection: discovery, availability, state, then publish and take commands until stopped.

        Raises:
            aiomqtt.MqttError: the connection broke.
        """
        self._reader = _RecordReader(self.topics)
        await mqtt_client.racing(client, self._on_message, self._work(client))
        # only a stop ends the work: say goodbye, so that the will is not needed
        await client.publish(self.topics.availability, OFFLINE, qos=1, retain=True, timeout=2.0)

    async def _work(self, client: aiomqtt.Client) -> None:
        # subscribe first: a command or Home Assistant's birth message sent while the discovery goes
        # out is not lost (the broker has acknowledged both subscriptions before anything is announced)
        await client.subscribe(self.topics.mode_set, qos=1)
        if commands := self._loadpoint_commands():
            await client.subscribe([(topic, 1) for topic in commands])
        if plan_commands := self._plans.subscriptions():
            await client.subscribe(plan_commands)
        if self.config.discovery:
            await client.subscribe(self.topics.ha_status, qos=1)
        await self._announce(client)
        self._published_mode = None
        self._published_values = {}
        self._plans.reset()
        self._energy_at = {}
        while not self._stopping.is_set():
            self._wake.clear()
            await self._publish_state(client)
            await self._publish_energy(client)
            await self._plans.publish(client)
            if self._rediscover:
                self._rediscover = False
                for topic, payload in self._discovery().items():
                    await client.publish(topic, json.dumps(payload), qos=1, retain=True)
            waker = asyncio.create_task(self._wake.wait())
            stopper = asyncio.create_task(self._stopping.wait())
            try:
                await asyncio.wait({waker, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
                stopper.cancel()

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Discovery (or its removal), then "online"."""
        previous = await self._reader.read(client)
        current = self._discovery() if self.config.discovery else {}
        if previous is not None:
            stale = [t for t in previous if t not in current]
            await mqtt_client.clear(client, stale)
            if stale:
                log.info("mqtt_discovery_removed", topics=len(stale))
        for topic, payload in current.items():
            await client.publish(topic, json.dumps(payload), qos=1, retain=True)
        if previous is not None and (current or previous):
            record = json.dumps({"topics": sorted(current)}) if current else b""
            await client.publish(self.topics.record, record, qos=1, retain=True)
        if current:
            log.info("mqtt_discovery_published", entities=len(current), prefix=self.config.discovery_prefix)
        await client.publish(self.topics.availability, ONLINE, qos=1, retain=True)

    async def _publish_state(self, client: aiomqtt.Client) -> None:
        status = self.daemon.status()
        await client.publish(self.topics.status, json.dumps(status, default=str), qos=0, retain=True)
        self.published += 1
        mode = str(status["mode"])
        if mode != self._published_mode:
            await client.publish(self.topics.mode, mode, qos=1, retain=True)
            self._published_mode = mode
        if len(self.daemon.loadpoints) > 1:
            for part in status["loadpoints"]:
                await self._publish_loadpoint(client, part)

    async def _publish_loadpoint(self, client: aiomqtt.Client, part: dict[str, Any]) -> None:
        """``P/loadpoints/L/status`` and the plain value topics that changed
        (:mod:`pvcharge.mqtt_loadpoints`)."""
        topics = lp.LoadpointTopics.of(self.config.prefix, part["name"])
        await client.publish(topics.status, json.dumps(part, default=str), qos=0, retain=True)
        published = self._published_values.setdefault(topics.name, {})
        for key, payload in lp.values(part).items():
            if published.get(key) != payload:
                await client.publish(topics.value(key), payload, qos=1, retain=True)
                published[key] = payload

    def _loadpoint_commands(self) -> dict[str, str]:
        """With several loadpoints: each one's ``mode/set`` topic → its name (else empty)."""
        if len(self.daemon.loadpoints) < 2:
            return {}
        return {
            lp.LoadpointTopics.of(self.config.prefix, x.name).mode_set: x.name for x in self.daemon.loadpoints
        }

    def _discovery(self) -> dict[str, dict[str, Any]]:
        return discovery_messages(
            self.config,
            history=self.sessions is not None,
            plans=self._plans.first is not None,
            loadpoints=[x.name for x in self.daemon.loadpoints],
            plan_loadpoints=self._plans.loadpoints,
        )

    async def _publish_energy(self, client: aiomqtt.Client) -> None:
        """``P/energy`` (the site's) and with several loadpoints each one's ``P/loadpoints/L/energy``:
        at connect, when that last session changes (opens, closes) and at most once per
        ``ENERGY_EVERY_S`` otherwise."""
        if self.sessions is None:
            return
        sessions = self.sessions
        await self._publish_summary(client, sessions, self.topics.energy, None)
        if len(self.daemon.loadpoints) > 1:
            for x in self.daemon.loadpoints:
                if x.name in sessions.tallies:
                    topic = lp.LoadpointTopics.of(self.config.prefix, x.name).energy
                    await self._publish_summary(client, sessions, topic, x.name)

    async def _publish_summary(
        self, client: aiomqtt.Client, sessions: SessionRecorder, topic: str, loadpoint: str | None
    ) -> None:
        """One energy topic: :meth:`SessionRecorder.summary` of ``loadpoint`` (``None``: the site)."""
        last = sessions.last_session(loadpoint)
        key = (last.id, last.start_s, last.end_s) if last is not None else None
        now = time.monotonic()
        if (previous := self._energy_at.get(topic)) is not None:
            at, published_key = previous
            if published_key == key and now - at < ENERGY_EVERY_S:
                return
        payload = sessions.summary(self.daemon.clock(), loadpoint)
        await client.publish(topic, json.dumps(payload), qos=0, retain=True)
        self._energy_at[topic] = (now, key)

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        """Every incoming message (the receiving task; never awaits, never blocks)."""
        if self._reader.feed(topic, payload):
            return
        if topic == self.topics.mode_set:
            self._command(payload, retained=retained)
        elif (name := self._loadpoint_commands().get(topic)) is not None:
            self._command(payload, retained=retained, loadpoint=name)
        elif self._plans.on_message(topic, payload, retained=retained):
            self._wake.set()
        elif topic == self.topics.ha_status and payload == ONLINE.encode() and not retained:
            log.info("mqtt_home_assistant_online", action="discovery sent again")
            self._rediscover = True
            self._published_mode = None
            self._published_values = {}
            self._wake.set()

    def _command(self, payload: bytes, *, retained: bool, loadpoint: str | None = None) -> None:
        """A mode command for ``loadpoint`` (``None``: the first, from ``P/mode/set``)."""
        text = payload[:64].decode("utf-8", "replace").strip()
        topic = self.topics.mode_set
        if loadpoint is not None:
            topic = lp.LoadpointTopics.of(self.config.prefix, loadpoint).mode_set
        if retained:
            log.warning(
                "mqtt_command_ignored",
                topic=topic,
                payload=text,
                reason="retained message; publish mode commands without the retain flag",
            )
            return
        mode = text.lower()
        if mode not in MODES:
            log.warning(
                "mqtt_command_ignored",
                topic=topic,
                payload=text,
                reason=f"unknown mode; expected one of: {', '.join(MODES)}",
            )
            self._published_mode = None  # a select that showed the bad value snaps back
            if loadpoint is not None:
                self._published_values.pop(loadpoint, None)
            self._wake.set()
            return
        if mode == self.daemon.loadpoint(loadpoint).controller.mode:
            log.debug("mqtt_command_unchanged", mode=mode, **({"loadpoint": loadpoint} if loadpoint else {}))
        else:
            try:
                self.daemon.set_mode(mode, source="mqtt", loadpoint=loadpoint)
            except Exception as exc:
                log.error("mqtt_command_failed", mode=mode, error=repr(exc), exc_info=exc)
        self._wake.set()


async def remove_all(
    config: MqttConfig, *, timeout_s: float = 15.0, loadpoints: Sequence[str] = ()
) -> list[str]:
    """Remove everything pvcharge left retained on the broker: the discovery topics of the record (and
    of this version's entities under the configured prefixes), the record, status, mode and
    availability, and with several ``loadpoints`` (their names) each one's state topics.  For
    uninstalling; stop the daemon first, or it publishes them again at its next connect.
    Returns the topics cleared.

    Raises:
        aiomqtt.MqttError: the broker cannot be reached, refused the login, or did not answer in time.
    """
    topics = Topics.of(config)
    async with asyncio.timeout(timeout_s):
        async with mqtt_client.client(
            config, client_id=f"{config.client_id}-remove", will=False, keepalive_s=KEEPALIVE_S
        ) as client:
            reader = _RecordReader(topics)
            previous = (
                await mqtt_client.racing(client, lambda t, p, _r: reader.feed(t, p), reader.read(client))
                or []
            )
            ours = discovery_messages(config, history=True, plans=True, loadpoints=loadpoints)
            cleared = sorted({*previous, *ours})
            cleared += [topics.record, topics.status, topics.mode, topics.energy, topics.availability]
            for name in loadpoints if len(loadpoints) > 1 else ():
                cleared += lp.LoadpointTopics.of(config.prefix, name).all_state()
            cleared.append(plan_topics(config.prefix)["plan"])
            cleared += [
                plan_topics(config.prefix, name)["plan"] for name in loadpoints if len(loadpoints) > 1
            ]
            await mqtt_client.clear(client, cleared)
    log.info("mqtt_removed", topics=len(cleared), prefix=config.prefix)
    return cleared
