"""TLS trust for the SENEC.Home appliance: the three trust choices of
:class:`~pvcharge.meters.senec.Config` as an ``ssl.SSLContext`` (:func:`ssl_context`), certificate
pinning by SHA-256 fingerprint, and what to tell the user when a handshake fails (:func:`tls_message`).

Firmware since ~17 Aug 2023 serves HTTPS only, on 443, with a certificate from SENEC's private
"SenecGui-Root" CA (downloadable from mein-senec.de); older firmware serves plain HTTP (``meters.md``
§2.1 [S3]; ioBroker.senec#164).  The meter itself is :mod:`pvcharge.meters.senec`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pvcharge.meters.senec import Config


def fingerprint_bytes(text: str) -> bytes:
    """``text`` as a 32-byte SHA-256 digest: 64 hex digits, colons allowed, openssl's
    ``SHA256 Fingerprint=`` prefix tolerated.

    Raises:
        ValueError: anything else.
    """
    digits = re.sub(r"^\s*sha-?256 fingerprint\s*=", "", text, flags=re.IGNORECASE).strip().replace(":", "")
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", digits):
        raise ValueError(
            f"expected a SHA-256 fingerprint: 64 hex digits, optionally separated by colons, got {text!r}"
        )
    return bytes.fromhex(digits)


def colon_hex(digest: bytes) -> str:
    """``AB:CD:…``, as ``openssl x509 -fingerprint -sha256`` prints it."""
    return ":".join(f"{b:02X}" for b in digest)


class PinMismatch(ssl.SSLError):
    """The appliance presented a certificate other than the pinned one (raised during the handshake)."""

    def __init__(self, seen: bytes | None) -> None:
        self.seen = seen
        super().__init__("certificate fingerprint mismatch")


def pinning_context(pin: bytes) -> ssl.SSLContext:
    """A client context that skips CA verification but fails the handshake unless the peer's DER
    certificate has SHA-256 ``pin``.

    The check runs inside ``do_handshake`` of the context's ``sslobject_class`` (httpx over anyio
    wraps the connection with ``SSLContext.wrap_bio``), so nothing is sent to an impostor.
    """

    class PinnedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            der = self.getpeercert(binary_form=True)
            seen = hashlib.sha256(der).digest() if der else None
            if seen is None or not hmac.compare_digest(seen, pin):
                raise PinMismatch(seen)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.sslobject_class = PinnedSSLObject
    return context


def ssl_context(config: Config, pin: bytes | None) -> ssl.SSLContext | None:
    """The TLS context of the trust choice (``pin``: the parsed ``fingerprint_sha256``); ``None`` for
    plain HTTP."""
    if config.scheme == "http":
        return None
    if pin is not None:
        return pinning_context(pin)
    if config.ca_file is not None:
        return ssl.create_default_context(cafile=config.ca_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify: false
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def tls_message(cfg: Config, pin: bytes | None, error: ssl.SSLError) -> str:
    """What failed in a TLS handshake with the appliance of ``cfg`` and how to fix it (for the error of
    a read): a changed certificate under the ``pin`` (``fingerprint_sha256``), a certificate that
    ``ca_file`` does not vouch for or not issued for ``host``, or an appliance that speaks no TLS."""
    where = f"{cfg.host}:{cfg.port or 443}"
    if isinstance(error, PinMismatch) and pin is not None:
        seen = colon_hex(error.seen) if error.seen else "no certificate"
        return (
            f"TLS: the certificate of {where} changed: it presents SHA-256 fingerprint {seen}, "
            f"but fingerprint_sha256 pins {colon_hex(pin)}; if you expected this (new appliance "
            "or firmware), set fingerprint_sha256 to the new value"
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or str(error)
        if error.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH / _IP_ADDRESS_MISMATCH
            fix = (
                f"the certificate is valid, but not issued for {cfg.host!r}; set host to the name it "
                "is issued for, or pin it with fingerprint_sha256 instead of ca_file"
            )
        else:
            fix = (
                f"the certificate of {where} is not signed by ca_file {cfg.ca_file!r}; set ca_file to "
                "the SenecGui-Root CA (PEM, from mein-senec.de), or pin the appliance's certificate "
                "with fingerprint_sha256, or (insecure) set verify: false"
            )
        return f"TLS certificate verification failed ({reason}): {fix}"
    return (
        f"TLS handshake with {where} failed ({error}); "
        "appliances with firmware before Aug 2023 serve plain HTTP only: try scheme: http"
    )
