"""The retry mechanism every device driver shares: exponential backoff with jitter (tenacity), a
server-error type worth retrying, one way to describe a failure, and one retry log event.

Imports nothing of pvcharge, so any driver or client may use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_exponential, wait_random
from tenacity.retry import retry_base


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


def describe(exc: BaseException) -> str:
    """``HTTP 503 reason`` for a server error, ``ConnectError: reason`` for any other exception."""
    text = str(exc)
    if isinstance(exc, ServerError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
    (:func:`describe`), the wait in s, and the fields ``context(state)`` returns (e.g. the request).
    """

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
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
