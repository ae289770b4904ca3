"""Config keys that point pvcharge's cloud drivers at the cloud emulators, shared by the demo and the
soak run so that both write them alike.

Each function returns the account part of a ``meter``/``charger`` YAML flow mapping (no braces, no
``type``), e.g. ``url: 'http://127.0.0.1:40123', username: demo@example.com, password: …, charger_id:
EH000001``; the caller adds ``type``, timeouts and the charge point's limits.  The secrets go into the
text as given: they are the emulators' throwaway values, and the config loader marks them secret, so
they print as ``***``.
"""

from __future__ import annotations

from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.easee import EaseeEmulator

EASEE_USERNAME = "demo@example.com"  #: the Easee emulator's default login


def easee_account(emulator: EaseeEmulator, *, password: str, username: str = EASEE_USERNAME) -> str:
    """``url``, ``username``, ``password`` and ``charger_id`` of the Easee driver for ``emulator``
    (started: its URL holds the real port), whose login is ``username``/``password``."""
    return (
        f"url: '{emulator.base_url}', username: {username}, password: {password}, "
        f"charger_id: {emulator.charger_id}"
    )


def alphaess_account(emulator: AlphaEssEmulator, *, app_secret: str) -> str:
    """``url``, ``sys_sn``, ``app_id`` and ``app_secret`` of an AlphaESS Open API driver (meter or
    wallbox) for ``emulator`` (started), whose app secret is ``app_secret``.  A meter and a wallbox
    given the same keys share one account (:func:`pvcharge.devices.create_devices`)."""
    return (
        f"url: '{emulator.url}', sys_sn: {emulator.sys_sn}, app_id: {emulator.app_id}, "
        f"app_secret: {app_secret}"
    )
