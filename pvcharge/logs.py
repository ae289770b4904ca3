"""Structured logging with structlog: one event per decision, with the numbers behind it.

``configure_logging`` sets the level and the renderer and installs a redaction processor: any
registered secret value that shows up in an event, whatever the key, is replaced by ``***`` before
rendering.  Drivers never log secrets in the first place; this is the second line of defence.

Log records of the libraries (pymodbus, aiohttp, httpx, asyncio: the standard library's ``logging``)
go through the same processors and renderer (structlog's ``ProcessorFormatter``), so every line of
the process has one format.  Below ``debug`` their routine lines (httpx's and aiohttp's per-request
lines) stay quiet, and pymodbus's own connection errors are logged at debug level: the driver reports
each outage once, with its device name.

Formats: ``console`` (plain ``key=value`` lines, no colours), ``json`` (one JSON object per line, for
Loki and other collectors), ``auto`` (console when a terminal or journald is attached, else JSON).
When the stream is journald's (``$JOURNAL_STREAM`` names its device and inode, as systemd sets it for
``StandardOutput=journal``), each line starts with its syslog priority (``<4>`` for a warning, see
sd-daemon(3)), so ``journalctl -p warning -u pvcharge`` filters by level, and console lines carry no
timestamp of their own: journald stamps every line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from pvcharge.settings import mask_secrets

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
#: syslog priorities (sd-daemon(3) prefixes) of structlog's level names
_PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
FORMATS = ("auto", "console", "json")
_secrets: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values (passwords, tokens) to mask in every later log event."""
    _secrets.update(v for v in values if v and len(v) >= 3)


def redact_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask registered secrets in all string values (and rendered exceptions)."""
    if not _secrets:
        return event
    masked: MutableMapping[str, Any] = mask_secrets(dict(event), _secrets)
    return masked


def journald_attached(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True if ``stream`` is the journald stream systemd connected (``$JOURNAL_STREAM`` = dev:inode)."""
    expected = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor (StringIO, closed)
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def resolve_format(fmt: str, stream: TextIO, environ: Mapping[str, str] | None = None) -> str:
    """``auto`` → ``console`` when a terminal or journald is attached, else ``json``; others as given."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    return "console" if _is_terminal(stream) or journald_attached(stream, environ) else "json"


def _with_priority(renderer: Any, keep_level: bool) -> Any:
    """Wrap a renderer so each line starts with its syslog priority, ``<6>`` for info (the level
    itself is then left out of console lines: journalctl shows the priority)."""

    def render(logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        level = str(event.get("level", "info"))
        if not keep_level:
            event.pop("level", None)
        return f"<{_PRIORITIES.get(level, 6)}>{renderer(logger, name, event)}"

    return render


#: library loggers whose info lines are one per request or message (``ocpp`` logs every OCPP message,
#: ``websockets`` every connection; the OCPP driver logs what matters itself): shown only at debug level
_CHATTY = ("httpx", "httpcore", "aiohttp.access", "ocpp", "websockets")
#: library loggers whose records are logged at debug level whatever their own level (the drivers
#: report the failures themselves, once per outage)
_DEMOTED = ("pymodbus",)


class _Demote(logging.Filter):
    """Handler filter: records of :data:`_DEMOTED` loggers become debug records, dropped unless the
    handler passes debug."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.partition(".")[0] not in _DEMOTED:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.level <= logging.DEBUG


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler :func:`configure_logging` installs (replaced on the next call)."""


def _without_our_handler() -> logging.Logger:
    """The root logger, with the :class:`_Handler` an earlier :func:`configure_logging` added removed."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    return root


def _route_stdlib(level: int, out: TextIO, pre_chain: list[Any], processors: list[Any]) -> None:
    """Send the standard library's log records through structlog's processors to ``out``: one
    :class:`_Handler` on the root logger, instead of any earlier one."""
    handler = _Handler(out)
    handler.setLevel(level)
    handler.addFilter(_Demote(level))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=pre_chain,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *processors],
        )
    )
    root = _without_our_handler()
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if level <= logging.DEBUG else logging.WARNING)
    for name in _DEMOTED:  # below debug not even created
        logging.getLogger(name).setLevel(logging.NOTSET if level <= logging.DEBUG else logging.CRITICAL)


def reset_logging() -> None:
    """Undo :func:`configure_logging` (tests): structlog's defaults, and no root handler of ours."""
    structlog.reset_defaults()
    root = _without_our_handler()
    root.setLevel(logging.WARNING)  # the standard library's default
    for name in (*_CHATTY, *_DEMOTED):
        logging.getLogger(name).setLevel(logging.NOTSET)


def configure_logging(
    level: str = "info",
    fmt: str = "console",
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Configure structlog for the process.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        fmt: ``console`` (key=value lines), ``json`` (one JSON object per line) or ``auto``.
        stream: where to write (default ``sys.stderr``; ``pvcharge run`` logs to stdout).
        environ: for ``$JOURNAL_STREAM`` (default ``os.environ``).
    """
    out = stream or sys.stderr
    journald = journald_attached(out, environ)
    resolved = resolve_format(fmt, out, environ)
    renderer: Any
    if resolved == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    if journald:
        renderer = _with_priority(renderer, keep_level=resolved == "json")
    # journald stamps every line itself; JSON keeps its timestamp for whatever parses it later
    stamp: list[Any] = []
    if not journald or resolved == "json":
        stamp.append(structlog.processors.TimeStamper(fmt="iso", utc=False))
    # the standard library's records (pymodbus, aiohttp, httpx) get the same level, stamp and renderer
    _route_stdlib(
        _LEVELS[level],
        out,
        pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, *stamp],
        processors=[structlog.processors.format_exc_info, redact_secrets, renderer],
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            *stamp,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
