"""Every Modbus fault of the Huawei emulator against the real Huawei driver, over TCP on 127.0.0.1.

For each fault in ``MODBUS_FAULTS``: what a read raises (type and message), how long it took (within
the bound the driver's config implies), and that the first read after ``faults.clear()`` is good.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sitestub import FixedSite, free_port, meter_state
from structlog.testing import capture_logs

from pvcharge.config import parse_config
from pvcharge.daemon import Daemon
from pvcharge.errors import DeviceError, DeviceProtocolError, DeviceUnavailable
from pvcharge.logs import configure_logging
from pvcharge.meters.huawei import Config, HuaweiMeter, create
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading, SiteReading
from pvcharge.sim.faults import MODBUS_FAULTS, Fault
from pvcharge.sim.huawei import HuaweiEmulator

# Importing 2500 W, PV 5230 W, battery charging 1200 W at 55.5 % (reference meters.md §1.3).
EXAMPLE = meter_state(pv_w=5230.0, grid_w=2500.0, battery_w=-1200.0, soc_pct=55.5)
LATER = dataclasses.replace(EXAMPLE, grid_power_w=-800.0, pv_power_w=4000.0)

CONFIG = Config(
    host="127.0.0.1",
    port=1,  # replaced per test
    timeout_s=0.3,
    retries=2,
    connect_delay_s=0.01,
    request_gap_s=0.001,
    backoff_s=0.01,
)
SLOW_DELAY_S = 0.5  #: SLOW answers this late: later than CONFIG.timeout_s


def attempt_bound_s(cfg: Config) -> float:
    """Longest one attempt may take: connect and reply each bounded by timeout_s."""
    return 2 * cfg.timeout_s + cfg.connect_delay_s + cfg.request_gap_s


def request_bound_s(cfg: Config) -> float:
    """Longest a failing request may take: every attempt, and the backoff (doubling, plus as much
    jitter) before each retry; a read that fails on its first request fails within this."""
    backoff = sum(cfg.backoff_s * 2.0**k + cfg.backoff_s for k in range(cfg.retries))
    return (cfg.retries + 1) * attempt_bound_s(cfg) + backoff


def meter(port: int, name: str = "meter huawei", **overrides: Any) -> HuaweiMeter:
    config = dataclasses.replace(CONFIG, port=port, **overrides)
    return create(config, name=name, clock=time.monotonic)


def is_example(reading: SiteReading) -> bool:
    return (
        reading.grid_power_w,
        reading.pv_power_w,
        reading.battery_power_w,
        reading.battery_soc_pct,
    ) == (2500.0, 5230.0, -1200.0, 55.5)


@pytest.fixture
def site() -> FixedSite:
    return FixedSite(EXAMPLE)


@pytest.fixture
async def emulator(site: FixedSite) -> AsyncIterator[HuaweiEmulator]:
    async with HuaweiEmulator(site) as emu:
        yield emu


@dataclasses.dataclass(frozen=True)
class Failing:
    """What a read under a fault raises, and how long it may take."""

    error: type[DeviceError]
    message: str  #: a regex the message matches (after the device name and endpoint)
    min_s: float  #: it took at least this long (e.g. every attempt waited for the timeout)
    max_s: float  #: and at most this long
    requests: int  #: requests the emulator played the fault on


ATTEMPTS = CONFIG.retries + 1
FAILING = {
    Fault.TIMEOUT: Failing(
        DeviceUnavailable,
        r"no usable answer after 3 attempt\(s\): reading 32064×2: no answer within 0\.3 s",
        min_s=ATTEMPTS * CONFIG.timeout_s,
        max_s=request_bound_s(CONFIG),
        requests=ATTEMPTS,
    ),
    Fault.SLOW: Failing(  # later than the timeout: the driver cannot tell it from TIMEOUT
        DeviceUnavailable,
        r"no usable answer after 3 attempt\(s\): reading 32064×2: no answer within 0\.3 s",
        min_s=ATTEMPTS * CONFIG.timeout_s,
        max_s=request_bound_s(CONFIG),
        requests=ATTEMPTS,
    ),
    Fault.DROP: Failing(  # noticed at once, not at the timeout
        DeviceUnavailable,
        r"no usable answer after 3 attempt\(s\): reading 32064×2: connection closed by the device",
        min_s=0.0,
        max_s=CONFIG.timeout_s,
        requests=ATTEMPTS,
    ),
    Fault.BUSY: Failing(
        DeviceUnavailable,
        r"no usable answer after 3 attempt\(s\): reading 32064×2: exception 0x06 \(device busy\)",
        min_s=0.0,
        max_s=CONFIG.timeout_s,
        requests=ATTEMPTS,
    ),
    Fault.DEVICE_FAILURE: Failing(
        DeviceUnavailable,
        r"no usable answer after 3 attempt\(s\): reading 32064×2: exception 0x04 \(device failure\)",
        min_s=0.0,
        max_s=CONFIG.timeout_s,
        requests=ATTEMPTS,
    ),
    Fault.GARBAGE: Failing(  # all 0xFFFF: not retried, the next cycle reads again
        DeviceProtocolError,
        r"battery SoC: register 37760 reports 'no value' \(0xFFFF\)",
        min_s=0.0,
        max_s=CONFIG.timeout_s,
        requests=3,  # one read: PV, meter and battery block
    ),
}
#: faults a single driver reads through: STALE serves frozen values (only the daemon's data-age
#: check could tell), KICK only matters with a second client
READ_THROUGH = {Fault.STALE, Fault.KICK}


def test_every_modbus_fault_is_covered() -> None:
    assert set(FAILING) | READ_THROUGH == MODBUS_FAULTS
    assert CONFIG.timeout_s < SLOW_DELAY_S


@pytest.mark.parametrize("fault", sorted(FAILING), ids=str)
async def test_fault_fails_the_read_in_bounded_time_then_recovers(
    emulator: HuaweiEmulator, fault: Fault
) -> None:
    expected = FAILING[fault]
    m = meter(emulator.port)
    assert is_example(await m.read())  # connected and healthy first
    emulator.faults.set(fault, delay_s=SLOW_DELAY_S)

    start = time.monotonic()
    with pytest.raises(DeviceError) as err:
        await m.read()
    took_s = time.monotonic() - start

    assert type(err.value) is expected.error  # never a raw pymodbus or asyncio exception
    assert err.value.device == "meter huawei"
    prefix = re.escape(f"meter huawei: 127.0.0.1:{emulator.port} unit 1: ")
    assert re.fullmatch(prefix + expected.message, str(err.value)), str(err.value)
    assert expected.min_s <= took_s <= expected.max_s, f"{fault}: {took_s:.3f} s"
    assert emulator.faults.played[fault] == expected.requests

    emulator.faults.clear()
    assert is_example(await m.read())  # the very next read is good
    await m.close()


async def test_drop_reconnects_on_every_attempt_and_after(emulator: HuaweiEmulator) -> None:
    m = meter(emulator.port)
    await m.read()
    assert emulator.connections == 1
    emulator.faults.set(Fault.DROP)
    with pytest.raises(DeviceUnavailable, match="connection closed by the device"):
        await m.read()
    assert emulator.connections == 3  # attempts 2 and 3 reconnected
    emulator.faults.clear()
    assert is_example(await m.read())
    assert emulator.connections == 4
    await m.close()


async def test_slow_within_the_timeout_is_a_good_reading(emulator: HuaweiEmulator) -> None:
    m = meter(emulator.port)
    await m.read()
    emulator.faults.set(Fault.SLOW, delay_s=0.1)
    start = time.monotonic()
    assert is_example(await m.read())
    took_s = time.monotonic() - start
    assert 3 * 0.1 <= took_s < 3 * CONFIG.timeout_s  # three requests, each 0.1 s late
    assert emulator.faults.played[Fault.SLOW] == 3
    emulator.faults.clear()
    await m.close()


async def test_slow_serves_the_values_measured_on_arrival(emulator: HuaweiEmulator, site: FixedSite) -> None:
    m = meter(emulator.port, battery=False)
    emulator.faults.set(Fault.SLOW, delay_s=0.2)
    reading = asyncio.create_task(m.read())
    for _ in range(100):  # until the PV request has arrived (its reply is then 0.2 s away)
        if emulator.faults.played[Fault.SLOW]:
            break
        await asyncio.sleep(0.01)
    site.current = LATER
    assert (await reading).pv_power_w == EXAMPLE.pv_power_w
    await m.close()


async def test_stale_serves_the_values_of_when_it_was_set(emulator: HuaweiEmulator, site: FixedSite) -> None:
    m = meter(emulator.port)
    await m.read()
    site.current = LATER  # measured by nobody yet
    emulator.faults.set(Fault.STALE)
    site.current = EXAMPLE
    for _ in range(2):
        reading = await m.read()  # no error: the driver cannot tell
        assert (reading.grid_power_w, reading.pv_power_w) == (LATER.grid_power_w, LATER.pv_power_w)
    assert emulator.faults.played[Fault.STALE] == 6
    emulator.faults.clear()
    assert is_example(await m.read())
    await m.close()


async def test_garbage_without_battery_names_the_meter_block(site: FixedSite) -> None:
    async with HuaweiEmulator(site, battery=False) as emu:
        m = meter(emu.port, battery=False)
        emu.faults.set(Fault.GARBAGE)
        with pytest.raises(
            DeviceProtocolError, match=r"grid meter: registers 37107–37114 all read 0xFFFF \('no value'\)"
        ):
            await m.read()
        emu.faults.clear()
        reading = await m.read()  # the gap registers served as 0xFFFF read 0 again
        assert (reading.grid_power_w, reading.pv_power_w) == (2500.0, 5230.0)
        await m.close()


async def test_timeout_cleared_leaves_no_request_hanging(emulator: HuaweiEmulator) -> None:
    held = meter(emulator.port, name="held", retries=0, timeout_s=1.0)
    emulator.faults.set(Fault.TIMEOUT)
    read = asyncio.create_task(held.read())
    await asyncio.sleep(0.1)
    assert emulator.faults.played[Fault.TIMEOUT] == 1
    emulator.faults.clear()
    await asyncio.sleep(0.1)  # the emulator gives up a held request within its poll interval
    handling = [t for t in asyncio.all_tasks() if "handle_request" in repr(t.get_coro())]
    assert handling == [] and not read.done()  # given up while the client still waits
    other = meter(emulator.port, name="other")  # the server is healthy meanwhile
    assert is_example(await other.read())
    with pytest.raises(DeviceUnavailable, match=r"held: .*no answer within 1 s"):
        await read  # the held request stays unanswered
    await held.close()
    await other.close()


async def test_kick_with_one_client_changes_nothing(emulator: HuaweiEmulator) -> None:
    m = meter(emulator.port)
    emulator.faults.set(Fault.KICK)
    for _ in range(3):
        assert is_example(await m.read())
    assert (emulator.connections, emulator.faults.played[Fault.KICK]) == (1, 0)
    await m.close()


async def test_kick_second_client_takes_over_and_both_recover(emulator: HuaweiEmulator) -> None:
    """One client at a time (SDongle): each connect closes the other's connection; taking turns,
    each read reconnects and none fails."""
    emulator.faults.set(Fault.KICK)
    first, second = meter(emulator.port, name="first"), meter(emulator.port, name="second")
    assert is_example(await first.read())
    assert is_example(await second.read())  # connecting closed first's connection
    assert (emulator.connections, emulator.clients, emulator.faults.played[Fault.KICK]) == (2, 1, 1)
    failures = 0
    for _ in range(3):
        for m in (first, second):
            try:
                assert is_example(await m.read())
            except DeviceUnavailable:
                failures += 1
    assert failures == 0
    assert emulator.connections == 2 + 6  # every read reconnected
    assert emulator.faults.played[Fault.KICK] == 1 + 6
    assert emulator.clients == 1
    await first.close()
    await second.close()


async def test_kick_clients_polling_at_once_fight_then_recover(emulator: HuaweiEmulator) -> None:
    """Two clients polling at the same time: each reconnect kills the other's pending request
    ("a second client keeps interrupting the first", reference §1.4).  The one that attempts last
    gets through, the other's read fails as DeviceUnavailable "connection closed by the device"
    (measured: exactly one of the two in every round), in bounded time; both recover once only
    one polls at a time."""
    emulator.faults.set(Fault.KICK)
    emulator.reply_delay_s = 0.1  # a reply takes longer than a reconnect: requests overlap
    first, second = meter(emulator.port, name="first"), meter(emulator.port, name="second")
    rounds = 3
    failed: list[BaseException] = []
    start = time.monotonic()
    for _ in range(rounds):
        results = await asyncio.gather(first.read(), second.read(), return_exceptions=True)
        assert any(isinstance(r, SiteReading) for r in results), results  # no livelock
        failed += [r for r in results if isinstance(r, BaseException)]
    took_s = time.monotonic() - start
    assert emulator.faults.played[Fault.KICK] > 0
    assert 0 < len(failed) <= rounds, failed
    for exc in failed:
        assert type(exc) is DeviceUnavailable, repr(exc)
        assert "connection closed by the device" in str(exc)
    # each read: 3 requests, each within request_bound_s (the 0.1 s reply delay is below the timeout)
    assert took_s <= rounds * 3 * request_bound_s(CONFIG)
    emulator.reply_delay_s = 0.0
    assert is_example(await first.read())
    assert is_example(await second.read())
    emulator.faults.clear()
    assert is_example(await first.read())  # second's connection survives first's reconnect now
    assert is_example(await second.read())
    assert emulator.clients == 2
    await first.close()
    await second.close()


class _Charger:
    name = "charger fake"
    capabilities = ChargerCapabilities()

    async def read(self) -> ChargerReading:
        return ChargerReading(True, False, 0.0, 0.0, 0, time.time())

    async def apply(self, command: ChargerCommand) -> None:
        pass

    def forget(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_daemon_cutting_off_a_slow_meter_says_which_attempt_failed_and_why(
    emulator: HuaweiEmulator,
) -> None:
    """Timeouts × attempts longer than max_age_s: the daemon cancels the read after max_age_s and its
    error names the driver's last failed attempt, not only "no answer within" the daemon's limit."""
    config = parse_config(
        "meter: {type: huawei, host: 127.0.0.1}\n"
        "charger: {type: warp, url: 'http://127.0.0.1', phases: 1}\n"
        "control: {interval_s: 1, max_age_s: 1}\n"
    )
    slow = meter(emulator.port, timeout_s=0.4, retries=5)
    daemon = Daemon(config, slow, _Charger(), clock=time.time)
    emulator.faults.set(Fault.TIMEOUT)
    with capture_logs() as logs:
        await daemon.cycle()
    failed = [e for e in logs if e["event"] == "device_unavailable"]
    assert len(failed) == 1, logs
    assert re.fullmatch(
        r"no answer within 1 s \(attempt [12] failed: .*reading 32064×2: no answer within 0\.4 s\)",
        failed[0]["error"],
    ), failed[0]
    assert not daemon._reads.inflight  # cancelled, not left running
    await slow.close()


#: a console line: timestamp, [level], event (structlog's ConsoleRenderer without colours)
CONSOLE_LINE = re.compile(r"\d{4}-\d\d-\d\dT\S+ \[(debug|info|warning|error)\s*\] \S")


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("level", ["info", "debug"])
async def test_a_dead_meter_is_logged_once_and_pymodbus_speaks_pvcharges_format(
    fmt: str, level: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """pymodbus logs "Failed to connect" through the standard library: it must come out in pvcharge's
    format (and at debug level only, the driver reports the outage), never as a bare line."""
    out = io.StringIO()
    configure_logging(level, fmt, stream=out)
    config = parse_config(
        "meter: {type: huawei, host: 127.0.0.1}\n"
        "charger: {type: warp, url: 'http://127.0.0.1', phases: 1}\n"
        "control: {interval_s: 1, max_age_s: 30}\n"
    )
    dead = meter(free_port(), retries=1)  # nothing listens there: connection refused
    daemon = Daemon(config, dead, _Charger(), clock=time.time)
    for _ in range(3):
        await daemon.cycle()
    await dead.close()

    assert capsys.readouterr().err == ""  # nothing went around the configured stream
    lines = out.getvalue().splitlines()
    if fmt == "json":
        events = [json.loads(line) for line in lines]
        assert all({"event", "level", "timestamp"} <= e.keys() for e in events), lines
        levels = {e["event"]: e["level"] for e in events}
        assert [e["event"] for e in events].count("device_unavailable") == 1
        pymodbus = [e for e in events if e.get("logger", "").startswith("pymodbus")]
    else:
        assert all(CONSOLE_LINE.match(line) for line in lines), lines
        levels = {line.split("] ", 1)[1].split(" ", 1)[0]: CONSOLE_LINE.match(line)[1] for line in lines}  # type: ignore[index]
        assert sum(line.split("] ", 1)[1].startswith("device_unavailable ") for line in lines) == 1
        pymodbus = [line for line in lines if line.endswith("[pymodbus.logging]")]  # the logger's name
    assert levels["device_unavailable"] == "warning"
    if level == "debug":  # pymodbus's own report, demoted to debug
        assert any("Failed to connect" in str(p) for p in pymodbus)
        assert all((p["level"] if fmt == "json" else CONSOLE_LINE.match(p)[1]) == "debug" for p in pymodbus)  # type: ignore[index]
    else:
        assert not pymodbus
