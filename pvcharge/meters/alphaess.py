"""AlphaESS storage system as the meter source, read from the AlphaESS Open API (cloud).

Device facts (project reference ``meters.md`` §3; sources [A1] alphaess-developer/alphacloud_open_api,
[A2] CharlesGillanders/alphaess-openAPI, [A3] springfall2008/batpred, [A4]
CharlesGillanders/homeassistant-alphaESS, [A5] xenomorpheus/tesla_charger_alphaess).  Signing, the
envelope and the return codes live in :mod:`pvcharge.clients.alphaess`.

``GET getLastPowerData?sysSn=<serial>`` returns (§3.3 [A3, A4]), in W unless noted:

=========  ============================================  ==========================
field      meaning (vendor sign)                         canonical
=========  ============================================  ==========================
``ppv``    PV power                                      ``pv_power_w = ppv``
``pgrid``  grid power, **+ = import**, − = export        ``grid_power_w = pgrid``
``pbat``   battery power, **+ = discharge**, − = charge  ``battery_power_w = pbat``
``soc``    battery state of charge, %                    ``battery_soc_pct = soc``
``pload``  house load ≈ ``ppv + pgrid + pbat``           (not used)
=========  ============================================  ==========================

The vendor signs are already the canonical ones (meters.md sign table; [A5] negates ``pbat`` to get
charging power).  ``null`` is missing data, never 0 W: some models (Storion-S5) answer all fields
``null`` (§3.3, homeassistant-alphaESS#124) and cannot be used with this endpoint.

The cloud is slow and rate-limited (§3.4): no faster than one request per 10 s [A2, A4].  Every
request counts against the account's request budget (:mod:`pvcharge.clients.alphaess_account`).  With an
AlphaESS wallbox on the same account the two share one client state (:class:`OpenApiAccount`: one
request budget, one 6053 backoff, one connection pool) and one ``getLastPowerData`` per poll: a reply
the wallbox got at most half a poll interval ago is used again, stamped with the time it arrived.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pvcharge.clients.alphaess_account import OpenApiAccount
from pvcharge.clients.alphaess_device import REUSE_SHARE, OpenApiSettings, PolledOutcome, client_for
from pvcharge.errors import DeviceProtocolError
from pvcharge.readings import SiteReading

#: the ``getLastPowerData`` fields read (meters.md §3.3); mapping in :func:`to_reading`.
FIELDS = ("ppv", "pgrid", "pbat", "soc")


@dataclass(frozen=True)
class Config(OpenApiSettings):
    """Settings of an AlphaESS meter source (config ``type: alphaess``).

    Raises:
        SettingError: ``url`` is not ``http(s)://host[/prefix]`` or holds credentials, or ``sys_sn`` or
            ``app_id`` is empty.
    """

    @property
    def update_interval_s(self) -> float:
        """The meter gives a new reading at most this often, in s (see ``poll_interval_s``)."""
        return self.poll_interval_s


def create(
    config: Config, *, name: str, clock: Callable[[], float], account: OpenApiAccount | None = None
) -> AlphaEssMeter:
    """Build the driver from its config (no I/O yet).

    ``account``: the Open API account state shared with an AlphaESS wallbox on the same account (see
    :func:`pvcharge.devices.create_devices`); ``None``: a client of its own.

    Raises:
        ValueError: ``account`` is for another URL, appId or appSecret than ``config``.
    """
    return AlphaEssMeter(config, name=name, clock=clock, account=account)


# -- pure mapping ---------------------------------------------------------------------------------


def to_reading(data: object, timestamp_s: float) -> SiteReading:
    """Convert the ``data`` of a ``getLastPowerData`` reply to a canonical reading (meters.md §3.3).

    Args:
        data: the envelope's ``data`` object, e.g. ``{"ppv": 0.0, "pgrid": 11.0, "pbat": 1264.0,
            "soc": 56.0, "pload": 1275.0, ...}``; other members are ignored.
        timestamp_s: when the reply arrived, seconds on the daemon's clock.

    Returns:
        ``grid_power_w = pgrid`` (W, > 0 import), ``battery_power_w = pbat`` (W, > 0 discharge),
        ``pv_power_w = ppv`` (W), ``battery_soc_pct = soc`` (%); no grid currents.

    Raises:
        ValueError: ``data`` is not an object; a field is missing, ``null`` (missing data, not 0 W; all
            of them ``null`` is the Storion-S5 case) or not a finite number; ``ppv`` is negative or
            ``soc`` outside 0–100 %.  The message names the field.
    """
    if not isinstance(data, dict):
        raise ValueError(f"getLastPowerData: expected a JSON object as data, got {type(data).__name__}")
    missing = [f for f in FIELDS if f not in data]
    if missing:
        raise ValueError(f"getLastPowerData: missing field(s) {', '.join(missing)}")
    nulls = [f for f in FIELDS if data[f] is None]
    if len(nulls) == len(FIELDS):
        raise ValueError(
            f"getLastPowerData: all of {', '.join(FIELDS)} are null (no live data): some models, e.g. the "
            "Storion-S5, report no live data through this endpoint and cannot be used as a meter"
        )
    if nulls:
        raise ValueError(f"getLastPowerData: field(s) {', '.join(nulls)} are null (missing data, not 0)")
    values: dict[str, float] = {}
    for field in FIELDS:
        value: Any = data[field]
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"getLastPowerData: field {field!r} must be a finite number, got {value!r}")
        values[field] = float(value)
    if values["ppv"] < 0:
        raise ValueError(f"getLastPowerData: field 'ppv' is negative: {values['ppv']:g} W")
    if not 0.0 <= values["soc"] <= 100.0:
        raise ValueError(f"getLastPowerData: field 'soc' is outside 0–100 %: {values['soc']:g}")
    return SiteReading(
        grid_power_w=values["pgrid"],
        pv_power_w=values["ppv"],
        battery_power_w=values["pbat"],
        battery_soc_pct=values["soc"],
        timestamp_s=timestamp_s,
    )


# -- driver ---------------------------------------------------------------------------------------


class AlphaEssMeter:
    """Reads an AlphaESS system through ``getLastPowerData``, at most once per ``poll_interval_s``.

    **Shared replies keep their timestamp too.**  With an ``account`` shared with the wallbox, a
    ``getLastPowerData`` reply the wallbox got at most ``poll_interval_s / 2`` ago (:data:`REUSE_SHARE`)
    is used instead of a request, and a request the wallbox has in flight is awaited; the reading then
    carries the time that reply arrived, and the next request is due ``poll_interval_s`` after it (so
    a reading is never older than one poll interval because of the sharing, and the two devices fall
    into step).

    **Cached reads keep their timestamp.**  A read less than ``poll_interval_s`` (on ``clock``) after
    the last request (and less than half an interval after a slow one ended: :class:`PolledOutcome`) sends
    nothing: it returns the last reading unchanged, *with its original ``timestamp_s``*, so the
    controller sees that no new measurement arrived (it counts a reading as new only when its timestamp
    advances, and treats it as stale after ``control.max_age_s``); if that request failed, it raises
    the same error again.  The timestamp is when the reply arrived; the
    cloud does not say how old its "last" power data is.

    Attributes:
        name: the configured device name, used in every error and log line.

    Args:
        config: the validated settings.
        name: device name for errors and logs.
        clock: Unix seconds: reading timestamps, the poll interval, the ``timeStamp`` header and the
            6053 backoff.
        account: the Open API account state shared with the wallbox (connection pool, request budget,
            6053 backoff, replies); ``None``: the meter's own.

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
        self._config = config
        self._clock = clock
        self._client = client_for(config, name=name, clock=clock, account=account)
        self._outcome: PolledOutcome[SiteReading] = PolledOutcome(clock, config.poll_interval_s)

    async def read(self) -> SiteReading:
        """Read the site: ``GET getLastPowerData?sysSn=``, or the cached outcome inside the poll interval.

        Returns:
            a canonical reading (see :func:`to_reading`), stamped with ``clock()`` when the reply
            arrived (for a reply shared with the wallbox, when it arrived for the wallbox, up to
            ``poll_interval_s / 2`` ago); inside the poll interval the same reading again, same
            timestamp.

        Raises:
            RateLimited: code 6053 or HTTP 429, or the client is still backing off from one (nothing
                sent); or (``BudgetSpent``) the account's request budget has no room for the first
                poll (later polls it has no room for hand out the last reading again).
            DeviceUnavailable: no answer after retries (timeout, connection closed, reply cut off, HTTP
                5xx), or 6042 system offline.
            DeviceProtocolError: another return code (6006 clock skew, 6007 wrong appId/appSecret, 6002
                wrong sysSn, …), a TLS failure, a body that is not JSON, or a field that is missing,
                ``null`` or out of range.
        """
        return await self._outcome.get(self._request)

    async def _request(self) -> tuple[SiteReading, float]:
        sys_sn = self._config.sys_sn
        data, received_at_s = await self._client.get_stamped(
            "getLastPowerData", {"sysSn": sys_sn}, reuse_s=self._config.poll_interval_s * REUSE_SHARE
        )
        try:
            return to_reading(data, received_at_s), received_at_s
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"sysSn {sys_sn}: {exc}") from exc

    async def close(self) -> None:
        """Close the HTTP connection pool, a pool shared with the wallbox too (harmless: its next
        request opens a new one, as does this driver's). Safe to call twice."""
        await self._client.close()
