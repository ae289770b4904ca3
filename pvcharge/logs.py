"""Structured logging with structlog: one event per decision, with the numbers behind it.

``configure_logging`` sets the level and the renderer (readable console lines, or one JSON object
per line for journald/Loki) and installs a redaction processor: any registered secret value that
shows up in an event, whatever the key, is replaced by ``***`` before rendering.  Drivers never log
secrets in the first place; this is the second line of defence.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_secrets: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values (passwords, tokens) to mask in every later log event."""
    _secrets.update(v for v in values if v and len(v) >= 3)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    return value


def redact_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask registered secrets in all string values (and rendered exceptions)."""
    if not _secrets:
        return event
    return {k: _redact_value(v) for k, v in event.items()}


def configure_logging(level: str = "info", fmt: str = "console", stream: TextIO | None = None) -> None:
    """Configure structlog for the process.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        fmt: ``console`` (key=value lines) or ``json`` (one JSON object per line).
        stream: where to write (default ``sys.stderr``).
    """
    out = stream or sys.stderr
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    # pymodbus logs every timeout at ERROR through the standard library; the Huawei driver already
    # reports each failure (with its device name) through structlog, so keep pymodbus quiet.
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if level == "debug" else logging.CRITICAL)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=False),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
