"""What an AlphaESS Open API device driver (the meter, the wallbox) takes from the Open API client.

- :class:`OpenApiSettings` (with :func:`check_settings`): the settings every Open API device shares,
  which the meter's and the wallbox's ``Config`` extend;
- :func:`client_for`: the device's :class:`~pvcharge.clients.alphaess.AlphaEssClient`, its own or on an
  :class:`~pvcharge.clients.alphaess_account.OpenApiAccount` shared with the other device;
- the poll cadence: :class:`PolledOutcome` (a poll's outcome handed out again until the next poll is due,
  :func:`next_poll_s`) and the shares of ``poll_interval_s`` it uses (:data:`REUSE_SHARE`,
  :data:`REST_SHARE`).  The cloud publishes no rate limit and answers a client that asks too often with
  6053 (``meters.md`` §3.4 [A2, A4]).

The HTTP client is :mod:`pvcharge.clients.alphaess`; the account's request budget and 6053 backoff are
:mod:`pvcharge.clients.alphaess_account`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pvcharge.clients.alphaess import AlphaEssClient, copy_error
from pvcharge.clients.alphaess_account import OpenApiAccount
from pvcharge.clients.alphaess_api import DEFAULT_URL
from pvcharge.clients.budget import BudgetSpent
from pvcharge.clients.urls import check_base_url
from pvcharge.errors import DeviceError, RateLimited
from pvcharge.settings import Secret, SettingError, setting

#: a device hands out again a ``getLastPowerData`` reply that the other device of its account got at
#: most this share of its ``poll_interval_s`` ago (``reuse_s`` of :meth:`AlphaEssClient.get_stamped`)
REUSE_SHARE = 0.5

#: after a poll that took long (a slow cloud, retries), the next waits at least this share of
#: ``poll_interval_s`` after it ended, rather than following at once (the cloud counts requests, §3.4)
REST_SHARE = 0.5


def _later(exc: RateLimited, elapsed_s: float) -> RateLimited:
    """A copy of ``exc`` raised again ``elapsed_s`` later: its ``retry_after_s`` that much shorter."""
    copy = copy_error(exc)
    copy.retry_after_s = max(0.0, exc.retry_after_s - elapsed_s)
    return copy


def next_poll_s(started_s: float, ended_s: float, data_s: float, poll_interval_s: float) -> float:
    """When the next poll of a device is due, in s on its clock.

    One ``poll_interval_s`` after the poll started, or after its data arrived if that was earlier (a reply
    shared with the other device of the account: the two fall into step); but at least
    :data:`REST_SHARE` of the interval after the poll ended, so a poll that took long (a slow cloud,
    retries) is not followed at once by the next one.

    Args:
        started_s: when the poll started; ended_s: when it ended; data_s: when its data arrived (may be
            earlier than ``started_s`` for a reused reply); poll_interval_s: the device's setting.
    """
    due_s = min(started_s, data_s) + poll_interval_s
    return max(due_s, ended_s + REST_SHARE * poll_interval_s)


T = TypeVar("T")


class PolledOutcome(Generic[T]):
    """A device's last poll outcome, handed out again until its next poll is due (:func:`next_poll_s`).

    Inside the poll interval :meth:`get` sends nothing: it returns the same value (a reading keeps its
    original ``timestamp_s``, so the controller sees that no new measurement arrived) or raises the same
    ``DeviceError`` again (a ``RateLimited`` with its ``retry_after_s`` counted down to now).  One poll
    at a time: a caller arriving while a poll runs (the daemon's ``apply`` while a slow ``read`` rolled
    over to the next cycle) waits for it and gets its outcome, instead of sending a second poll's
    requests beside it (twice the requests: 6053, meters.md §3.4).

    A poll the account's request budget has no room for (:class:`BudgetSpent`: nothing was sent) is
    tried again when the budget says; until then :meth:`get` returns the last value, as inside the poll
    interval (with its original timestamp), or raises if there is none yet.

    Args:
        clock: Unix seconds (the device's clock).
        poll_interval_s: the device's ``poll_interval_s``, in s.
    """

    def __init__(self, clock: Callable[[], float], poll_interval_s: float) -> None:
        self._clock = clock
        self._poll_interval_s = poll_interval_s
        self._lock = asyncio.Lock()
        self._last: T | DeviceError | None = None
        self._failed_s = 0.0  #: when ``_last`` failed, in s on the clock
        self.due_s = -float("inf")  #: when the next poll may go, in s on the clock

    async def get(self, poll: Callable[[], Awaitable[tuple[T, float]]]) -> T:
        """The last outcome inside the poll interval, else ``await poll()``.

        Args:
            poll: sends the requests; returns the value and when its data arrived (s on the clock).

        Raises:
            DeviceError: the poll's, or the last poll's again inside the interval.
        """
        async with self._lock:
            now = self._clock()
            if now < self.due_s and self._last is not None:
                if isinstance(self._last, RateLimited):
                    raise _later(self._last, now - self._failed_s)
                if isinstance(self._last, DeviceError):
                    raise self._last.with_traceback(None)
                return self._last
            self.due_s = now + self._poll_interval_s
            try:
                value, data_s = await poll()
            except BudgetSpent as exc:
                self.due_s = now + exc.retry_after_s
                if self._last is None or isinstance(self._last, DeviceError):
                    self._last, self._failed_s = exc, now
                    raise
                return self._last
            except DeviceError as exc:
                self._last, self._failed_s = exc, now
                raise
            self.due_s = next_poll_s(now, self._clock(), data_s, self._poll_interval_s)
            self._last = value
            return value


def client_for(
    settings: OpenApiSettings,
    *,
    name: str,
    clock: Callable[[], float],
    account: OpenApiAccount | None = None,
) -> AlphaEssClient:
    """The client a meter or wallbox driver uses, built from its Open API settings.

    Args:
        settings: the device's Open API settings (its own timeout, retries and retry backoff apply).
        name: the device name, on errors and logs.
        clock: Unix seconds (unused with ``account``: the account's clock applies).
        account: the account shared with the other device (:func:`pvcharge.devices.create_devices`);
            ``None``: a client of its own.

    Raises:
        ValueError: ``account`` does not hold ``settings`` (:meth:`OpenApiAccount.holds`).
    """
    if account is not None:
        if not account.holds(settings):
            raise ValueError(f"{name}: the settings are not those of {account!r}")
        return AlphaEssClient.of(
            account,
            name=name,
            timeout_s=settings.timeout_s,
            retries=settings.retries,
            backoff_s=settings.backoff_s,
        )
    return AlphaEssClient(
        settings.url,
        settings.app_id,
        settings.app_secret,
        name=name,
        timeout_s=settings.timeout_s,
        retries=settings.retries,
        backoff_s=settings.backoff_s,
        clock=clock,
    )


def check_settings(url: str, sys_sn: str, app_id: str) -> None:
    """Validate the settings every Open API device shares (for the drivers' ``Config.__post_init__``).

    Raises:
        SettingError: ``sys_sn`` or ``app_id`` is empty, or ``url`` is not ``http(s)://host[/prefix]`` or
            carries a login.
    """
    for key, value in (("sys_sn", sys_sn), ("app_id", app_id)):
        if not value.strip():
            raise SettingError(key, "must not be empty (see open.alphaess.com)")
    check_base_url(url, example=DEFAULT_URL, login="app_id/app_secret")


@dataclass(frozen=True)
class OpenApiSettings:
    """The settings every AlphaESS Open API device shares; the meter's and the wallbox's ``Config``
    extend it (fields made with ``setting()``, validated in ``__post_init__``).

    Raises:
        SettingError: see :func:`check_settings`.
    """

    sys_sn: str = setting(doc="serial number (sysSn) of the AlphaESS system, e.g. AL2002321010043")
    app_id: str = setting(doc="developer appId from open.alphaess.com, after binding the system")
    app_secret: Secret = setting(
        doc="developer appSecret from open.alphaess.com (or app_secret_file: PATH to a file holding it)"
    )
    url: str = setting(DEFAULT_URL, doc="base URL of the AlphaESS Open API")
    poll_interval_s: float = setting(
        10.0,
        doc="ask the cloud at most this often; reads in between return the last reading with its timestamp",
        unit="s",
        min=10,
        max=3600,
    )
    timeout_s: float = setting(10.0, doc="timeout of one HTTP request", unit="s", min=0.1, max=120)
    retries: int = setting(
        2, doc="extra attempts after a timeout, connection error or HTTP 5xx", min=0, max=10
    )
    backoff_s: float = setting(
        1.0,
        doc="wait before the first retry; doubles per retry, plus up to as much jitter",
        unit="s",
        min=0,
        max=30,
    )

    def __post_init__(self) -> None:
        check_settings(self.url, self.sys_sn, self.app_id)
