"""Secrets never leave the process: a full run of the real daemon at debug level against the cloud
emulators (AlphaESS Open API meter, Easee charger), with token expiry, a refused login and faults on
the way, plus check-config and probe; every byte of every output is grepped for every secret value
and every token the emulators handed out."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable
from functools import partial
from pathlib import Path

import httpx
import pytest
from sitestub import eventually, free_port

from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.demo import SimClock
from pvcharge.sim.easee import EaseeEmulator
from pvcharge.sim.faults import Fault
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace

EASEE_PASSWORD = "easee-pw-must-not-leak-7731"
APP_SECRET = "alpha-app-secret-must-not-leak-5519"
WRONG_PASSWORD = "wrong-pw-must-not-leak-2208"


API_PORT = free_port()


def write_config(tmp_path: Path, alpha: AlphaEssEmulator, easee: EaseeEmulator, password: str) -> Path:
    (tmp_path / "easee.pw").write_text(password + "\n")
    (tmp_path / "easee.pw").chmod(0o600)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"meter: {{type: alphaess, url: '{alpha.url}', sys_sn: {alpha.sys_sn}, app_id: {alpha.app_id},"
        f" app_secret: {APP_SECRET}, timeout_s: 1, retries: 1, backoff_s: 0.1, poll_interval_s: 10}}\n"
        f"charger: {{type: easee, url: '{easee.base_url}', username: demo@example.com,"
        " password_file: easee.pw, charger_id: EH000001, timeout_s: 1, retries: 1, poll_interval_s: 15,"
        " phases: 1}\n"
        # exit_state leave: the exit pause would wait up to a minute for Easee's command budget (2 per 61 s),
        # which is tested in test_easee; here it only made the run slow
        "control: {interval_s: 1, max_age_s: 15, cloud_filter: 'off', min_on_s: 0, min_off_s: 0,"
        " exit_state: leave}\n"
        "log: {level: debug, format: json}\n"
        f"api: {{port: {API_PORT}}}\n"
    )
    path.chmod(0o644)  # world-readable with an inline app secret: warned about, without the secret
    return path


async def pvcharge(*args: str, until: Awaitable[None] | None = None) -> str:
    """Run ``python -m pvcharge *args``; with ``until``, stop it with SIGTERM once ``until`` is done (or
    failed). Returns stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pvcharge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        if until is not None:
            await asyncio.wait_for(until, 120)
    finally:
        if until is not None:
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode() + err.decode()


#: each fault is held until a read has failed on it: its attempts (retries: 1 → 2; NOT_JSON is not retried)
FAULTS = {Fault.HTTP_503: 2, Fault.NOT_JSON: 1, Fault.HTTP_500: 2}


@pytest.mark.timeout(240)
async def test_no_secret_in_any_output_of_a_full_run(tmp_path: Path) -> None:
    trace = bundled_trace()
    site = SiteModel(trace, t_s=trace.start_s + 12 * 3600)
    site.advance(120)
    site.clock = SimClock(site.now, 1.0).now
    async with (
        AlphaEssEmulator(site, app_secret=APP_SECRET) as alpha,
        EaseeEmulator(site, password=EASEE_PASSWORD, token_lifetime_s=4) as easee,
    ):
        config = write_config(tmp_path, alpha, easee, EASEE_PASSWORD)
        outputs = [
            await pvcharge("check-config", str(config)),
            await pvcharge("probe", "--config", str(config)),
        ]

        def met(fault: Fault, attempts: int) -> bool:
            return max(alpha.faults.played[fault], easee.faults.played[fault]) >= attempts

        async def faults() -> None:  # while the daemon runs: 503, garbage, 500, token expiry
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{API_PORT}") as client:

                async def api_up() -> bool:
                    try:
                        return (await client.get("/api/status")).status_code == 200
                    except httpx.TransportError:
                        return False

                for _ in range(1200):  # the daemon is up (a slow machine takes a while to import)
                    if await api_up():
                        break
                    await asyncio.sleep(0.05)
                for fault, attempts in FAULTS.items():
                    easee.faults.set(fault)
                    alpha.faults.set(fault)
                    await eventually(partial(met, fault, attempts), f"a read meeting {fault}", timeout_s=60)
                    easee.faults.clear()
                    alpha.faults.clear()
                    await asyncio.sleep(1.5)
                easee.expire_tokens()
                for path in ("/api/status", "/api/config", "/metrics", "/"):
                    answer = await client.get(path)
                    assert answer.status_code == 200, path
                    api_answers.append(answer.text)
            api_answers.append(await pvcharge("status", "--config", str(config)))

        api_answers: list[str] = []
        run = await pvcharge("run", "--config", str(config), until=faults())
        outputs.append(run)
        # a wrong password: the login is refused, the error is reported, the password is not
        wrong = write_config(tmp_path, alpha, easee, WRONG_PASSWORD)
        outputs.append(await pvcharge("probe", "--json", "--config", str(wrong)))

        def refused() -> int:
            return sum(1 for _, _, path, status in easee.request_log if "login" in path and status == 400)

        before = refused()
        outputs.append(
            await pvcharge(
                "run",
                "--config",
                str(wrong),
                until=eventually(lambda: refused() > before, "the daemon's refused login", timeout_s=60),
            )
        )
        tokens = list(easee.issued_tokens)

    everything = "\n".join(outputs + api_answers)
    assert len(api_answers) == 5 and '"mode"' in api_answers[0] and "***" in api_answers[1]
    assert '"decision"' in run and "config_warning" in run  # it ran, at debug level, and warned
    assert "readable by other users" in outputs[0]
    assert "device_unavailable" in run  # the faults were met and reported
    assert "refused" in outputs[3].lower() or "401" in outputs[3] or "password" in outputs[3].lower()
    assert len(tokens) >= 2  # logged in and refreshed at least once
    for secret in (EASEE_PASSWORD, APP_SECRET, WRONG_PASSWORD, *tokens):
        assert secret not in everything, f"a secret leaked: {secret[:6]}…"
