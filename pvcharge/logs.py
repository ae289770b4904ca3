"""Structured logging with structlog: one event per decision, with the numbers behind it.

``configure_logging`` sets the level and the renderer and installs a redaction processor: any
registered secret value that shows up in an event, whatever the key, is replaced by ``***`` before
rendering.  Drivers never log secrets in the first place; this is the second line of defence.

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
    # pymodbus logs every timeout at ERROR through the standard library; the Huawei driver already
    # reports each failure (with its device name) through structlog, so keep pymodbus quiet.
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if level == "debug" else logging.CRITICAL)
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
