"""The ``url`` setting of an HTTP device (a charger's web interface, a vendor cloud), checked the same way
for every driver's ``Config.__post_init__``."""

from __future__ import annotations

import httpx

from pvcharge.settings import SettingError


def check_base_url(url: str, *, example: str, login: str) -> None:
    """Check that ``url`` is ``http(s)://host[:port][/prefix]`` without a login in it.

    Args:
        url: the ``url`` setting.
        example: a valid value, shown in the error (e.g. the cloud's default URL).
        login: where the login goes instead of into the URL (e.g. ``"username/password"``).

    Raises:
        SettingError: (key ``url``) ``url`` does not parse, is not ``http``/``https`` with a host, or
            carries a ``user:password@``.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise SettingError("url", f"{exc}; expected e.g. {example}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SettingError("url", f"expected http://host or https://host, e.g. {example}, got {url!r}")
    if parsed.userinfo:
        raise SettingError("url", f"no login in the URL: put it into {login}")
