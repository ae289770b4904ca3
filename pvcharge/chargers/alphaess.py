"""AlphaESS wallbox (SMILE-EVCT11) over the AlphaESS Open API (cloud): **on/off control only**.

The Open API can start and stop the wallbox, and nothing else: it cannot set a charging current or the
phases (chargers.md §2.1 [A-fx; A-cs; A-gen; A-op]).  Once started, the car charges at whatever current
and phases the wallbox is set to in the AlphaESS app.  **Set ``charger.max_current_a`` and
``charger.phases`` to the same values**, so that the controller knows the fixed power it switches on and
off (it starts only when the surplus covered that power for the whole cloud window, and stops by the
same rule).  ``currentsetting`` (``get/setEvChargerCurrentsBySn``) is the household connection limit the
wallbox balances against, not a charge setpoint: this driver never writes it (chargers.md §2.1).

Device facts (project reference ``chargers.md`` §2.1; sources [A-lib] CharlesGillanders/alphaess-openAPI,
[A-ha] CharlesGillanders/homeassistant-alphaESS, [A-gen] an unofficial generated client quoting the
AlphaESS portal, [A-fx] firefox19de/alphaess-wallbox, [A-cs] EmilekVonBrno/AlphaESS-OpenCloud-API, [A-op]
openpower).  Signing, the envelope, the return codes and the 6053 backoff are those of the meter
(``meters.md`` §3) and live in :mod:`pvcharge.clients.alphaess`.

- ``GET getEvChargerConfigList?sysSn=`` → ``[{"evchargerSn", "evchargerModel": "SMILE-EVCT11"}]``: the
  wallboxes of the system; read once, to pick the first when ``evcharger_sn`` is not set and to check it
  when it is.
- ``GET getEvChargerStatusBySn?sysSn=&evchargerSn=`` → ``{"evchargerStatus": N}``, mapped by
  :data:`STATUSES` (the reference's table [A-gen; A-ha]).
- ``GET getLastPowerData?sysSn=`` → ``pev``: the charging power in W, the **sum over all wallboxes** of
  the system (meters.md §3.3).
- ``POST remoteControlEvCharger`` ``{"sysSn", "evchargerSn", "controlMode"}``, 1 = start, 0 = stop → ``null``.
  The HA integration sends a start only in status 2, 4, 5 and a stop only in 3, 4, 5 [A-ha
  ``can_control_ev``]; this driver does the same.
- Codes: 6008 set failed, 6042 system offline, 6053 too fast (chargers.md §2.1).  No rate limit is
  published: poll no faster than every 10 s [A-lib]; the HA integration polls every 60 s (at least 10 s)
  and paces POSTs 30 s apart [A-ha].  With an AlphaESS meter on the same account the two share one
  client state (:class:`~pvcharge.clients.alphaess_account.OpenApiAccount`: one request budget, one 6053
  backoff, one connection pool) and one ``getLastPowerData`` per poll (meters.md §3.4).  Every request
  counts against the account's budget, starts and stops too; a stop may use the slot kept for it
  (:data:`~pvcharge.clients.alphaess_account.STOP_RESERVE`), so it goes even when polls have used the rest.

What a reading cannot say: the API reports neither the current the wallbox offers nor the phases the car
draws on, so every reading has ``current_a = 0`` and ``phases = 0`` (unknown); ``power_w`` is ``pev``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from pvcharge.clients.alphaess_account import OpenApiAccount
from pvcharge.clients.alphaess_device import REUSE_SHARE, OpenApiSettings, PolledOutcome, client_for
from pvcharge.clients.budget import BudgetSpent
from pvcharge.errors import DeviceProtocolError, RateLimited, WriteDeferred
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading, IecState
from pvcharge.settings import SettingError, setting

_log = structlog.get_logger(__name__)

#: on/off only; the current range is IEC 61851's 6–32 A, which the wallbox's app setting lies in.
CAPABILITIES = ChargerCapabilities(
    current_step_a=1.0, min_current_a=6, max_current_a=32, phase_switching=False, on_off_only=True
)

START, STOP = 1, 0  #: ``controlMode`` of ``remoteControlEvCharger`` (chargers.md §2.1)
#: statuses in which a start is sent, as the HA integration does (chargers.md §2.1 [A-ha]).
START_ALLOWED = frozenset({2, 4, 5})
#: statuses of a started session (Charging, SuspendedEVSE, SuspendedEV): the wallbox is "on".  They are
#: also the only ones in which the HA integration sends a stop (chargers.md §2.1 [A-ha]).
STARTED = frozenset({3, 4, 5})
FINISHING = 6  #: ``evchargerStatus`` right after a stop, before 2 (Preparing) again


@dataclass(frozen=True, slots=True)
class Status:
    """One ``evchargerStatus`` code in canonical terms (chargers.md §2.1 table).

    Attributes:
        name: the code's name in the reference.
        iec_state: the IEC 61851 state it corresponds to.
        connected: a car is plugged in.
        charging: the car draws current.
    """

    name: str
    iec_state: IecState
    connected: bool
    charging: bool


#: ``evchargerStatus`` → canonical (chargers.md §2.1 [A-gen; A-ha]).  4 and 5 are a started session in
#: which the car draws nothing: IEC state B (the evcc bridge [A-fx] reports C, for "session active").
#: 9 (Faulted; openpower reads 7, contradicting the others) is state F, not connected (as WARP's E/F),
#: so the controller pauses.
STATUSES: dict[int, Status] = {
    1: Status("Available (not plugged)", IecState.A, connected=False, charging=False),
    2: Status("Preparing (plugged, not started)", IecState.B, connected=True, charging=False),
    3: Status("Charging", IecState.C, connected=True, charging=True),
    4: Status("SuspendedEVSE (started, no power available)", IecState.B, connected=True, charging=False),
    5: Status("SuspendedEV (started, waiting for the car)", IecState.B, connected=True, charging=False),
    6: Status("Finishing (stopped)", IecState.B, connected=True, charging=False),
    9: Status("Faulted", IecState.F, connected=False, charging=False),
}


@dataclass(frozen=True)
class Config(OpenApiSettings):
    """Settings of an AlphaESS wallbox (the ``charger:`` section with ``type: alphaess``).

    Raises:
        SettingError: ``url`` is not ``http(s)://host[/prefix]`` or holds credentials, or ``sys_sn``,
            ``app_id`` or a given ``evcharger_sn`` is empty.
    """

    evcharger_sn: str | None = setting(
        None, doc="serial number (evchargerSn) of the wallbox; unset: the system's first wallbox"
    )
    min_write_interval_s: float = setting(
        30.0,
        doc="at least this long between two start/stop commands (a stop may go earlier)",
        unit="s",
        min=10,
        max=3600,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.evcharger_sn is not None and not self.evcharger_sn.strip():
            raise SettingError("evcharger_sn", "must not be empty; leave it out to use the first wallbox")


def create(
    config: Config, *, name: str, clock: Callable[[], float], account: OpenApiAccount | None = None
) -> AlphaEssWallbox:
    """Build the driver; no I/O until the first :meth:`AlphaEssWallbox.read` or ``apply``.

    ``account``: the Open API account state shared with an AlphaESS meter on the same account (see
    :func:`pvcharge.devices.create_devices`); ``None``: a client of its own.

    Raises:
        ValueError: ``account`` is for another URL, appId or appSecret than ``config``.
    """
    return AlphaEssWallbox(config, name=name, clock=clock, account=account)


# -- pure mapping ---------------------------------------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_status(data: object) -> int:
    """The ``evchargerStatus`` code from ``getEvChargerStatusBySn``'s ``data`` (``{"evchargerStatus": 2}``).

    Raises:
        ValueError: ``data`` is not an object, or ``evchargerStatus`` is missing, not an integer or not
            one of :data:`STATUSES` (1–6, 9); the message names the value.
    """
    if not isinstance(data, dict) or "evchargerStatus" not in data:
        raise ValueError(f"getEvChargerStatusBySn: expected {{'evchargerStatus': N}} as data, got {data!r}")
    code = data["evchargerStatus"]
    if not isinstance(code, int) or isinstance(code, bool) or code not in STATUSES:
        raise ValueError(
            f"getEvChargerStatusBySn: unknown evchargerStatus {code!r} "
            "(documented: 1–6 and 9, chargers.md §2.1)"
        )
    return code


def parse_pev(data: object) -> float:
    """The charging power ``pev`` in W (>= 0) from the ``data`` of ``getLastPowerData`` (meters.md §3.3).

    Raises:
        ValueError: ``data`` is not an object, or ``pev`` is missing, ``null`` (missing data, not 0 W),
            not a finite number or negative.
    """
    if not isinstance(data, dict) or "pev" not in data:
        raise ValueError("getLastPowerData: missing field 'pev' (charging power)")
    pev = data["pev"]
    if pev is None:
        raise ValueError("getLastPowerData: field 'pev' is null (missing data, not 0)")
    if not _number(pev):
        raise ValueError(f"getLastPowerData: field 'pev' must be a finite number in W, got {pev!r}")
    if pev < 0:
        raise ValueError(f"getLastPowerData: field 'pev' is negative: {pev:g} W")
    return float(pev)


def pick_wallbox(data: object, wanted: str | None) -> tuple[str, int]:
    """The wallbox serial to use, and how many the system has, from ``getEvChargerConfigList``'s ``data``.

    Args:
        data: e.g. ``[{"evchargerSn": "EV1102321010043", "evchargerModel": "SMILE-EVCT11"}]``.
        wanted: the configured ``evcharger_sn``, or ``None`` for the first in the list.

    Raises:
        ValueError: not a list of objects with a string ``evchargerSn``, the list is empty, or ``wanted``
            is not in it (the message lists the serials found).
    """
    if not isinstance(data, list) or not all(
        isinstance(item, dict) and isinstance(item.get("evchargerSn"), str) for item in data
    ):
        raise ValueError(f"getEvChargerConfigList: expected a list of {{'evchargerSn': ...}}, got {data!r}")
    serials = [item["evchargerSn"] for item in data]
    if not serials:
        raise ValueError("getEvChargerConfigList: the system has no wallbox bound to it")
    if wanted is None:
        return serials[0], len(serials)
    if wanted not in serials:
        raise ValueError(
            f"evcharger_sn {wanted} is not a wallbox of this system; getEvChargerConfigList lists: "
            + ", ".join(serials)
        )
    return wanted, len(serials)


def to_reading(status: int, pev_w: float, timestamp_s: float) -> ChargerReading:
    """A canonical reading from an ``evchargerStatus`` code (see :data:`STATUSES`) and ``pev`` in W.

    ``current_a`` and ``phases`` are 0: the Open API reports neither.

    Raises:
        KeyError: ``status`` is not in :data:`STATUSES` (:func:`parse_status` checks that).
    """
    meaning = STATUSES[status]
    return ChargerReading(
        connected=meaning.connected,
        charging=meaning.charging,
        power_w=pev_w,
        current_a=0.0,
        phases=0,
        timestamp_s=timestamp_s,
        iec_state=meaning.iec_state,
    )


# -- driver ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Poll:
    """The outcome of one status + power poll."""

    status: int
    reading: ChargerReading


class AlphaEssWallbox:
    """Starts and stops an AlphaESS wallbox through the Open API; reads its status and power.

    **Polls.** One poll is ``getEvChargerStatusBySn`` then ``getLastPowerData`` (and, before the first,
    ``getEvChargerConfigList``).  :meth:`read` and :meth:`apply` poll at most once per
    ``poll_interval_s`` (on ``clock``); in between they use the last outcome: the same reading *with its
    original ``timestamp_s``*, or the same error again (as the AlphaESS meter does); after a slow poll
    the next waits at least half an interval after it ended (:class:`PolledOutcome`).  One poll runs at a
    time: an ``apply`` while a slow ``read``'s poll is still running waits for it and uses its outcome.
    A poll goes only when the account's request budget has room for all its requests; otherwise the
    last outcome is used until it has (:class:`PolledOutcome`).

    **Shared power data.**  With an ``account`` shared with the AlphaESS meter, a ``getLastPowerData``
    reply the meter got at most ``poll_interval_s / 2`` ago (:data:`REUSE_SHARE`), and after the last
    start/stop, is used instead of a request (a request the meter has in flight is awaited).  A reading
    is stamped with the time its ``getLastPowerData`` reply arrived, so one built on the meter's reply
    says how old its ``pev`` is; the next poll is due ``poll_interval_s`` after that time.

    **Writes.** :meth:`apply` sends a start (``current_a > 0``) or a stop (0) only when it changes the
    on/off state: the last polled status (3, 4, 5 = started), or the last command sent if the status was
    polled before it.  So, as in the HA integration, a stop goes only in 3, 4, 5 and a start only in 2
    (4 and 5 are started already); a start in 1 (unplugged) or 9 (faulted) is dropped with a debug log,
    one in 6 (Finishing) waits for the next poll (``WriteDeferred``).  Starts are at least
    ``min_write_interval_s`` after the last command; a stop may go earlier, and may use the budget's
    slot kept for a stop.

    Attributes:
        name: the configured device name, used in every error and log line.
        capabilities: on/off only (:data:`CAPABILITIES`).

    Args:
        config: the validated settings.
        name: device name for errors and logs.
        clock: Unix seconds: reading timestamps, the poll and write intervals, the ``timeStamp`` header
            and the 6053 backoff.
        account: the Open API account state shared with the meter (connection pool, request budget,
            6053 backoff, replies); ``None``: the wallbox's own.

    Raises:
        ValueError: ``account`` is for another URL, appId or appSecret than ``config``.
    """

    def __init__(
        self,
        config: Config,
        *,
        name: str,
        clock: Callable[[], float],
        account: OpenApiAccount | None = None,
    ) -> None:
        self.name = name
        self.capabilities = CAPABILITIES
        self._config = config
        self._clock = clock
        self._client = client_for(config, name=name, clock=clock, account=account)
        self._evcharger_sn: str | None = None  #: found in getEvChargerConfigList
        self._outcome: PolledOutcome[_Poll] = PolledOutcome(clock, config.poll_interval_s)
        self._last_write_at = -math.inf  #: when the last start/stop was attempted (whatever the answer)
        self._written_on: bool | None = None  #: the last start (True) / stop (False) the cloud accepted
        self._written_at = -math.inf  #: when it was sent
        self._log = _log.bind(device=name)

    async def read(self) -> ChargerReading:
        """Read the wallbox: status and power, or the cached outcome inside the poll interval.

        Returns:
            ``connected``, ``charging`` and ``iec_state`` by :data:`STATUSES`, ``power_w = pev`` in W
            (all wallboxes of the system together), ``current_a = 0`` and ``phases = 0`` (not reported),
            ``timestamp_s`` = ``clock()`` when the ``getLastPowerData`` reply arrived (after the status
            reply; for a reply shared with the meter, when it arrived for the meter).

        Raises:
            RateLimited: code 6053 or HTTP 429, or the client is still backing off from one (nothing
                sent); or (``BudgetSpent``) the account's request budget has no room for the first
                poll (later polls it has no room for hand out the last reading again).
            DeviceUnavailable: no answer after retries (timeout, connection closed, reply cut off, HTTP
                5xx), or 6042 system offline.
            DeviceProtocolError: another return code (6007 wrong appId/appSecret, 6002 wrong sysSn, 6006
                clock skew, …), a TLS failure, a body that is not JSON, no such wallbox, an unknown
                ``evchargerStatus`` or a malformed field.
        """
        return (await self._poll()).reading

    async def apply(self, command: ChargerCommand) -> None:
        """Start (``command.current_a > 0``) or stop (0) charging; the amps and phases are not settable.

        Sends ``POST remoteControlEvCharger {"sysSn", "evchargerSn", "controlMode": 1 | 0}`` when the
        on/off state changes and the status allows it (see the class docstring); otherwise returns
        without a request.

        Raises:
            WriteDeferred: a start within ``min_write_interval_s`` of the last command, or while the
                status does not yet show the last stop's outcome (status 6, Finishing, or not polled
                since); or 6053 / HTTP 429 / the client's backoff after it, or no room in the account's
                request budget (``retry_after_s`` from the client).
            DeviceUnavailable: no answer after retries, or 6042 system offline.
            DeviceProtocolError: 6008 set failed, another return code, or a failed poll of the status.
        """
        want_on = command.current_a > 0
        try:
            poll = await self._poll()
            if self._written_at >= poll.reading.timestamp_s:  # the status predates the last command
                if want_on == self._written_on:
                    self._log.debug("alphaess.wallbox_unchanged", on=want_on, status="not polled since")
                    return
            else:
                if want_on == (poll.status in STARTED):  # so a stop goes only in 3, 4, 5
                    self._log.debug("alphaess.wallbox_unchanged", on=want_on, status=poll.status)
                    return
                if want_on and poll.status not in START_ALLOWED | {FINISHING}:  # 1 unplugged, 9 faulted
                    self._log.debug(
                        "alphaess.wallbox_start_dropped",
                        status=poll.status,
                        meaning=STATUSES[poll.status].name,
                    )
                    return
            if want_on:
                self._check_start(poll)
            await self._send(want_on)
        except RateLimited as exc:
            raise WriteDeferred(self.name, exc.message, retry_after_s=exc.retry_after_s) from exc

    def forget(self) -> None:
        """Nothing to forget: every apply compares with the polled wallbox status."""

    async def close(self) -> None:
        """Close the HTTP connection pool, a pool shared with the meter too (harmless: its next
        request opens a new one, as does this driver's). Safe to call twice."""
        await self._client.close()

    # -- internals --------------------------------------------------------------------------------

    def _check_start(self, poll: _Poll) -> None:
        """Raise ``WriteDeferred`` if a start may not go now (write interval, stop not yet finished)."""
        now = self._clock()
        wait_s = self._last_write_at + self._config.min_write_interval_s - now
        if wait_s > 0:
            raise WriteDeferred(
                self.name,
                f"start not sent: {wait_s:.0f} s left of min_write_interval_s "
                f"{self._config.min_write_interval_s:g} s since the last command",
                retry_after_s=wait_s,
            )
        if self._written_at >= poll.reading.timestamp_s or poll.status == FINISHING:
            wait_s = max(0.0, self._outcome.due_s - now)
            raise WriteDeferred(
                self.name,
                "start not sent: the wallbox has not yet reported the end of the last session "
                f"(status {poll.status}: {STATUSES[poll.status].name} at the last poll)",
                retry_after_s=wait_s,
            )

    async def _send(self, on: bool) -> None:
        sys_sn = self._config.sys_sn
        body = {"sysSn": sys_sn, "evchargerSn": self._evcharger_sn, "controlMode": START if on else STOP}
        attempted_at, self._last_write_at = self._last_write_at, self._clock()
        try:
            await self._client.post("remoteControlEvCharger", body, reserved=not on)
        except BudgetSpent:
            self._last_write_at = attempted_at  # nothing was sent
            raise
        self._written_on, self._written_at = on, self._last_write_at
        self._log.debug("alphaess.wallbox_applied", command="start" if on else "stop")

    async def _poll(self) -> _Poll:
        return await self._outcome.get(self._request_poll)

    async def _request_poll(self) -> tuple[_Poll, float]:
        sys_sn = self._config.sys_sn
        # a reply from before the last start/stop would not show its effect on pev: not reused
        reuse_s = min(self._config.poll_interval_s * REUSE_SHARE, self._clock() - self._last_write_at)
        power = ("getLastPowerData", {"sysSn": sys_sn})
        requests = 1 + (self._evcharger_sn is None) + (not self._client.has_reply(*power, reuse_s))
        self._client.check_budget(requests, f"sysSn {sys_sn}: wallbox poll ({requests} requests)")
        try:
            if self._evcharger_sn is None:
                listed = await self._client.get("getEvChargerConfigList", {"sysSn": sys_sn})
                self._evcharger_sn, count = pick_wallbox(listed, self._config.evcharger_sn)
                self._log.info("alphaess.wallbox_found", evcharger_sn=self._evcharger_sn, wallboxes=count)
                if count > 1:
                    self._log.warning(
                        "alphaess.several_wallboxes",
                        wallboxes=count,
                        note="pev (power_w) is the sum over all wallboxes of the system",
                    )
            params = {"sysSn": sys_sn, "evchargerSn": self._evcharger_sn}
            status = parse_status(await self._client.get("getEvChargerStatusBySn", params))
            data, received_at_s = await self._client.get_stamped(*power, reuse_s=reuse_s)
            pev_w = parse_pev(data)
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"sysSn {sys_sn}: {exc}") from exc
        return _Poll(status, to_reading(status, pev_w, received_at_s)), received_at_s
