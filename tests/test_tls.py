"""The drivers' httpx clients share TLS contexts (pvcharge.clients.tls): a plain-HTTP device loads no CA
bundle (httpx loads certifi's, ~2.9 MB resident, into a new context for every client not handed one), an
https one gets the one verifying context of the process, and a plain-HTTP client still verifies."""

from __future__ import annotations

import ssl
from typing import Any

import certifi
import httpx
import pytest

from pvcharge.chargers.warp import Config, WarpCharger
from pvcharge.clients.tls import verified_context, verify_for
from pvcharge.sim.senec import SenecEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.trace import bundled_trace
from pvcharge.sim.warp import WarpEmulator


@pytest.fixture
def site() -> SiteModel:
    trace = bundled_trace()
    return SiteModel(trace, t_s=trace.start_s + 12 * 3600)


@pytest.fixture
def ca_loads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The arguments of every ``SSLContext.load_verify_locations`` call (a CA bundle read) from now on."""
    calls: list[Any] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))
        original(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    return calls


async def test_plain_http_warp_chargers_load_no_ca_bundle(site: SiteModel, ca_loads: list[Any]) -> None:
    async with WarpEmulator(site) as emulator:
        drivers = [
            WarpCharger(Config(url=emulator.url, timeout_s=2.0), name=f"charger warp {i}", clock=lambda: 0.0)
            for i in range(2)
        ]
        try:
            for driver in drivers:
                assert (await driver.read()).connected
                await driver.close()
                await driver.read()  # a new client after a lost connection: no CA bundle either
        finally:
            for driver in drivers:
                await driver.close()
    assert ca_loads == []


def test_https_urls_share_one_verifying_context() -> None:
    context = verify_for("https://api.easee.com")
    assert verify_for(httpx.URL("https://openapi.alphaess.com/api")) is context
    assert context is verified_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 50  # certifi's bundle


def test_a_plain_http_context_trusts_no_ca() -> None:
    context = verify_for("http://192.168.1.20")
    assert verify_for("http://warp.local/") is context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0


async def test_https_through_a_plain_http_client_fails_verification(site: SiteModel) -> None:
    async with SenecEmulator(site) as senec:
        assert senec.url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(verify=verify_for("http://127.0.0.1"), trust_env=False) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.post(senec.url + "/lala.cgi", content="{}")


def test_ssl_cert_file_gets_a_context_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A private CA added the standard way (httpx's ``trust_env``) is honoured whenever it is set."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    default = verified_context()
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    assert verified_context() is not default
    assert verified_context() is verified_context()
    assert verified_context(trust_env=False) is verified_context(trust_env=False) is not verified_context()
