"""Build the meter and the charger of a config together, sharing what one vendor account must share.

Every place that runs both drivers (``pvcharge run``, ``pvcharge probe``, the demo, the soak run)
builds them here rather than with ``config.meter.create`` and ``config.charger.create`` one by one, so
that two devices on one cloud account share one client state.  Today that is the AlphaESS Open API:
an AlphaESS meter and an AlphaESS wallbox with the same ``url``, ``app_id`` and ``app_secret`` get one
:class:`~pvcharge.clients.alphaess_account.OpenApiAccount` — one connection pool, one request budget for the
two devices' requests together, one 6053/429 backoff (a 6053 answered to either pauses both) and one
``getLastPowerData`` per poll instead of two — because the
cloud publishes no rate limit and answers clients that ask too often with 6053 (meters.md §3.4).
Any other pair is built by ``DeviceConfig.create`` alone.

The shared state lives in the returned drivers only (no process-wide registry): two daemons in one
process, e.g. tests on different clocks, never share anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pvcharge.chargers import Charger
from pvcharge.config import Config
from pvcharge.errors import ConfigError

if TYPE_CHECKING:
    from pvcharge.clients.alphaess_account import OpenApiAccount


def _open_api(settings: object) -> bool:
    """Whether ``settings`` extend ``pvcharge.clients.alphaess_device.OpenApiSettings``, told without
    importing that module (and httpx's AlphaESS client with it) for a config without an Open API device."""
    return any(
        cls.__module__ == "pvcharge.clients.alphaess_device" and cls.__name__ == "OpenApiSettings"
        for cls in type(settings).__mro__
    )


def _accounts(settings: Sequence[object], *, clock: Callable[[], float]) -> list[dict[str, Any]]:
    """The extra ``create`` options of each device in ``settings``: ``{"account": ...}`` for the Open API
    devices (settings extending ``OpenApiSettings``) that share an AlphaESS account with another device of
    the list (same ``url`` up to a trailing ``/``, ``app_id`` and ``app_secret``; one ``OpenApiAccount``,
    so one request budget, per account), ``{}`` for the others (a device alone on its account makes its
    own client)."""
    options: list[dict[str, Any]] = [{} for _ in settings]
    open_api = [i for i, device in enumerate(settings) if _open_api(device)]
    if len(open_api) < 2:
        return options
    from pvcharge.clients.alphaess_account import OpenApiAccount

    groups: list[tuple[OpenApiAccount, list[int]]] = []
    for i in open_api:
        device: Any = settings[i]
        group = next((g for g in groups if g[0].holds(device)), None)
        if group is None:
            groups.append((OpenApiAccount.of(device, clock=clock), [i]))
        else:
            group[1].append(i)
    for account, members in groups:
        if len(members) > 1:
            for i in members:
                options[i] = {"account": account}
    return options


def shared_account(config: Config, *, clock: Callable[[], float]) -> OpenApiAccount | None:
    """The AlphaESS Open API account the meter and the (first) charger share, or ``None`` if they do not.

    Both must be Open API devices (their settings extend ``OpenApiSettings``) with the same ``url`` (up
    to a trailing ``/``), ``app_id`` and ``app_secret``; the ``sys_sn`` may differ (then nothing but the
    pool and the backoff is shared: their requests differ).
    """
    account: OpenApiAccount | None = _accounts([config.meter.settings, config.charger.settings], clock=clock)[
        1
    ].get("account")
    return account


def create_devices(
    config: Config,
    *,
    clock: Callable[[], float],
    meter_name: str | None = None,
    charger_name: str | None = None,
) -> tuple[Any, Any]:
    """Build the meter and the (first loadpoint's) charger driver of ``config`` (no I/O yet).

    Args:
        config: the validated config.
        clock: Unix seconds, for both drivers (timestamps, poll intervals, backoffs).
        meter_name, charger_name: the device names on errors and logs; by default ``"meter <type>"``
            and ``"charger <type>"``, e.g. ``"meter alphaess"``.

    Returns:
        ``(meter, charger)``: a ``pvcharge.meters.Meter`` and a ``pvcharge.chargers.Charger``; on one
        AlphaESS account they share an ``OpenApiAccount`` (see :func:`shared_account`), and closing
        one of them only closes the shared connection pool, which the other reopens on its next
        request.
    """
    meter, chargers = _create(config, clock, meter_name, charger_name, every_loadpoint=False)
    return meter, chargers[0]


def create_site_devices(
    config: Config,
    *,
    clock: Callable[[], float],
    meter_name: str | None = None,
    charger_name: str | None = None,
) -> tuple[Any, list[Any]]:
    """:func:`create_devices` for every loadpoint: the meter and one charger per loadpoint in the order
    of :meth:`Config.all_loadpoints` (the first named ``charger_name`` or ``"charger <type>"``, the others
    ``"charger <loadpoint> <type>"``). All devices on one AlphaESS account share one ``OpenApiAccount``
    (one request budget), whichever loadpoint they belong to. No I/O yet."""
    return _create(config, clock, meter_name, charger_name, every_loadpoint=True)


def _create(
    config: Config,
    clock: Callable[[], float],
    meter_name: str | None,
    charger_name: str | None,
    *,
    every_loadpoint: bool,
) -> tuple[Any, list[Any]]:
    more = config.loadpoints[1:] if every_loadpoint else []
    chargers = [config.charger, *(lp.charger for lp in more)]
    names = [charger_name or f"charger {config.charger.type}"]
    names += [f"charger {lp.name} {lp.charger.type}" for lp in more]
    options = _accounts([config.meter.settings, *(c.settings for c in chargers)], clock=clock)
    meter = config.meter.create(name=meter_name or f"meter {config.meter.type}", clock=clock, **options[0])
    return meter, [
        section.create(name=name, clock=clock, **extra)
        for section, name, extra in zip(chargers, names, options[1:], strict=True)
    ]


def check_chargers(config: Config, chargers: Sequence[Charger]) -> None:
    """The checks of ``config`` that need the charger drivers' capabilities (``pvcharge run`` at start and
    at every reload, and ``pvcharge check-config``, through :func:`check_devices`); ``chargers`` in the
    order of :meth:`Config.all_loadpoints`.

    Raises:
        ConfigError: ``phases: auto`` with a charger that cannot switch phases, naming the loadpoint's
            key (``charger.phases`` or ``loadpoints[i].charger.phases``).
    """
    loadpoints = config.all_loadpoints()
    for index, charger in enumerate(chargers):
        if loadpoints[index].charge_point.phases == "auto" and not charger.capabilities.phase_switching:
            raise ConfigError(
                config.path,
                f"loadpoints[{index}].charger.phases" if config.loadpoints else "charger.phases",
                f"auto needs a charger that can switch between 1 and 3 phases; {charger.name} cannot "
                "(set 1 or 3)",
            )


async def check_devices(config: Config, *, clock: Callable[[], float]) -> None:
    """Build the drivers of ``config`` as ``pvcharge run`` does (no I/O), check what needs them
    (:func:`check_chargers`) and close them again.

    Raises:
        ConfigError: as :func:`check_chargers`.
    """
    meter, chargers = create_site_devices(config, clock=clock)
    try:
        check_chargers(config, chargers)
    finally:
        for driver in chargers:
            await driver.close()
        await meter.close()
