"""HTTP faults: every HTTP driver against its real emulator on 127.0.0.1, for every fault of
``HTTP_FAULTS`` (issue #6), and TLS certificates a driver must not trust.

For each driver × fault the test checks what a user sees in the log line: the error type the daemon
acts on (``DeviceUnavailable``, ``DeviceProtocolError``, ``WriteDeferred``), a message that names the
device and the cause in words ("HTTP 503", "no answer within 0.3 s", "body is not JSON: '<html>…'"),
and no secret in it; that the read gives up within the driver's bound (attempts × timeout + the
backoffs between them, measured on the monotonic clock); that nothing is sent before a 429's
``Retry-After`` (counted at the emulator); and that the first read after ``faults.clear()`` succeeds.

Drivers, emulators and the simulated site share one fake clock (moved by the test), so poll intervals,
failure pauses and ``Retry-After`` pass in simulated seconds; only timeouts and backoffs take real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from sitestub import FakeClock

from pvcharge.chargers import alphaess as wallbox_driver
from pvcharge.chargers import easee as easee_driver
from pvcharge.chargers import warp as warp_driver
from pvcharge.clients.alphaess_account import OpenApiAccount
from pvcharge.errors import DeviceError, DeviceProtocolError, DeviceUnavailable, WriteDeferred
from pvcharge.meters import alphaess as alphaess_meter
from pvcharge.meters import senec as senec_meter
from pvcharge.readings import ChargerCommand, ChargerReading, SiteReading
from pvcharge.retry import ServerError, request_failed, retry_after_s
from pvcharge.settings import Secret
from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.easee import EaseeEmulator
from pvcharge.sim.faults import HTTP_FAULTS, MODBUS_FAULTS, Fault
from pvcharge.sim.http import LoopbackHttpServer
from pvcharge.sim.senec import SenecEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace
from pvcharge.sim.warp import WarpEmulator

TIMEOUT_S = 0.3  #: every driver's timeout_s here
RETRIES = 1  #: every driver's retries here: two attempts
ATTEMPTS = RETRIES + 1
RETRY_AFTER_S = 30.0  #: the emulators' Retry-After under HTTP_429
SLACK_S = 0.6  #: scheduling, TLS handshakes and the first connection on 2 busy cores
NOON_S = 12 * 3600  #: the bundled day's car is plugged in 08:00–18:00 local, PV produces

APP_ID, APP_SECRET = "alpha3f1c0e2b", "b5d0c7e4a1f94e2c"
SYS_SN, EV_SN = "AL2002321010043", "EV1102321010043"
EASEE_USER, EASEE_PASSWORD, EASEE_CHARGER = "demo@example.com", "easee-pa55word", "EH000001"
WARP_USER, WARP_PASSWORD = "admin", "warp-pa55word"

METERS = ("senec", "alphaess_meter")
CHARGERS = ("easee", "warp", "alphaess_wallbox")
DRIVERS = METERS + CHARGERS


@dataclass
class Rig:
    """One driver against its emulator.

    Attributes:
        settle_s: clock time after a read (good or failed) after which the next read sends a request
            again: the poll interval, the failure pause, the request budget.
        backoff_s: the most the backoffs between the attempts of one request take, in s.
        secrets: what must never appear in an error message.
    """

    kind: str
    name: str
    emulator: LoopbackHttpServer
    site: SiteModel
    clock: FakeClock
    read: Callable[[], Awaitable[SiteReading | ChargerReading]]
    close: Callable[[], Awaitable[None]]
    settle_s: float
    backoff_s: float
    apply: Callable[[ChargerCommand], Awaitable[None]] | None = None
    secrets: list[str] = field(default_factory=list)

    def settle(self, dt_s: float | None = None) -> None:
        self.clock.advance(self.settle_s if dt_s is None else dt_s)

    def bound_s(self, wait_s: float = TIMEOUT_S) -> float:
        """The longest a failing read may take: every attempt waits ``wait_s``, plus the backoffs."""
        return ATTEMPTS * wait_s + self.backoff_s + SLACK_S

    def all_secrets(self) -> list[str]:
        tokens = self.emulator.issued_tokens if isinstance(self.emulator, EaseeEmulator) else []
        return [*self.secrets, *tokens]


def noon_clock() -> FakeClock:
    return FakeClock(bundled_trace().start_s + NOON_S)


@contextlib.asynccontextmanager
async def make_rig(kind: str, *, tls: bool = False) -> AsyncIterator[Rig]:
    """``kind``'s driver with small timeouts and one retry against its emulator on 127.0.0.1.

    ``tls`` serves HTTPS (SENEC always does, and its driver trusts the emulator's CA by ``ca_file``;
    the other drivers have no such setting).
    """
    clock = noon_clock()
    site = SiteModel(bundled_trace(), t_s=clock(), clock=clock)
    emulator: LoopbackHttpServer
    rig: Rig
    if kind == "senec":
        emulator = SenecEmulator(site)
        await emulator.start()
        meter = senec_meter.create(
            senec_meter.Config(
                host="127.0.0.1",
                port=emulator.port,
                ca_file=emulator.ca_pem_path,
                timeout_s=TIMEOUT_S,
                retries=RETRIES,
                backoff_s=0.05,
                min_interval_s=1.0,
            ),
            name="meter senec",
            clock=clock,
        )
        rig = Rig(
            kind, meter.name, emulator, site, clock, meter.read, meter.close, settle_s=2.0, backoff_s=0.1
        )
    elif kind in ("alphaess_meter", "alphaess_wallbox"):
        emulator = AlphaEssEmulator(
            site,
            app_id=APP_ID,
            app_secret=APP_SECRET,
            sys_sn=SYS_SN,
            evcharger_sn=EV_SN,
            clock=clock,
            tls=tls,
        )
        await emulator.start()
        settings: dict[str, Any] = {
            "sys_sn": SYS_SN,
            "app_id": APP_ID,
            "app_secret": Secret(APP_SECRET),
            "url": emulator.url,
            "timeout_s": TIMEOUT_S,
            "retries": RETRIES,
            "backoff_s": 0.05,
        }
        # faults, not the account's request budget (test_alphaess_budget.py): retries, probes and
        # recovery at one fake instant take more requests than the default budget's five in 10 s
        account = OpenApiAccount(emulator.url, APP_ID, Secret(APP_SECRET), clock=clock, budget_requests=100)
        if kind == "alphaess_meter":
            meter_ = alphaess_meter.create(
                alphaess_meter.Config(**settings), name="meter alphaess", clock=clock, account=account
            )
            rig = Rig(
                kind,
                meter_.name,
                emulator,
                site,
                clock,
                meter_.read,
                meter_.close,
                settle_s=11.0,
                backoff_s=0.1,
            )
        else:
            box = wallbox_driver.create(
                wallbox_driver.Config(**settings), name="charger alphaess", clock=clock, account=account
            )
            rig = Rig(
                kind, box.name, emulator, site, clock, box.read, box.close, settle_s=11.0, backoff_s=0.1
            )
            rig.apply = box.apply
        rig.secrets = [APP_SECRET]
    elif kind == "easee":
        emulator = EaseeEmulator(
            site, password=EASEE_PASSWORD, charger_id=EASEE_CHARGER, clock=clock, tls=tls
        )
        await emulator.start()
        easee = easee_driver.create(
            easee_driver.Config(
                username=EASEE_USER,
                password=Secret(EASEE_PASSWORD),
                charger_id=EASEE_CHARGER,
                url=emulator.url,
                timeout_s=TIMEOUT_S,
                retries=RETRIES,
            ),
            name="charger easee",
            clock=clock,
        )
        # 16 s: the poll interval (15 s) and one state-budget token (4/min)
        rig = Rig(
            kind, easee.name, emulator, site, clock, easee.read, easee.close, settle_s=16.0, backoff_s=0.4
        )
        rig.apply, rig.secrets = easee.apply, [EASEE_PASSWORD]
    elif kind == "warp":
        emulator = WarpEmulator(site, username=WARP_USER, password=WARP_PASSWORD, tls=tls)
        await emulator.start()
        warp = warp_driver.create(
            warp_driver.Config(
                url=emulator.url,
                timeout_s=TIMEOUT_S,
                retries=RETRIES,
                username=WARP_USER,
                password=Secret(WARP_PASSWORD),
            ),
            name="charger warp",
            clock=clock,
        )
        rig = Rig(kind, warp.name, emulator, site, clock, warp.read, warp.close, settle_s=1.0, backoff_s=0.4)
        rig.apply, rig.secrets = warp.apply, [WARP_PASSWORD]
    else:
        raise AssertionError(kind)
    try:
        yield rig
    finally:
        await rig.close()
        await emulator.stop()


async def timed_failure(rig: Rig) -> tuple[DeviceError, float]:
    """Read, expecting a ``DeviceError``; the error and the real seconds the read took."""
    started = time.monotonic()
    with pytest.raises(DeviceError) as err:
        await rig.read()
    return err.value, time.monotonic() - started


async def recovers(rig: Rig, wait_s: float | None = None) -> int:
    """Clear the fault; the number of reads (1 or 2) until one succeeds, ``settle_s`` apart."""
    rig.emulator.faults.clear()
    rig.settle(wait_s)
    for reads in (1, 2):
        try:
            await rig.read()
        except DeviceError:
            if reads == 2:
                raise
            rig.settle()
        else:
            return reads
    raise AssertionError("unreachable")


def assert_clean(rig: Rig, error: DeviceError) -> None:
    """The message names the device, has no secret, and is not a raw library exception."""
    message = str(error)
    assert error.device == rig.name and message.startswith(f"{rig.name}: ")
    for secret in rig.all_secrets():
        assert secret not in message, f"secret in {message!r}"
    assert not re.search(r"\b(JSONDecodeError|Expecting value|ReadTimeout|ConnectTimeout)\b", message), (
        message
    )


def report(rig: Rig, fault: Fault, outcome: str, elapsed_s: float) -> None:
    """One line of the driver × fault table (shown with ``pytest -s``)."""
    print(f"FAULT-TABLE | {rig.kind} | {fault.value} | {outcome} | {elapsed_s:.2f} s")


# -- the matrix -----------------------------------------------------------------------------------

#: fault → (error type, message pattern) common to every driver; GARBAGE and STALE differ per driver.
COMMON: dict[Fault, tuple[type[DeviceError], str]] = {
    Fault.TIMEOUT: (DeviceUnavailable, rf"no answer within {TIMEOUT_S:g} s \({ATTEMPTS} attempts\)"),
    Fault.SLOW: (DeviceUnavailable, rf"no answer within {TIMEOUT_S:g} s \({ATTEMPTS} attempts\)"),
    Fault.DROP: (DeviceUnavailable, rf"connection closed without an answer .*\({ATTEMPTS} attempts\)"),
    Fault.HTTP_500: (DeviceUnavailable, rf"HTTP 500 Internal Server Error \({ATTEMPTS} attempts\)"),
    Fault.HTTP_503: (DeviceUnavailable, rf"HTTP 503 Service Unavailable \({ATTEMPTS} attempts\)"),
    Fault.HTTP_429: (DeviceUnavailable, r"HTTP 429 Too Many Requests.* 30 s"),
    Fault.TRUNCATED: (
        DeviceUnavailable,
        rf"reply cut off \(truncated body: received \d+ of \d+ bytes\) \({ATTEMPTS} attempts\)",
    ),
    Fault.NOT_JSON: (DeviceProtocolError, r"body is not JSON: '<html><head><title>500 Internal Server Error"),
}

#: GARBAGE: the impossible value each emulator sends, named in the driver's message.
GARBAGE = {
    "senec": r"GUI_BAT_DATA_FUEL_CHARGE \(battery_soc_pct\): 'fl_7FC00000' is nan, not a finite number",
    "alphaess_meter": r"field 'soc' is outside 0–100 %: 250",
    "easee": r"observation 120 \(totalPower\) is -7\.4 kW, negative",
    "warp": r"evse/state: field 'iec61851_state' must be 0\.\.4, got 7",
    "alphaess_wallbox": r"unknown evchargerStatus 42",
}

#: faults the drivers try again (``1 + retries`` attempts): the device may answer the next time.
RETRIED = frozenset({Fault.TIMEOUT, Fault.SLOW, Fault.DROP, Fault.HTTP_500, Fault.HTTP_503, Fault.TRUNCATED})


def test_every_http_emulator_plays_exactly_the_http_faults() -> None:
    assert {Fault.HTTP_429, Fault.TRUNCATED, Fault.NOT_JSON} <= HTTP_FAULTS
    site = SiteModel(bundled_trace())
    for emulator in (SenecEmulator(site), AlphaEssEmulator(site), EaseeEmulator(site), WarpEmulator(site)):
        assert emulator.faults.supported == HTTP_FAULTS
        for modbus_only in MODBUS_FAULTS - HTTP_FAULTS:
            with pytest.raises(ValueError, match="cannot play fault"):
                emulator.faults.set(modbus_only)


@pytest.mark.parametrize("fault", sorted(HTTP_FAULTS))
@pytest.mark.parametrize("kind", DRIVERS)
async def test_every_fault_is_a_clear_error_within_the_bound_and_recovers(kind: str, fault: Fault) -> None:
    async with make_rig(kind) as rig:
        await rig.read()  # healthy first: logged in, wallbox found, connection open
        rig.settle()
        if fault is Fault.STALE:
            await _stale(rig)
            return
        rig.emulator.faults.set(fault, delay_s=2 * TIMEOUT_S, retry_after_s=RETRY_AFTER_S)
        error, elapsed_s = await timed_failure(rig)
        kind_of_error: type[DeviceError]
        if fault is Fault.GARBAGE:
            kind_of_error, pattern = DeviceProtocolError, GARBAGE[kind]
        else:
            kind_of_error, pattern = COMMON[fault]
        assert isinstance(error, kind_of_error), f"{type(error).__name__}: {error}"
        assert re.search(pattern, str(error)), str(error)
        assert_clean(rig, error)
        assert elapsed_s <= rig.bound_s(), f"{elapsed_s:.2f} s"
        if fault in (Fault.TIMEOUT, Fault.SLOW):
            assert elapsed_s >= ATTEMPTS * TIMEOUT_S * 0.95  # each attempt waited for its timeout
        # as many requests as the message says attempts: 429, not-JSON and garbage are not retried
        assert rig.emulator.faults.played[fault] == (ATTEMPTS if fault in RETRIED else 1)
        report(rig, fault, f"{type(error).__name__}: {error.message}", elapsed_s)
        # the first read after the fault is cleared succeeds (after a 429: once Retry-After is over)
        assert await recovers(rig, RETRY_AFTER_S if fault is Fault.HTTP_429 else None) == 1


async def _stale(rig: Rig) -> None:
    """STALE: the emulator keeps serving the values of the moment the fault was set.

    No driver can sensibly turn this into an error, so none does, and the test checks that the frozen
    values pass through unchanged and that the live ones are back after the fault:

    - a meter: neither lala.cgi nor getLastPowerData says when its values were measured.  Values that
      repeat to the watt for minutes are the sign, and the daemon watches for it for every meter
      alike: after ``control.frozen_s`` (default 120 s; 0 turns it off) it treats them as stale and
      goes to the safe state (``Daemon._unfreeze``, tests/test_daemon.py
      ``test_frozen_meter_values_count_as_stale``).  A second check in the drivers could not be
      turned off with it.
    - a charger: its readings stay the same for hours whenever no car is plugged in or the car is full
      or paused, and none of the three APIs says when a value was measured (Easee's observation
      timestamps tell when a value last *changed*).  Stale charger data cannot make the car draw more
      than the meter allows: the controller acts on the meter's grid power.
    """
    rig.emulator.faults.set(Fault.STALE)
    frozen = await rig.read()
    rig.settle()
    again = await rig.read()
    assert again.timestamp_s > frozen.timestamp_s  # a new answer, with the old values:
    same: tuple[str, ...]
    if isinstance(frozen, ChargerReading):
        assert isinstance(again, ChargerReading)
        same = ("connected", "charging", "power_w", "current_a", "phases")
    else:
        same = ("grid_power_w", "pv_power_w", "battery_power_w", "battery_soc_pct")
    assert [getattr(again, f) for f in same] == [getattr(frozen, f) for f in same]
    report(rig, Fault.STALE, "no error: the frozen values pass (see _stale)", 0.0)
    assert await recovers(rig) == 1


@pytest.mark.parametrize("kind", DRIVERS)
async def test_slow_within_the_timeout_is_just_slow(kind: str) -> None:
    async with make_rig(kind) as rig:
        await rig.read()
        rig.settle()
        rig.emulator.faults.set(Fault.SLOW, delay_s=TIMEOUT_S / 3)
        started = time.monotonic()
        await rig.read()
        assert time.monotonic() - started >= TIMEOUT_S / 3


@pytest.mark.parametrize("kind", DRIVERS)
async def test_429_retry_after_is_honoured_on_reads(kind: str) -> None:
    async with make_rig(kind) as rig:
        await rig.read()
        rig.settle()
        rig.emulator.faults.set(Fault.HTTP_429, retry_after_s=RETRY_AFTER_S)
        with pytest.raises(DeviceUnavailable, match="HTTP 429"):
            await rig.read()
        sent = len(rig.emulator.received)
        waited_s = 0.0
        while waited_s + rig.settle_s < RETRY_AFTER_S:  # reads before Retry-After send nothing
            rig.settle()
            waited_s += rig.settle_s
            with pytest.raises(DeviceUnavailable) as err:
                await rig.read()
            assert_clean(rig, err.value)
        assert len(rig.emulator.received) == sent, "a request before Retry-After"
        assert rig.emulator.faults.played[Fault.HTTP_429] == 1
        rig.emulator.faults.clear()
        rig.settle(max(rig.settle_s, RETRY_AFTER_S - waited_s))  # the poll interval may end later
        await rig.read()
        assert len(rig.emulator.received) > sent


@pytest.mark.parametrize("kind", CHARGERS)
async def test_429_on_a_write_defers_it_until_retry_after(kind: str) -> None:
    async with make_rig(kind) as rig:
        assert rig.apply is not None
        await rig.read()
        rig.emulator.faults.set(Fault.HTTP_429, retry_after_s=RETRY_AFTER_S)
        with pytest.raises(WriteDeferred) as err:
            await rig.apply(ChargerCommand(10, 3))
        assert err.value.retry_after_s == pytest.approx(RETRY_AFTER_S, abs=1.0)
        assert "429" in str(err.value)
        assert_clean(rig, err.value)
        sent = len(rig.emulator.received)
        rig.clock.advance(RETRY_AFTER_S / 2)
        with pytest.raises(WriteDeferred) as again:
            await rig.apply(ChargerCommand(10, 3))
        # not before Retry-After; later if the driver's own budget needs longer (Easee: two commands)
        assert again.value.retry_after_s >= RETRY_AFTER_S / 2 - 1
        assert len(rig.emulator.received) == sent, "a request before Retry-After"
        rig.emulator.faults.clear()
        rig.clock.advance(again.value.retry_after_s + 1)  # the driver's word for when it goes
        await rig.apply(ChargerCommand(10, 3))
        assert len(rig.emulator.received) > sent


@pytest.mark.parametrize(
    "fault", [Fault.TIMEOUT, Fault.DROP, Fault.HTTP_503, Fault.TRUNCATED, Fault.NOT_JSON], ids=str
)
@pytest.mark.parametrize("kind", CHARGERS)
async def test_a_write_under_a_fault_fails_clearly_and_goes_out_after_it(kind: str, fault: Fault) -> None:
    """A write gets the same errors as a read; a 200 with an HTML page does not count as done.  (GARBAGE
    and STALE concern values a write does not get back; 429 has its own test above; HTTP 500 and SLOW
    take the paths of HTTP 503 and TIMEOUT.)"""
    async with make_rig(kind) as rig:
        assert rig.apply is not None
        await rig.read()
        rig.emulator.faults.set(fault)
        started = time.monotonic()
        with pytest.raises(DeviceError) as err:
            await rig.apply(ChargerCommand(10, 3))
        elapsed_s = time.monotonic() - started
        kind_of_error, pattern = COMMON[fault]
        if fault is Fault.NOT_JSON:
            pattern = r"body is not JSON: '<html>"
        assert type(err.value) is kind_of_error, f"{type(err.value).__name__}: {err.value}"
        assert re.search(pattern, str(err.value)), str(err.value)
        assert_clean(rig, err.value)
        assert elapsed_s <= rig.bound_s()
        report(rig, fault, f"(write) {type(err.value).__name__}: {err.value.message}", elapsed_s)
        rig.emulator.faults.clear()
        rig.settle(31.0)  # past the drivers' write intervals (AlphaESS, Easee: 30 s by default)
        await rig.apply(ChargerCommand(10, 3))
        offered_a = rig.site.state().offered_current_a
        # the AlphaESS wallbox only starts, at the current set in its app (16 A), and a start cut off
        # in the reply may have arrived: then the status says so and nothing is sent again
        assert offered_a == (16.0 if kind == "alphaess_wallbox" else 10.0)


async def test_garbage_soc_above_100_percent_is_named() -> None:
    async with make_rig("senec") as rig:
        assert isinstance(rig.emulator, SenecEmulator)
        rig.emulator.garbage_soc_pct = 250.0
        rig.emulator.faults.set(Fault.GARBAGE)
        with pytest.raises(DeviceProtocolError, match=r"battery SoC 250 % out of range \(0–100 %\)"):
            await rig.read()


# -- TLS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trust", ["another CA", "another fingerprint"])
async def test_senec_certificate_not_trusted_is_a_tls_error_not_retried(trust: str, tmp_path: Path) -> None:
    async with make_rig("senec") as rig:
        assert isinstance(rig.emulator, SenecEmulator)
        settings: dict[str, Any] = {"host": "127.0.0.1", "port": rig.emulator.port, "retries": 2}
        if trust == "another CA":
            other_ca = tmp_path / "other-ca.pem"
            other_ca.write_bytes(trustme.CA().cert_pem.bytes())
            settings["ca_file"] = str(other_ca)
        else:
            settings["fingerprint_sha256"] = "AB" * 32
        meter = senec_meter.create(senec_meter.Config(**settings), name="meter senec", clock=rig.clock)
        try:
            started = time.monotonic()
            with pytest.raises(DeviceProtocolError) as err:
                await meter.read()
            elapsed_s = time.monotonic() - started
            message = str(err.value)
            assert message.startswith("meter senec: TLS") and "certificate" in message
            assert f"127.0.0.1:{rig.emulator.port}" in message
            assert rig.emulator.tls_handshakes == 1  # not retried, though retries is 2
            assert not rig.emulator.received  # nothing was sent to an untrusted peer
            assert elapsed_s < 1.0
            with pytest.raises(DeviceProtocolError, match="pausing requests"):
                await meter.read()  # inside the pause: the same error, no new handshake
            assert rig.emulator.tls_handshakes == 1
            rig.clock.advance(senec_meter.MAX_FAILURE_PAUSE_S)
            with pytest.raises(DeviceProtocolError, match="TLS"):
                await meter.read()
            assert rig.emulator.tls_handshakes == 2  # one handshake per read, paced by the pause
        finally:
            await meter.close()


@pytest.mark.parametrize("kind", ["easee", "alphaess_meter", "alphaess_wallbox", "warp"])
async def test_drivers_verify_tls_and_do_not_retry_an_untrusted_certificate(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cloud clients (Easee, AlphaESS Open API) verify certificates against the system's CAs, never
    skip it; the WARP, which has no trust settings, does the same for an https URL."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with make_rig(kind, tls=True) as rig:
        assert rig.emulator.scheme == "https"
        started = time.monotonic()
        error, elapsed_s = await timed_failure(rig)
        assert isinstance(error, DeviceProtocolError), f"{type(error).__name__}: {error}"
        message = str(error)
        assert "TLS certificate verification failed" in message and "not retried" in message
        assert f"https://127.0.0.1:{rig.emulator.port}" in message
        assert_clean(rig, error)
        assert rig.emulator.tls_handshakes == 1 and not rig.emulator.received
        assert elapsed_s < 1.0, time.monotonic() - started
        outcome = f"{type(error).__name__}: {error.message}"
        print(f"FAULT-TABLE | {rig.kind} | untrusted TLS certificate | {outcome} | {elapsed_s:.2f} s")


@pytest.mark.parametrize("kind", ["easee", "alphaess_meter", "alphaess_wallbox"])
async def test_cloud_drivers_trust_a_ca_added_through_ssl_cert_file(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verification stays on; a private CA (a TLS-inspecting proxy) is added the standard way."""
    async with make_rig(kind, tls=True) as rig:
        monkeypatch.setenv("SSL_CERT_FILE", rig.emulator.ca_pem_path)
        await rig.read()
        assert rig.emulator.tls_handshakes >= 1 and rig.emulator.received


def test_no_driver_turns_tls_verification_off() -> None:
    """Only the SENEC driver's TLS trust may skip verification, and only on ``verify: false``."""
    root = Path(__file__).resolve().parent.parent / "pvcharge"
    for path in (
        root / "chargers" / "easee.py",
        root / "chargers" / "easee_observations.py",
        root / "chargers" / "warp.py",
        root / "chargers" / "alphaess.py",
        root / "clients" / "alphaess.py",
        root / "clients" / "alphaess_device.py",
        root / "meters" / "alphaess.py",
        root / "meters" / "senec.py",
        root / "meters" / "senec_lala.py",
    ):
        text = path.read_text()
        for forbidden in (
            "verify=False",
            "CERT_NONE",
            "check_hostname = False",
            "_create_unverified_context",
        ):
            assert forbidden not in text, f"{path.name}: {forbidden}"
    senec_tls = (root / "meters" / "senec_tls.py").read_text()
    assert senec_tls.count("CERT_NONE") == 2  # the pinning context (checks the pin itself) and verify: false


def test_request_failed_words_every_kind_of_failure_as_the_drivers_do() -> None:
    """The one mapping of a failed request to a DeviceError that every HTTP driver uses."""
    where = "GET http://127.0.0.1/x"

    def failed(
        exc: httpx.HTTPError | ServerError, timeout_s: float | None = 0.5, **kwargs: Any
    ) -> tuple[type[DeviceError], str]:
        error = request_failed("dev", where, exc, attempts=3, timeout_s=timeout_s, **kwargs)
        return type(error), error.message

    timeout = httpx.ReadTimeout("")
    assert failed(timeout) == (DeviceUnavailable, f"{where}: no answer within 0.5 s (3 attempts)")
    assert failed(timeout, note="; hint") == (
        DeviceUnavailable,
        f"{where}: no answer within 0.5 s (3 attempts); hint",
    )
    assert failed(timeout, timeout_s=None) == (DeviceUnavailable, f"{where}: ReadTimeout (3 attempts)")
    refused = httpx.ConnectError("refused token=abc")
    assert failed(refused, scrub=lambda text: text.replace("abc", "***")) == (
        DeviceUnavailable,
        f"{where}: ConnectError: refused token=*** (3 attempts)",
    )
    assert failed(ServerError(503, "Service Unavailable")) == (
        DeviceUnavailable,
        f"{where}: HTTP 503 Service Unavailable (3 attempts)",
    )
    assert failed(httpx.TooManyRedirects("too many")) == (
        DeviceProtocolError,
        f"{where}: TooManyRedirects: too many",
    )
    handshake = httpx.ConnectError("handshake")
    handshake.__cause__ = ssl.SSLError(1, "[SSL] no shared cipher")
    kind, message = failed(handshake)
    assert (
        kind is DeviceProtocolError
        and message.startswith(f"{where}: TLS handshake failed (")
        and "(3" not in message
    )
    assert failed(handshake, tls_text=lambda tls: "pinned") == (DeviceProtocolError, "pinned")


def test_retry_after_s_is_the_header_or_the_drivers_default() -> None:
    assert retry_after_s("7", 0.0, 30.0) == 7.0
    assert retry_after_s("0", 0.0, 30.0) == 0.0  # "now" is an answer, not a missing header
    assert retry_after_s(None, 0.0, 30.0) == 30.0
    assert retry_after_s("soon", 0.0, 30.0) == 30.0


async def test_slow_answer_to_a_client_that_gave_up_is_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SLOW outlasting the client's timeout on a write: the emulator does not try to read the body of a
    closed connection (aiohttp would log "Error handling request" with a ConnectionResetError)."""
    async with WarpEmulator(SiteModel(bundled_trace())) as warp:
        warp.faults.set(Fault.SLOW, delay_s=0.3)
        async with httpx.AsyncClient(base_url=warp.url, timeout=0.1) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.put("/evse/external_current", content=b"8000")
        await asyncio.sleep(0.4)  # the emulator's sleep ends with the client gone
        assert warp.faults.played[Fault.SLOW] == 1
        warp.faults.clear()
        async with httpx.AsyncClient(base_url=warp.url) as client:
            assert (await client.put("/evse/external_current", content=b"8000")).status_code == 200
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [], [r.getMessage() for r in errors]
