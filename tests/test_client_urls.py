"""The shared check of an HTTP device's ``url`` setting (pvcharge/clients/urls.py)."""

from __future__ import annotations

import pytest

from pvcharge.clients.urls import check_base_url
from pvcharge.settings import SettingError


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (
            "192.168.1.30",
            "expected http://host or https://host, e.g. http://192.168.1.30, got '192.168.1.30'",
        ),
        ("ftp://192.168.1.30", "expected http://host or https://host"),
        ("https://", "expected http://host or https://host"),
        ("http://[::1", "expected e.g. http://192.168.1.30"),
        ("http://admin:pw@192.168.1.30", "no login in the URL: put it into username/password"),
    ],
)
def test_a_bad_url_is_named_with_what_was_expected(url: str, says: str) -> None:
    with pytest.raises(SettingError) as err:
        check_base_url(url, example="http://192.168.1.30", login="username/password")
    assert err.value.key == "url"
    assert says in str(err.value)


def test_a_login_in_the_url_is_not_repeated() -> None:
    with pytest.raises(SettingError) as err:
        check_base_url("https://me:s3cret@api.easee.com", example="https://api.easee.com", login="password")
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize(
    "url", ["http://192.168.1.30", "https://api.easee.com", "http://127.0.0.1:8080/api/"]
)
def test_a_good_url_passes(url: str) -> None:
    check_base_url(url, example="http://192.168.1.30", login="username/password")
