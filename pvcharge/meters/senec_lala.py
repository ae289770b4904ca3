"""The SENEC.Home ``lala.cgi`` wire format: the variables pvcharge asks for, the one request body, and
the typed hex strings of the reply (:func:`decode_value`).

Reference ``meters.md`` §2.1–2.3 (sources: mchwalisz/pysenec [S1], marq24/ha-senec-v3 [S2],
nobl/ioBroker.senec [S3], evcc ``senec-home.yaml`` [S4]).  What the values mean (signs, units, the
canonical reading) and the HTTP exchange are :mod:`pvcharge.meters.senec`.
"""

from __future__ import annotations

import json
import re
import struct

#: Section of the lala.cgi answer holding the live values (§2.3).
SECTION = "ENERGY"
GRID_POWER = "GUI_GRID_POW"  #: fl W, + = import [S1, S2, S4]
PV_POWER = "GUI_INVERTER_POWER"  #: fl W, may read -0.0 [S1, S2]
BATTERY_POWER = "GUI_BAT_DATA_POWER"  #: fl W, + = charging [S4]
BATTERY_SOC = "GUI_BAT_DATA_FUEL_CHARGE"  #: fl %, state of charge (§2.3; in [S2]'s example reply)
HOUSE_POWER = "GUI_HOUSE_POW"  #: fl W, house consumption (debug log only)
STATE = "STAT_STATE"  #: u8 enum 0..97 [S1] (debug log only)

#: The one request of every read (§2.1 [S1, S2]); sent as compact JSON (:data:`REQUEST_BODY`).
REQUEST: dict[str, dict[str, str]] = {
    SECTION: {GRID_POWER: "", PV_POWER: "", BATTERY_POWER: "", BATTERY_SOC: "", HOUSE_POWER: "", STATE: ""}
}
REQUEST_BODY = json.dumps(REQUEST, separators=(",", ":")).encode()

#: Bare strings the appliance sends instead of a value (§2.2 [S1, S3]).
SENTINELS = frozenset(
    {"VARIABLE_NOT_FOUND", "FORBIDDEN", "OBJECT_NOT_FOUND", "MALFORMED_VALUE", "FILE_VARIABLE_NOT_READABLE"}
)

#: integer prefix → (hex digits, signed) (§2.2 [S3]; the 64-bit ``u6_`` is unverified there).
_INTEGERS: dict[str, tuple[int, bool]] = {
    "u8_": (2, False),
    "u1_": (4, False),
    "u3_": (8, False),
    "u6_": (16, False),
    "i8_": (2, True),
    "i1_": (4, True),
    "i3_": (8, True),
}
_HEX = re.compile(r"[0-9A-Fa-f]*")

DecodedValue = float | int | str | list["DecodedValue"] | None


def decode_value(raw: str | list[str]) -> DecodedValue:
    """Decode one lala.cgi value (reference meters.md §2.2 [S1, S3]).

    ===============================  ===========================================================
    raw                              result
    ===============================  ===========================================================
    ``fl_`` + 8 hex digits           ``float``: big-endian IEEE 754 float32 (``fl_43E00000`` → 448.0)
    ``u8_ u1_ u3_ u6_`` + hex        ``int``: unsigned 8/16/32/64 bit, exactly 2/4/8/16 hex digits
    ``i8_ i1_ i3_`` + hex            ``int``: signed 8/16/32 bit, two's complement (``i1_FFFF`` → −1)
    ``st_…`` / ``ch_…``              ``str``: everything after the 3-character prefix, underscores kept
    ``er_…``                         ``None``: the appliance reports an error for this variable
    a sentinel (:data:`SENTINELS`)   ``None``: no value (e.g. ``VARIABLE_NOT_FOUND``)
    a list of the above              ``list`` of the decoded elements
    ===============================  ===========================================================

    Raises:
        ValueError: an unknown prefix, an empty value, non-hex digits, the wrong number of hex digits
            for the type, or a list element that is not a string; the message shows the value.
    """
    if isinstance(raw, list):
        decoded: list[DecodedValue] = []
        for item in raw:
            if not isinstance(item, str):
                raise ValueError(f"list element {item!r} is not an encoded string")
            decoded.append(decode_value(item))
        return decoded
    if raw in SENTINELS:
        return None
    prefix, rest = raw[:3], raw[3:]
    if prefix == "fl_":
        number: float = struct.unpack(">f", bytes.fromhex(_hex(raw, rest, 8)))[0]
        return number
    if prefix in _INTEGERS:
        digits, signed = _INTEGERS[prefix]
        value = int(_hex(raw, rest, digits), 16)
        bits = 4 * digits
        if signed and value >= 1 << (bits - 1):
            value -= 1 << bits
        return value
    if prefix in ("st_", "ch_"):
        return rest
    if prefix == "er_":
        return None
    raise ValueError(f"unknown value encoding {raw!r} (expected fl_, u8_/u1_/u3_/u6_, i8_/i1_/i3_, st_, ...)")


def _hex(raw: str, digits: str, count: int) -> str:
    if len(digits) != count or not _HEX.fullmatch(digits):
        raise ValueError(f"{raw!r}: {raw[:3]} needs exactly {count} hex digits, got {digits!r}")
    return digits
