"""Building blocks for typed settings: documented fields and secrets.

Every config dataclass in pvcharge (the control core's, each driver's) declares its keys with
:func:`setting`, which records the unit, the allowed range and a one-line description.  The config
loader (``pvcharge.config_loader``) validates against these, ``config.example.yaml`` is checked against
them by the tests, and ``pvcharge check-config`` prints them.  This module imports nothing of
pvcharge, so the pure control core may use it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from typing import Any

_MISSING: Any = dataclasses.MISSING


def setting(
    default: Any = _MISSING,
    *,
    doc: str,
    unit: str | None = None,
    min: float | None = None,
    max: float | None = None,
) -> Any:
    """A dataclass field with documentation and bounds for the config loader.

    Args:
        default: the default value; omit it for a required key.
        doc: one line for users: what the key does.
        unit: unit of the value (``"W"``, ``"A"``, ``"s"``, ``"%"``, ``"V"``), ``None`` if unitless.
        min, max: inclusive bounds checked by the loader for numbers.
    """
    metadata = {"doc": doc, "unit": unit, "min": min, "max": max}
    if default is _MISSING:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class SettingError(ValueError):
    """Raised by a settings dataclass's ``__post_init__``: ``key`` is the field name inside its section
    (the loader prefixes the section, e.g. ``charger.min_current_a``)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


class Secret:
    """A password, token or app secret that never prints itself.

    ``str()``, ``repr()`` and f-strings show ``***``; call :meth:`reveal` at the one place the value
    goes onto the wire.  Equality compares the hidden values.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value itself. Never log or print it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def mask_secrets(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` with every occurrence of a secret in any string (dict keys, lists and tuples too)
    replaced by ``***``; longer secrets first, so one that contains another is masked whole."""
    ordered = sorted(secrets, key=len, reverse=True)

    def mask(v: Any) -> Any:
        if isinstance(v, str):
            for secret in ordered:
                if secret in v:
                    v = v.replace(secret, "***")
            return v
        if isinstance(v, dict):
            return {mask(k): mask(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return type(v)(mask(x) for x in v)
        return v

    return mask(value) if ordered else value


def is_loopback(host: str) -> bool:
    """``localhost`` (or ``*.localhost``) or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip().lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
