"""The OpenAPI document against the implementation: schemathesis generates requests from the served
document (valid and invalid ones, with and without the token) and checks every answer against it;
hypothesis checks PUT /api/mode and the metrics exposition as properties.

The daemon runs for real (fake drivers, interval 0.2 s) in a thread with its own event loop, since
schemathesis and the property tests call the API synchronously.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from schemathesis import Case
from test_api import SECRET_CONFIG_TEXT, SECRETS, TOKEN, make_daemon

from pvcharge.api.metrics import metrics_registry
from pvcharge.api.openapi import openapi_document
from pvcharge.api.server import ApiServer, start_api
from pvcharge.config import ApiConfig
from pvcharge.control.config import MODES
from pvcharge.daemon import Daemon
from pvcharge.planning.planner import ChargeLimits
from pvcharge.planning.service import PlanService
from pvcharge.sessions import SessionRecorder
from pvcharge.sessions.store import SessionStore
from pvcharge.sessions.tally import DayTotals, Session, Tariff
from pvcharge.settings import Secret


class Running:
    """A daemon and its API in a thread of their own."""

    def __init__(self, token: str | None, history: Path | None = None) -> None:
        self.token = token
        self.history = history  #: a session database for the API's history (None: it answers 404)
        self.daemon: Daemon | None = None
        self.server: ApiServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        try:
            self.daemon, *_ = make_daemon(SECRET_CONFIG_TEXT, real_clock=True, interval_s=0.2)
            config = ApiConfig(port=0, token=Secret(self.token) if self.token else None)
            recorder = None
            if self.history is not None:
                recorder = SessionRecorder(SessionStore(self.history), "warp", Tariff(0.3, 0.08, "EUR"))
                recorder.store.write(
                    [
                        Session(
                            "warp", 1.75e9, 1.75e9 + 3600, 1.75e9 + 3600, 7000, 5000, 1000, 1000, 3450, [1, 3]
                        )
                    ],
                    [DayTotals("2025-06-15", pv_wh=20000, car_wh=7000, car_pv_wh=5000)],
                )
                self.daemon.listeners.append(recorder)
            plans = PlanService(
                self.daemon,
                (),
                limits=ChargeLimits(1380, 3680),
                prices=None,
                forecast=None,
                fallback_price_per_kwh=0.3,
            )
            plans.attach()
            self.server = await start_api(self.daemon, config, recorder, {plans.loadpoint: plans})
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            plan_task = asyncio.create_task(plans.run(self._stop, self.daemon.clock))
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ready.set()
        try:
            await self.daemon.run(self._stop)
        finally:
            self._stop.set()
            await plan_task
            await self.server.stop()

    def __enter__(self) -> Running:
        self._thread.start()
        assert self._ready.wait(10), "the daemon did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        assert self.server is not None and self.server.url is not None
        return self.server.url

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """With a token and a session history."""
    with Running(TOKEN, tmp_path_factory.mktemp("history") / "sessions.db") as running:
        yield running


@pytest.fixture(scope="module")
def open_api() -> Iterator[Running]:
    with Running(None) as running:
        yield running


def test_the_served_document_is_the_one_tested(guarded: Running, open_api: Running) -> None:
    for running, token_required in ((guarded, True), (open_api, False)):
        served = httpx.get(running.url + "/api/openapi.json", headers=running.headers).json()
        assert served == json.loads(json.dumps(openapi_document(token_required=token_required)))


# schemathesis.pytest.from_fixture (the served document) fails on pytest 9 (it sets Function._nodeid),
# so the schemas come from the code, and the test above checks that the server serves exactly them
with_token = schemathesis.openapi.from_dict(
    openapi_document(token_required=True),
    config=schemathesis.Config.from_dict({"auth": {"openapi": {"bearer": {"bearer": TOKEN}}}}),
)
without_token = schemathesis.openapi.from_dict(openapi_document(token_required=False))
CONFORMANCE = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def _conforms(case: Case[Any], running: Running) -> None:
    """Documented status, content type and body schema; negative data rejected, positive data accepted;
    no 5xx; with a token, the operation refuses a request without it (ignored_auth); no secret ever."""
    response = case.call_and_validate(base_url=running.url)
    for secret in SECRETS.values():
        assert secret not in response.text


@with_token.parametrize()
@CONFORMANCE
def test_with_a_token_the_api_conforms_to_its_openapi_document(case: Case[Any], guarded: Running) -> None:
    _conforms(case, guarded)


@without_token.parametrize()
@CONFORMANCE
def test_without_a_token_the_api_conforms_to_its_openapi_document(case: Case[Any], open_api: Running) -> None:
    _conforms(case, open_api)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    scalars = scalars | st.sampled_from(list(MODES)) | st.sampled_from([m.upper() for m in MODES])
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    )


bodies = (
    st.fixed_dictionaries({"mode": _json_values()})
    | st.dictionaries(st.sampled_from(["mode", "Mode", "extra"]), _json_values(), max_size=3)
    | _json_values()
)


@given(body=bodies)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_put_mode_takes_exactly_one_known_mode_and_nothing_else(body: Any, open_api: Running) -> None:
    daemon = open_api.daemon
    assert daemon is not None
    before = daemon.mode
    response = httpx.put(open_api.url + "/api/mode", content=json.dumps(body))
    valid = isinstance(body, dict) and list(body) == ["mode"] and body["mode"] in MODES
    if valid:
        assert response.status_code == 200
        assert response.json()["mode"] == body["mode"] == daemon.mode
    else:
        assert response.status_code == 422
        assert response.json()["allowed"] == list(MODES)
        assert daemon.mode == before


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
sites = st.none() | st.fixed_dictionaries(
    {
        "grid_power_w": finite,
        "pv_power_w": st.floats(min_value=0, max_value=1e6),
        "battery_power_w": finite,
        "battery_soc_pct": st.none() | st.floats(min_value=0, max_value=100),
        "house_power_w": finite,
        "timestamp_s": finite,
        "age_s": st.floats(min_value=0, max_value=1e6),
    }
)
chargers = st.none() | st.fixed_dictionaries(
    {
        "connected": st.booleans(),
        "charging": st.booleans(),
        "power_w": st.floats(min_value=0, max_value=1e5),
        "current_a": st.floats(min_value=0, max_value=80),
        "phases": st.sampled_from([0, 1, 2, 3]),
        "iec_state": st.none(),
        "timestamp_s": finite,
    }
)


@given(site=sites, charger=chargers, mode=st.sampled_from(list(MODES)), name=st.text(min_size=1, max_size=30))
@settings(max_examples=100, deadline=None)
def test_metrics_expose_exactly_what_the_status_holds(
    site: dict[str, Any] | None, charger: dict[str, Any] | None, mode: str, name: str
) -> None:
    daemon, *_ = make_daemon()
    status = daemon.status() | {"site": site, "charger": charger, "mode": mode}
    status["devices"]["meter"]["name"] = name  # any label value survives the exposition
    text = generate_latest(metrics_registry(lambda: status)).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    for key, metric in (
        ("grid_power_w", "pvcharge_grid_power_watts"),
        ("battery_soc_pct", "pvcharge_battery_soc_percent"),
    ):
        value = None if site is None else site[key]
        if value is None:
            assert (metric, ()) not in samples
        else:
            assert math.isclose(samples[(metric, ())], value, rel_tol=1e-12, abs_tol=1e-12)
    if charger is None:
        assert ("pvcharge_car_power_watts", ()) not in samples
    else:
        assert samples[("pvcharge_car_connected", ())] == float(charger["connected"])
        assert math.isclose(
            samples[("pvcharge_car_current_amperes", ())], charger["current_a"], rel_tol=1e-12
        )
    assert [m for m in MODES if samples[("pvcharge_mode", (("mode", m),))] == 1] == [mode]
    assert samples[("pvcharge_device_up", (("device", "meter"), ("name", name)))] == 0
