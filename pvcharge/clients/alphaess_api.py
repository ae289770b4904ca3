"""The AlphaESS Open API's wire format: base URL, signed headers, the reply envelope and its return codes.

Device facts (project reference ``meters.md`` §3, which ``chargers.md`` §2.1 refers to for the wallbox;
sources: [A1] alphaess-developer/alphacloud_open_api ``alpha_api_demo.py`` and Postman collection, [A2]
CharlesGillanders/alphaess-openAPI, [A3] springfall2008/batpred ``alphaess_const.py``):

- Base URL ``https://openapi.alphaess.com/api``; ``GET <base>/<path>?<params>`` reads,
  ``POST <base>/<path>`` with a JSON body writes (§3.1 [A1, A2, A3]).
- Every request carries the headers ``appId``, ``timeStamp`` (Unix seconds as a decimal string) and
  ``sign`` = lowercase hex SHA-512 of ``appId + appSecret + timeStamp`` (:func:`sign`, §3.1 [A1]).  The
  server accepts a ``timeStamp`` within ±300 s of its own clock, otherwise it answers 6006 (§3.1 [A3]).
- Every reply, errors included, is HTTP 200 with the envelope (:class:`Envelope`)
  ``{"code": 200, "msg": "Success", "expMsg": null, "data": {…}, "extra": null}``; an error has another
  ``code`` and ``data: null``; some endpoints say ``info`` instead of ``msg``; ``expMsg`` names a bad
  parameter (§3.2 [A2, A3]).  The codes are :data:`RETURN_CODES`.

Pure: no I/O.  The client that sends the requests is :mod:`pvcharge.clients.alphaess`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

DEFAULT_URL = "https://openapi.alphaess.com/api"  #: meters.md §3.1 [A1]

SUCCESS = 200  #: ``code`` of a successful reply (meters.md §3.2)
TOO_FAST = 6053  #: ``code`` of a rate-limited request (meters.md §3.2, §3.4)
CLOCK_SKEW = 6006  #: ``code`` of a ``timeStamp`` more than 300 s off the server's clock (meters.md §3.1)
SYSTEM_OFFLINE = 6042  #: ``code`` of a system the cloud has lost contact with (meters.md §3.2)
MAX_CLOCK_SKEW_S = 300  #: the server's ``timeStamp`` window, ± s (meters.md §3.1 [A3])

#: every return code the reference documents → its meaning (meters.md §3.2 [A2, A3]; chargers.md §2.1).
RETURN_CODES: dict[int, str] = {
    6001: "Parameter error",
    6002: "SN not bound to the user",
    6003: "You have bound this SN",
    6004: "CheckCode error",
    6005: "appId not bound to the SN",
    6006: "Timestamp error (clock skew)",
    6007: "Sign verification error",
    6008: "Set failed",
    6009: "Whitelist verification failed",
    6010: "Sign is empty",
    6011: "timestamp is empty",
    6012: "AppId is empty",
    6016: "Data does not exist or deleted",
    6017: "No operation permission (undocumented)",
    6026: "Internal error",
    6029: "Operation failed",
    6038: "System SN does not exist",
    6042: "System offline",
    6046: "Verification code error",
    6053: "Request too fast / max requests reached",
    10001: "Malformed request body (undocumented)",
}

#: codes that mean a wrong or missing credential or system serial → what to check.
CREDENTIAL_HINTS: dict[int, str] = {
    6002: "the system serial (sysSn) {sys_sn} is not bound to this account: check sys_sn (sysSn) and that "
    "the system is bound to appId {app_id} on open.alphaess.com",
    6005: "appId {app_id} is not bound to sysSn {sys_sn}: check app_id (appId) and sys_sn (sysSn); bind the "
    "system (SN + CheckCode) on open.alphaess.com",
    6007: "signature rejected: check app_id (appId {app_id}) and app_secret (appSecret) against "
    "open.alphaess.com",
    6010: "the request carried no sign: check that app_secret (appSecret) is set; a proxy may strip headers",
    6011: "the request carried no timeStamp: a proxy may strip headers; check app_id (appId {app_id}) "
    "and app_secret (appSecret)",
    6012: "the request carried no appId: check that app_id (appId) is set; a proxy may strip headers",
}


def sign(app_id: str, app_secret: str, timestamp: str) -> str:
    """The ``sign`` header: lowercase hex SHA-512 of ``app_id + app_secret + timestamp``.

    Source: meters.md §3.1 [A1] (``alpha_api_demo.py``).

    Args:
        app_id: the developer appId.
        app_secret: the revealed appSecret (never log it).
        timestamp: the ``timeStamp`` header sent with it: Unix seconds as a decimal string.

    Returns:
        128 lowercase hex digits.
    """
    return hashlib.sha512(f"{app_id}{app_secret}{timestamp}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded reply envelope (meters.md §3.2).

    Attributes:
        code: 200 on success, otherwise a return code (:data:`RETURN_CODES`).
        msg: the server's message (``msg``, or ``info`` on the periodic-charge endpoints), ``""`` if none.
        exp_msg: ``expMsg``: which parameter was wrong, where the server says so.
        data: the payload: a dict or list on success, ``None`` on errors.
    """

    code: int
    msg: str
    exp_msg: str | None
    data: Any

    @property
    def ok(self) -> bool:
        """The request succeeded: ``code == 200``."""
        return self.code == SUCCESS

    @property
    def meaning(self) -> str:
        """The documented meaning of :attr:`code` (:data:`RETURN_CODES`), or ``"undocumented code"``."""
        if self.ok:
            return "Success"
        return RETURN_CODES.get(self.code, "undocumented code")


def parse_envelope(payload: object) -> Envelope:
    """Decode a reply body (already parsed from JSON) into an :class:`Envelope`.

    Raises:
        ValueError: not a JSON object, or ``code`` is missing or not an integer.
    """
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object with 'code', got {type(payload).__name__}")
    code = payload.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise ValueError(f"envelope field 'code' must be an integer, got {code!r}")
    msg = payload.get("msg", payload.get("info"))
    exp_msg = payload.get("expMsg")
    return Envelope(
        code=code,
        msg=str(msg) if msg is not None else "",
        exp_msg=str(exp_msg) if exp_msg is not None else None,
        data=payload.get("data"),
    )
