"""The MQTT bridge's broker connection: the aiomqtt client made from the ``mqtt:`` section (login, TLS,
last will, timeouts), paho's and aiomqtt's log lines as structlog events, and receiving while working
(:func:`racing`: a broken connection ends both at once).

What is published and when is :mod:`pvcharge.mqtt`; the topics and the Home Assistant discovery
payloads are :mod:`pvcharge.mqtt_discovery`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import aiomqtt
import structlog

from pvcharge.config import MqttConfig
from pvcharge.mqtt_discovery import OFFLINE, Topics

log = structlog.get_logger("pvcharge.mqtt")
T = TypeVar("T")


class _ToStructlog(logging.Handler):
    """paho's and aiomqtt's own log lines ("failed to receive on socket: ...") as structlog debug
    events: the bridge logs every outage itself, once, with its cause."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log.debug("mqtt_client_log", level=record.levelname.lower(), message=record.getMessage())
        except Exception:  # a logging failure must not break the MQTT client's callbacks
            self.handleError(record)


#: the stdlib logger handed to aiomqtt (and so to paho); set it to DEBUG to see every MQTT packet
CLIENT_LOG = logging.getLogger("pvcharge.mqtt.client")
CLIENT_LOG.setLevel(logging.WARNING)
CLIENT_LOG.propagate = False
CLIENT_LOG.addHandler(_ToStructlog())

OPERATION_TIMEOUT_S = 10.0  #: CONNACK, SUBACK, PUBACK, s
KEEPALIVE_S = 30  #: MQTT keepalive: a silently dead broker is noticed after 1.5 × this, s


def client(config: MqttConfig, *, client_id: str, will: bool, keepalive_s: int) -> aiomqtt.Client:
    """An aiomqtt client for the broker of ``config`` (not connected yet: ``async with`` it).

    Args:
        config: the ``mqtt:`` section (host, port, login, TLS).
        client_id: the MQTT client identifier.
        will: with the last will "offline" on ``P/availability`` (retained, QoS 1).
        keepalive_s: MQTT keepalive, in s.
    """
    return aiomqtt.Client(
        config.host,
        config.port,
        identifier=client_id,
        username=config.username,
        password=config.password.reveal() if config.password is not None else None,
        will=aiomqtt.Will(Topics.of(config).availability, OFFLINE, qos=1, retain=True) if will else None,
        tls_params=aiomqtt.TLSParameters(ca_certs=config.ca_file) if config.tls else None,
        timeout=OPERATION_TIMEOUT_S,
        keepalive=keepalive_s,
        max_queued_incoming_messages=100,  # someone flooding the command topic costs no memory
        logger=CLIENT_LOG,
    )


async def _until_disconnected(
    client: aiomqtt.Client, on_message: Callable[[str, bytes, bool], object]
) -> None:
    """Hand every incoming message to ``on_message(topic, payload, retained)``.

    Raises:
        aiomqtt.MqttError: the connection broke (the only way this ends).
    """
    async for message in client.messages:
        on_message(str(message.topic), message.payload, message.retain)


async def racing(
    client: aiomqtt.Client, on_message: Callable[[str, bytes, bool], object], work: Coroutine[Any, Any, T]
) -> T:
    """Run ``work`` while receiving; a broken connection ends both at once.

    aiomqtt's publish waits for its acknowledgement until its timeout even after the connection broke;
    racing it against the receiver turns a dead broker into an immediate :class:`aiomqtt.MqttError`.
    """
    receiver = asyncio.create_task(_until_disconnected(client, on_message))
    worker = asyncio.create_task(work)
    try:
        await asyncio.wait({receiver, worker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (receiver, worker):
            task.cancel()
        await asyncio.gather(receiver, worker, return_exceptions=True)
    error = receiver.exception() if receiver.done() and not receiver.cancelled() else None
    if error is not None:
        raise error
    if worker.cancelled():
        raise aiomqtt.MqttError("connection closed")
    return worker.result()


async def clear(client: aiomqtt.Client, topics: Iterable[str]) -> None:
    """Publish an empty retained payload (QoS 1) to each of ``topics``: the broker forgets them."""
    for topic in topics:
        await client.publish(topic, b"", qos=1, retain=True)
