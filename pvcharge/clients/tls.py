"""The TLS contexts the drivers' httpx clients share, built on first use.

httpx builds an ``ssl.SSLContext`` and loads certifi's CA bundle into it for every ``AsyncClient`` that
is not handed one (``verify=``): about 2.9 MB resident each on x86_64 (``python -m benchmarks.footprint``),
even for a client that only ever speaks plain HTTP to a wallbox on the LAN, and again each time a driver
opens a new client after a lost connection.  The drivers instead pass :func:`verify_for` their URL: an
``https`` URL gets the one verifying context of the process (certifi's CAs, as httpx's own default), a
plain ``http`` URL a context that trusts no CA at all (a few kB), so that a request that would leave
plain HTTP still cannot go out unverified.

One context serves every client: an ``ssl.SSLContext`` is meant to be shared, and httpx only reads it
(httpcore sets the same ALPN protocols, ``http/1.1``, on each connection).  ``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` (with ``trust_env``, as httpx honours them) are read at each call: other values, e.g.
a private CA added in a test, get a context of their own.
"""

from __future__ import annotations

import functools
import os
import ssl

import httpx


def verified_context(*, trust_env: bool = True) -> ssl.SSLContext:
    """The process's verifying context: ``httpx.create_ssl_context``, certifi's CA bundle (or, with
    ``trust_env``, ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` from the environment), hostname checked; one
    for each ``trust_env`` and, with it, each value of those two variables."""
    if not trust_env:
        return _verified_context(False, None, None)
    return _verified_context(True, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _verified_context(trust_env: bool, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # (cert_file, cert_dir: the cache's key; httpx reads the same variables itself)
    return httpx.create_ssl_context(trust_env=trust_env)


@functools.cache
def _no_ca_context() -> ssl.SSLContext:
    # PROTOCOL_TLS_CLIENT verifies the certificate and the host name; with no CA loaded none passes
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def verify_for(url: str | httpx.URL, *, trust_env: bool = True) -> ssl.SSLContext:
    """The ``verify=`` for an httpx client whose requests all go to ``url`` (its ``base_url``).

    Returns:
        For an ``https`` URL :func:`verified_context`; for any other scheme a context that verifies
        against no CA, so an ``https`` request through that client fails with a certificate error
        instead of being sent unverified.
    """
    if httpx.URL(url).scheme == "https":
        return verified_context(trust_env=trust_env)
    return _no_ca_context()
