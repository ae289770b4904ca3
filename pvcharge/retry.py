"""The retry mechanism every device driver shares: exponential backoff with jitter (tenacity), a
server-error type worth retrying, which failures are worth another attempt (:data:`retry_transient`:
not a TLS failure), one way to describe a failure in a user's words, the one error a request that
failed becomes (:func:`request_failed`), and one retry log event.

Imports nothing of pvcharge but its errors, so any driver or client may use it.
"""

from __future__ import annotations

import contextvars
import email.utils
import math
import re
import ssl
from collections.abc import Callable
from datetime import UTC
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.retry import retry_base

from pvcharge.errors import DeviceError, DeviceProtocolError, DeviceUnavailable

#: how much of a body that is not JSON an error message quotes, in characters.
QUOTE_CHARS = 60


class AttemptNote:
    """The last failed attempt seen by :func:`backoff_retrying` in the task that set it in
    :data:`attempt_note`: ``text`` (:func:`describe` of the error) and ``attempts`` (how many failed).

    Lets a caller that gives up on a slow read (the daemon, after ``control.max_age_s``) say why the
    device was slow, e.g. "no answer within 30 s (attempt 2 failed: cannot connect: …)".
    """

    __slots__ = ("attempts", "text")

    def __init__(self) -> None:
        self.text: str | None = None
        self.attempts = 0


#: set it (inside the task that runs a read) to hear of every failed attempt that is retried there.
attempt_note: contextvars.ContextVar[AttemptNote | None] = contextvars.ContextVar(
    "attempt_note", default=None
)


class ServerError(Exception):
    """HTTP 5xx: the device or cloud failed internally (or a gateway did); worth another attempt.

    Attributes:
        status_code: the HTTP status.
        reason: the start of the body (at most 200 characters), scrubbed by the caller if needed.
    """

    def __init__(self, status_code: int, reason: str) -> None:
        self.status_code = status_code
        self.reason = reason.strip()[:200]
        super().__init__(f"HTTP {status_code} {self.reason}".rstrip())

    @classmethod
    def of(cls, response: httpx.Response) -> ServerError:
        return cls(response.status_code, response.text)


#: TLS-layer exceptions that are no TLS failure: a connection closed mid-stream (EOF, zero return, a
#: system call error) or a read or write still waiting for data, which a timeout leaves behind.
_NOT_TLS_FAILURES = (
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    ssl.SSLSyscallError,
    ssl.SSLWantReadError,
    ssl.SSLWantWriteError,
)


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind an exception (httpx → httpcore → ssl), if any: a certificate not trusted, a
    handshake refused.  A connection dropped mid-stream or a timeout is none (:data:`_NOT_TLS_FAILURES`).
    """
    if isinstance(exc, httpx.TimeoutException):
        return None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError) and not isinstance(current, _NOT_TLS_FAILURES):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: HTTP 5xx, or a timeout or connection error that is not a TLS failure (a
    certificate that is not trusted now will not be trusted a second later)."""
    if isinstance(exc, ServerError):
        return True
    return isinstance(exc, httpx.TransportError) and tls_failure(exc) is None


#: the tenacity retry condition of every driver: :func:`is_transient`.
retry_transient = retry_if_exception(is_transient)


def describe(exc: BaseException) -> str:
    """A failure in a user's words, with the technical name where it helps a search.

    ``HTTP 503 reason`` for a server error; ``reply cut off (truncated body: received 58 of 117
    bytes)``; ``connection closed without an answer (RemoteProtocolError: …)``; ``TLS: …`` for a TLS
    failure; ``ConnectError: reason`` for any other exception.
    """
    text = str(exc)
    if isinstance(exc, ServerError):
        return text
    tls = tls_failure(exc)
    if tls is not None:
        return f"TLS: {getattr(tls, 'reason', None) or tls}"
    if isinstance(exc, httpx.RemoteProtocolError):
        if "complete message body" in text:
            counts = re.search(r"received (\d+) bytes, expected (\d+)", text)
            detail = f": received {counts[1]} of {counts[2]} bytes" if counts else ""
            return f"reply cut off (truncated body{detail})"
        if "without sending a response" in text:
            return f"connection closed without an answer (RemoteProtocolError: {text})"
    if isinstance(exc, httpx.ReadError | httpx.WriteError) and not text:
        return f"connection lost ({type(exc).__name__})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def tls_message(where: str, error: ssl.SSLError) -> str:
    """Why a TLS handshake with a server that has no trust settings of its own failed, and what to check
    (a cloud API: the system's CA certificates decide)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or str(error)
        return (
            f"{where}: TLS certificate verification failed ({reason}); not retried: the server's "
            "certificate is not trusted by this host. Check the system clock (a Raspberry Pi without "
            "network time starts in the past), the CA certificates (ca-certificates; SSL_CERT_FILE for "
            "a private CA) and any proxy or firewall that intercepts HTTPS"
        )
    return f"{where}: TLS handshake failed ({getattr(error, 'reason', None) or error}); not retried"


def request_failed(
    name: str,
    where: str,
    exc: httpx.HTTPError | ServerError,
    *,
    attempts: int,
    timeout_s: float | None,
    scrub: Callable[[str], str] | None = None,
    note: str = "",
    tls_text: Callable[[ssl.SSLError], str] | None = None,
) -> DeviceError:
    """The error of device ``name`` for a request ``where`` (e.g. ``"GET http://box/evse/state"``) whose
    last of ``attempts`` attempts failed with ``exc`` (after :func:`backoff_retrying` gave up).

    - a TLS failure: ``DeviceProtocolError`` with ``tls_text(tls)``, by default :func:`tls_message`;
    - a timeout: ``DeviceUnavailable`` "``{where}: no answer within {timeout_s} s ({attempts}
      attempts){note}``"; with ``timeout_s=None`` it is described like any other failure;
    - another connection error or HTTP 5xx: ``DeviceUnavailable`` "``{where}: {describe(exc)}
      ({attempts} attempts){note}``";
    - any other httpx error (too many redirects, a body that does not decode): ``DeviceProtocolError``
      "``{where}: {describe(exc)}``", not worth another read.

    ``scrub`` removes secrets from :func:`describe`'s text (a cloud that echoes tokens); ``note`` is
    appended to a ``DeviceUnavailable`` message (e.g. "; firmware … serves HTTPS only").
    """
    tls = tls_failure(exc)
    if tls is not None:
        return DeviceProtocolError(name, tls_text(tls) if tls_text else tls_message(where, tls))
    if isinstance(exc, httpx.TimeoutException) and timeout_s is not None:
        cause = f"no answer within {timeout_s:g} s"
    else:
        cause = describe(exc)
        if scrub is not None:
            cause = scrub(cause)
        if not isinstance(exc, httpx.TransportError | ServerError):
            return DeviceProtocolError(name, f"{where}: {cause}")
    return DeviceUnavailable(name, f"{where}: {cause} ({attempts} attempts){note}")


def not_json(text: str) -> str:
    """``body is not JSON: '<html><head>…'``: the start of a body that does not parse, for a message
    (the caller scrubs secrets from ``text`` first where the body may hold some)."""
    flat = " ".join(text.split())
    quoted = flat[:QUOTE_CHARS] + ("…" if len(flat) > QUOTE_CHARS else "")
    return f"body is not JSON: {quoted!r}" if flat else "body is empty, not JSON"


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110).

    Args:
        value: the header, e.g. ``"30"`` or ``"Wed, 21 Oct 2026 07:28:00 GMT"``; ``None`` if absent.
        now_s: Unix seconds now, to turn a date into a delay.

    Returns:
        The delay in s (>= 0), or ``None`` when absent or unparseable.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now_s)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def retry_after_s(header: str | None, now_s: float, default_s: float) -> float:
    """Seconds to wait after an HTTP 429: its ``Retry-After`` ``header`` (:func:`parse_retry_after`, at
    Unix seconds ``now_s``), or ``default_s`` (the driver's, in s) when it is absent or unparseable."""
    wait_s = parse_retry_after(header, now_s)
    return default_s if wait_s is None else wait_s


def backoff_retrying(
    *,
    attempts: int,
    backoff_s: float,
    retry: retry_base,
    log: Any,
    event: str,
    context: Callable[[RetryCallState], dict[str, Any]] | None = None,
    max_wait_s: float = 30.0,
) -> AsyncRetrying:
    """A tenacity retrier: ``attempts`` tries, waiting ``backoff_s`` doubling per retry (at most
    ``max_wait_s``) plus up to ``backoff_s`` of jitter; the last exception is re-raised.

    Before each wait it logs ``event`` at debug level on ``log`` with the attempt number, the error
    (:func:`describe`), the wait in s, and the fields ``context(state)`` returns (e.g. the request),
    and records the error in the task's :data:`attempt_note`, if one is set.
    """

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        note = attempt_note.get()
        if note is not None and error is not None:
            note.text, note.attempts = describe(error), state.attempt_number
        log.debug(
            event,
            attempt=state.attempt_number,
            error=describe(error) if error else None,
            wait_s=round(wait_s, 3),
            **(context(state) if context else {}),
        )

    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s, max=max_wait_s) + wait_random(0, backoff_s),
        retry=retry,
        before_sleep=log_retry,
        reraise=True,
    )
