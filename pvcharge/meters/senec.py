"""SENEC.Home V2.1/V3 storage system over its local ``lala.cgi`` JSON interface (httpx).

Device facts come from the project reference ``meters.md`` §2 (sources: mchwalisz/pysenec [S1],
marq24/ha-senec-v3 [S2], nobl/ioBroker.senec [S3], evcc ``senec-home.yaml`` [S4]):

- One ``POST <scheme>://<host>/lala.cgi`` per read with a JSON body naming each wanted variable with an
  empty string; the reply echoes the structure with encoded values (§2.1 [S1, S2]).  This driver asks
  for exactly :data:`~pvcharge.meters.senec_lala.REQUEST` (section ``ENERGY``, six variables).
- Values are typed strings (§2.2 [S1, S3]), decoded by :func:`~pvcharge.meters.senec_lala.decode_value`
  (the wire format is :mod:`pvcharge.meters.senec_lala`): ``fl_`` big-endian float32 in 8 hex digits,
  ``u8_/u1_/u3_/u6_`` unsigned and ``i8_/i1_/i3_`` signed (two's complement; pysenec and ha-senec-v3
  forget the sign extension) 8/16/32/64-bit integers, ``st_``/``ch_`` strings, ``er_…`` a device error,
  lists of such strings, and the bare sentinels of :data:`~pvcharge.meters.senec_lala.SENTINELS`.
- Signs (§2.3 and the sign table): ``GUI_GRID_POW`` W, + = import (as canonical) [S1, S2, S4];
  ``GUI_BAT_DATA_POWER`` W, **+ = charging** (negated here) [S4]; ``GUI_INVERTER_POWER`` W, PV, can read
  ``-0.0`` or slightly negative (``abs()`` here) [S1, S2]; ``GUI_BAT_DATA_FUEL_CHARGE`` SoC in %.
  ``GUI_HOUSE_POW`` (W) and ``STAT_STATE`` (u8 enum, e.g. 13 BATTERY FULL, 14 CHARGE, 16 DISCHARGE,
  17 PV + DISCHARGE [S1]) are read for the debug log only.
- Firmware since ~17 Aug 2023 serves HTTPS only, on 443, with a certificate from SENEC's private
  "SenecGui-Root" CA (downloadable from mein-senec.de); older firmware serves plain HTTP (§2.1 [S3];
  ioBroker.senec#164).  Hence the trust choice of :class:`Config` (as a TLS context:
  :mod:`pvcharge.meters.senec_tls`).
- The appliance is sensitive to traffic: over-polling can make it "restart, become unresponsive, or
  fail to synchronize" (§2.5 [S3]).  Hence at most one request per ``min_interval_s`` (ioBroker polls
  every 10 s with a 5 s timeout, ha-senec-v3 allows down to 1 s [S2, S3]) and a growing pause after
  failed reads.

Not implemented (§2.1 [S2]): the variant some newer firmware (NPU 2411) reportedly needs, i.e. an
initial ``{"FACTORY":{...}}`` request for a session cookie and the header
``Content-Type: application/x-www-form-urlencoded; charset=UTF-8``.  This driver sends
``Content-Type: application/json`` and no cookie; appliances that insist on the variant will answer
with an error or unusable data, which surfaces as ``DeviceProtocolError``.  The variant's limits of at
most 600 characters per request and 0.2 s between requests are met anyway (one ~150-character request
per read).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import httpx
import structlog

from pvcharge.clients.tls import verify_for
from pvcharge.errors import DeviceError, DeviceProtocolError, DeviceUnavailable, RateLimited
from pvcharge.meters.senec_lala import (
    BATTERY_POWER,
    BATTERY_SOC,
    GRID_POWER,
    HOUSE_POWER,
    PV_POWER,
    REQUEST_BODY,
    SECTION,
    STATE,
    DecodedValue,
    decode_value,
)
from pvcharge.meters.senec_tls import fingerprint_bytes, ssl_context, tls_message
from pvcharge.readings import SiteReading
from pvcharge.retry import (
    ServerError,
    backoff_retrying,
    not_json,
    request_failed,
    retry_after_s,
    retry_transient,
)
from pvcharge.settings import SettingError, setting

log = structlog.get_logger(__name__)


#: a read failing again and again pauses requests up to this long (or ``min_interval_s`` if longer), in
#: s: long enough to halve the requests to a struggling appliance, short enough that the first or
#: second read after it recovers gets through.
MAX_FAILURE_PAUSE_S = 10.0
#: the variables a reading needs.
NEEDED = (GRID_POWER, PV_POWER, BATTERY_POWER, BATTERY_SOC)
#: each needed variable's canonical field, for messages.
_CANONICAL = {
    GRID_POWER: "grid_power_w",
    PV_POWER: "pv_power_w",
    BATTERY_POWER: "battery_power_w",
    BATTERY_SOC: "battery_soc_pct",
}
#: wait after an HTTP 429 without a usable ``Retry-After``, in s.
DEFAULT_RETRY_AFTER_S = 60.0


@dataclass(frozen=True)
class Config:
    """Settings of a SENEC.Home meter source (config ``type: senec``).

    With ``scheme: https`` exactly one trust choice is required: ``ca_file``, ``fingerprint_sha256``
    or ``verify: false``.

    Raises:
        SettingError: ``host`` is not a bare IP address or host name; no trust choice or more than one
            with https; a trust option with http; ``fingerprint_sha256`` is not 64 hex digits;
            ``ca_file`` cannot be loaded as PEM certificates.
    """

    host: str = setting(doc="IP address or host name of the SENEC.Home appliance (no scheme, no port)")
    scheme: Literal["https", "http"] = setting(
        "https", doc="https (firmware since Aug 2023 serves HTTPS only); http only for older firmware"
    )
    port: int | None = setting(None, doc="TCP port; default 443 with https, 80 with http", min=1, max=65535)
    ca_file: str | None = setting(
        None, doc="PEM file of SENEC's SenecGui-Root CA (from mein-senec.de); absolute or relative to the cwd"
    )
    fingerprint_sha256: str | None = setting(
        None, doc="pin the appliance's certificate by its SHA-256 fingerprint (hex, colons optional)"
    )
    verify: bool = setting(
        True, doc="false: accept any certificate (no protection against impostors; logged as a warning)"
    )
    timeout_s: float = setting(
        5.0, doc="timeout of one request (ioBroker.senec uses 5 s)", unit="s", min=0.1, max=60
    )
    retries: int = setting(
        2, doc="extra attempts after a timeout, connection error or HTTP 5xx", min=0, max=10
    )
    backoff_s: float = setting(
        0.5,
        doc="wait before the first retry; doubles per retry, plus up to as much jitter",
        unit="s",
        min=0,
        max=30,
    )
    min_interval_s: float = setting(
        5.0,
        doc="at most one request per interval; reads in between return the last reading (same timestamp)",
        unit="s",
        min=1,
        max=3600,
    )

    @property
    def update_interval_s(self) -> float:
        """The meter gives a new reading at most this often, in s (see ``min_interval_s``)."""
        return self.min_interval_s

    def __post_init__(self) -> None:
        self._check_host()
        if self.fingerprint_sha256 is not None:
            try:
                fingerprint_bytes(self.fingerprint_sha256)
            except ValueError as exc:
                raise SettingError("fingerprint_sha256", str(exc)) from exc
        if self.scheme == "http":
            given = [k for k in ("ca_file", "fingerprint_sha256") if getattr(self, k) is not None]
            if not self.verify:
                given.append("verify")
            if given:
                raise SettingError(
                    given[0], f"{', '.join(given)}: TLS settings do nothing with scheme: http; remove them"
                )
            return
        if self.ca_file is not None and not self.verify:
            raise SettingError(
                "verify", "ca_file and verify: false contradict each other; keep ca_file and drop verify"
            )
        if self.ca_file is not None and self.fingerprint_sha256 is not None:
            raise SettingError(
                "fingerprint_sha256", "give either ca_file or fingerprint_sha256, not both (one trust choice)"
            )
        if self.fingerprint_sha256 is not None and not self.verify:
            raise SettingError(
                "verify",
                "fingerprint_sha256 already replaces CA verification; drop verify: false (one trust choice)",
            )
        if self.ca_file is None and self.fingerprint_sha256 is None and self.verify:
            raise SettingError("ca_file", self._trust_howto())
        if self.ca_file is not None:
            try:
                ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise SettingError(
                    "ca_file", f"cannot load {self.ca_file!r} as PEM CA certificate(s): {exc}"
                ) from exc

    def _check_host(self) -> None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", self.host):
                raise SettingError(
                    "host",
                    f"expected an IP address or host name such as 192.168.1.40, got {self.host!r} "
                    "(put the scheme into scheme and the port into port)",
                ) from None

    def _trust_howto(self) -> str:
        return (
            "HTTPS needs a trust choice, add exactly one of: "
            "ca_file: <path> (the SenecGui-Root CA, PEM, downloadable from mein-senec.de); "
            "fingerprint_sha256: <hex> (pins the appliance's certificate; set 64 zeros and run "
            "`pvcharge probe`, whose error shows the appliance's fingerprint, or run "
            f"`openssl s_client -connect {self.host}:{self.port or 443} </dev/null | "
            "openssl x509 -noout -fingerprint -sha256`); "
            "or verify: false (no verification at all; logged as a warning)"
        )


def create(config: Config, *, name: str, clock: Callable[[], float]) -> SenecMeter:
    """Build the driver from its config (no network I/O yet)."""
    return SenecMeter(config, name=name, clock=clock)


#: added to an error of a plain-HTTP request that an HTTPS-only appliance would cause (refused, dropped,
#: or answered 400 by a web server that tells HTTP from TLS)
HTTPS_ONLY_HINT = "; firmware since Aug 2023 serves HTTPS only: try scheme: https"


def _number(energy: Mapping[str, object], name: str) -> float:
    """The variable ``name`` of the ENERGY section as a float (finiteness is the reading's check).

    Raises:
        ValueError: missing, not an encoded string, no value or not a number; the message names it.
    """
    if name not in energy:
        raise ValueError(f"{SECTION}.{name} missing from the answer")
    raw = energy[name]
    if not isinstance(raw, str | list):
        raise ValueError(f"{SECTION}.{name}: expected an encoded string, got {raw!r}")
    try:
        value = decode_value(raw)
    except ValueError as exc:
        raise ValueError(f"{SECTION}.{name}: {exc}") from exc
    if value is None:
        raise ValueError(f"{SECTION}.{name}: no value, the appliance answered {raw!r}")
    if not isinstance(value, int | float):
        raise ValueError(f"{SECTION}.{name}: expected a number, got {raw!r}")
    return float(value)


def to_reading(energy: Mapping[str, object], timestamp_s: float) -> SiteReading:
    """Convert the raw ``ENERGY`` section to a canonical reading (meters.md §2.3 and its sign table).

    Args:
        energy: the section as received, e.g. ``{"GUI_GRID_POW": "fl_C1647AE1", ...}``; it needs
            ``GUI_GRID_POW``, ``GUI_INVERTER_POWER``, ``GUI_BAT_DATA_POWER`` and
            ``GUI_BAT_DATA_FUEL_CHARGE``; other variables are ignored.
        timestamp_s: when the answer arrived.

    Returns:
        ``grid_power_w = GUI_GRID_POW`` (+ = import), ``pv_power_w = abs(GUI_INVERTER_POWER)``,
        ``battery_power_w = -GUI_BAT_DATA_POWER`` (vendor + = charging → canonical + = discharging),
        ``battery_soc_pct = GUI_BAT_DATA_FUEL_CHARGE``, all in W or %.

    Raises:
        ValueError: a needed variable is missing, a sentinel or ``er_`` value, malformed or not a
            number, not finite (NaN, ``fl_7FC00000``), or the SoC is outside 0–100 %; the message
            names the variable and the value.
    """
    values = {name: _number(energy, name) for name in NEEDED}
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(
                f"{SECTION}.{name} ({_CANONICAL[name]}): {energy[name]!r} is {value}, not a finite number"
            )
    soc = values[BATTERY_SOC]
    if not 0.0 <= soc <= 100.0:
        raise ValueError(
            f"{SECTION}.{BATTERY_SOC} (battery_soc_pct): battery SoC {soc:g} % out of range (0–100 %)"
        )
    return SiteReading(
        grid_power_w=values[GRID_POWER],
        pv_power_w=abs(values[PV_POWER]),
        battery_power_w=0.0 - values[BATTERY_POWER],  # not -x: 0.0, not -0.0, for idle
        battery_soc_pct=soc,
        timestamp_s=timestamp_s,
    )


class SenecMeter:
    """Reads grid, PV and battery from a SENEC.Home with one lala.cgi request per read.

    Requests carry ``Content-Type: application/json`` and the compact body :data:`REQUEST_BODY`, over
    one keep-alive connection.  Each request is tried ``1 + retries`` times with exponential backoff
    and jitter (``backoff_s``) on timeouts, connection errors and HTTP 5xx; TLS failures are not
    retried.  No request is sent less than ``min_interval_s`` after the previous read's request: a
    read in between returns the previous reading unchanged (same ``timestamp_s``), so the controller
    does not take it for a new measurement.  After a failed read the pause before the next request is
    ``min_interval_s``, doubling per further failed read up to :data:`MAX_FAILURE_PAUSE_S` (10 s; or
    ``min_interval_s`` if that is longer); a read in the pause raises the last error again (reference
    §2.5 [S3]: the appliance can restart or become unresponsive when hammered).  An HTTP 429 pauses
    requests for at least its ``Retry-After``.  A read cancelled by its caller (e.g. the daemon's time
    limit) still counts as a request.  All intervals are measured on ``clock``.

    With ``verify: false`` a warning naming the device is logged when the driver is created.

    Attributes:
        name: the configured device name, used in errors and logs.

    Args:
        config: the settings.
        name: the configured device name.
        clock: returns the timestamp put on readings (seconds).
        transport: an httpx transport replacing the network (tests); the TLS settings then do not apply.
    """

    def __init__(
        self,
        config: Config,
        *,
        name: str,
        clock: Callable[[], float],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._clock = clock
        self._transport = transport
        host = f"[{config.host}]" if ":" in config.host else config.host
        port = f":{config.port}" if config.port is not None else ""
        self._url = f"{config.scheme}://{host}{port}/lala.cgi"
        fingerprint = config.fingerprint_sha256
        self._pin = fingerprint_bytes(fingerprint) if fingerprint is not None else None
        self._ssl = ssl_context(config, self._pin)
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._last_request_at: float | None = None  #: clock() when the last read asked the appliance
        self._next_request_at = 0.0  #: clock() before which no request is sent
        self._cached: SiteReading | None = None
        self._failure: DeviceError | None = None  #: the last read's error, while pausing after it
        self._failures = 0  #: consecutive failed reads
        self._log = log.bind(device=name, url=self._url)
        if config.scheme == "https" and not config.verify:
            self._log.warning(
                "senec.tls_unverified",
                problem="verify: false accepts any certificate: anyone on the LAN can pose as the appliance",
                fix="set ca_file (SenecGui-Root CA) or fingerprint_sha256 instead",
            )

    async def read(self) -> SiteReading:
        """Read the site: one request, or none within ``min_interval_s`` of the previous one.

        Returns:
            a canonical reading (grid > 0 import, battery > 0 discharge, PV >= 0, SoC %) stamped with
            ``clock()`` when the answer arrived; within ``min_interval_s`` the previous reading as is.

        Raises:
            DeviceUnavailable: no answer after ``1 + retries`` attempts (refused, unreachable, timeout,
                connection closed, reply cut off, HTTP 5xx), HTTP 429, still pausing after such a
                failure, or pausing after a cancelled first read.
            DeviceProtocolError: TLS verification failed or the pinned certificate changed (the message
                says how to fix it), an HTTP status other than 200 or 429, a body that is not JSON, or a
                missing, sentinel, malformed or impossible variable (named in the message).
        """
        async with self._lock:
            now = self._clock()
            last = self._last_request_at
            if last is not None and last <= now < self._next_request_at:
                return self._while_pausing(now)
            self._last_request_at = now
            self._next_request_at = now + self._config.min_interval_s  # also if the read is cancelled
            try:
                reading = await self._fetch()
            except DeviceError as exc:
                self._failures += 1
                self._failure = exc
                interval_s = self._config.min_interval_s
                pause_s = max(interval_s, min(interval_s * 2 ** (self._failures - 1), MAX_FAILURE_PAUSE_S))
                if isinstance(exc, RateLimited):
                    pause_s = max(pause_s, exc.retry_after_s)
                self._next_request_at = self._clock() + pause_s
                raise
            self._failures = 0
            self._failure = None
            self._cached = reading
            return reading

    def _while_pausing(self, now: float) -> SiteReading:
        """The answer to a read while no request may be sent: the last error again, else the last
        reading, else (the only read so far was cancelled) ``DeviceUnavailable``."""
        wait_s = self._next_request_at - now
        if self._failure is not None:
            message = f"{self._failure.message} (pausing requests, next one in {wait_s:.0f} s)"
            if isinstance(self._failure, RateLimited):
                raise RateLimited(self.name, message, retry_after_s=wait_s)
            raise type(self._failure)(self.name, message)
        if self._cached is not None:
            return self._cached
        raise DeviceUnavailable(
            self.name, f"POST {self._url}: the first request was interrupted; next one in {wait_s:.0f} s"
        )

    async def close(self) -> None:
        """Close the HTTP connection; the next read reconnects. Safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- HTTP -------------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=self._ssl if self._ssl is not None else verify_for(self._url, trust_env=False),
                timeout=self._config.timeout_s,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                transport=self._transport,
                trust_env=False,  # the appliance is on the LAN: no proxies from the environment
            )
        return self._client

    async def _post_once(self) -> httpx.Response:
        response = await self._http().post(
            self._url, content=REQUEST_BODY, headers={"Content-Type": "application/json"}
        )
        if response.status_code >= 500:
            raise ServerError.of(response)
        return response

    async def _fetch(self) -> SiteReading:
        """One read: POST with retries, then decode.  Only DeviceError subclasses leave."""
        cfg = self._config
        attempts = cfg.retries + 1
        retrying = backoff_retrying(
            attempts=attempts,
            backoff_s=cfg.backoff_s,
            retry=retry_transient,
            log=self._log,
            event="senec.retry",
        )
        try:
            response: httpx.Response = await retrying(self._post_once)
        except (httpx.HTTPError, ServerError) as exc:
            # An HTTPS-only appliance refuses port 80, and on its TLS port drops the plain request
            # (ReadError, or RemoteProtocolError "disconnected without sending a response").
            refused = isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.TimeoutException)
            hint = HTTPS_ONLY_HINT if cfg.scheme == "http" and refused else ""
            raise request_failed(
                self.name,
                f"POST {self._url}",
                exc,
                attempts=attempts,
                timeout_s=cfg.timeout_s,
                note=hint,
                tls_text=lambda error: tls_message(cfg, self._pin, error),
            ) from exc
        received_s = self._clock()
        if response.status_code == 429:
            header = response.headers.get("Retry-After")
            wait_s = retry_after_s(header, received_s, DEFAULT_RETRY_AFTER_S)
            raise RateLimited(
                self.name,
                f"POST {self._url}: HTTP 429 Too Many Requests: the appliance asks for no request for "
                f"{wait_s:.0f} s (Retry-After: {header}); none is sent before",
                retry_after_s=wait_s,
            )
        if response.status_code != 200:
            body = response.text.strip()[:200]
            message = f"POST {self._url}: unexpected HTTP {response.status_code}: {body}".rstrip(": ")
            if cfg.scheme == "http" and (response.status_code == 400 or "https" in body.lower()):
                message += HTTPS_ONLY_HINT  # e.g. "The plain HTTP request was sent to HTTPS port"
            raise DeviceProtocolError(self.name, message)
        try:
            payload: object = json.loads(response.content)
        except ValueError as exc:
            raise DeviceProtocolError(
                self.name, f"POST {self._url}: malformed JSON ({not_json(response.text)})"
            ) from exc
        energy = payload.get(SECTION) if isinstance(payload, dict) else None
        if not isinstance(energy, dict):
            got = "no JSON object" if not isinstance(payload, dict) else repr(energy)[:100]
            raise DeviceProtocolError(
                self.name, f"POST {self._url}: section {SECTION} missing or not an object (got {got})"
            )
        try:
            reading = to_reading(energy, received_s)
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{self._url}: {exc}") from exc
        self._log.debug(
            "senec.read",
            state=_optional(energy, STATE),
            house_w=_optional(energy, HOUSE_POWER),
            grid_w=reading.grid_power_w,
            pv_w=reading.pv_power_w,
            battery_w=reading.battery_power_w,
            soc_pct=reading.battery_soc_pct,
        )
        return reading


def _optional(energy: Mapping[str, object], name: str) -> DecodedValue:
    """A variable for the debug log: its decoded value, or ``None`` when absent or undecodable."""
    raw = energy.get(name)
    if not isinstance(raw, str | list):
        return None
    try:
        return decode_value(raw)
    except ValueError:
        return None
