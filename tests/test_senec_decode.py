"""SENEC lala.cgi value decoding and the canonical conversion, on the reference's real bodies.

Device facts under test: reference meters.md §2.2 (encodings), §2.3 (signs), §2.4 (example replies:
the pysenec capture [S1 ``tests/cassettes/test_update.yaml``] and the ha-senec-v3 docs example [S2]).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sitestub import meter_state

from pvcharge.meters.senec import to_reading
from pvcharge.meters.senec_lala import REQUEST_BODY, SENTINELS, decode_value
from pvcharge.sim.senec import IntKind, encode_float, encode_int, energy_section, stat_state
from pvcharge.sim.site import SiteState

# meters.md §2.4, real capture [S1], verbatim.
PYSENEC_CAPTURE = json.loads(
    '{"ENERGY":{"STAT_STATE":"u8_11","GUI_BAT_DATA_POWER":"fl_C3793137","GUI_INVERTER_POWER":"fl_43810000",'
    '"GUI_HOUSE_POW":"fl_43F4A79B","GUI_GRID_POW":"fl_C1647AE1","GUI_BAT_DATA_FUEL_CHARGE":"fl_422F829D",'
    '"GUI_BAT_DATA_VOLTAGE":"fl_424DF1AA","GUI_BAT_DATA_CURRENT":"fl_C098A3D7",'
    '"GUI_BAT_DATA_OA_CHARGING":"VARIABLE_NOT_FOUND"},'
    '"PV1":{"POWER_RATIO":"u3_00000064"},'
    '"PM1OBJ1":{"FREQ":"fl_42480A3D","P_AC":["fl_C34FFD70","fl_43648A3D","fl_C20B47AE"],"P_TOTAL":"fl_C1647AE1"}}'
)

# meters.md §2.4, ha-senec-v3 docs example [S2], verbatim.
HA_SENEC_EXAMPLE = json.loads(
    '{"STAT_STATE":"u8_0D","GUI_BAT_DATA_POWER":"fl_BF08E2C1","GUI_INVERTER_POWER":"fl_4599AD17",'
    '"GUI_HOUSE_POW":"fl_442047C0","GUI_GRID_POW":"fl_C585A866","GUI_BAT_DATA_FUEL_CHARGE":"fl_428C0000"}'
)

W = pytest.approx  # values are float32: compare to the reference's two decimals


def decode_all(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {section: {k: decode_value(v) for k, v in values.items()} for section, values in body.items()}


# -- the reference's bodies -----------------------------------------------------------------------


def test_pysenec_capture_decodes_to_the_reference_numbers() -> None:
    values = decode_all(PYSENEC_CAPTURE)
    energy = values["ENERGY"]
    assert energy["STAT_STATE"] == 17  # PV + DISCHARGE
    assert energy["GUI_BAT_DATA_POWER"] == W(-249.19, abs=0.005)
    assert energy["GUI_INVERTER_POWER"] == 258.0
    assert energy["GUI_HOUSE_POW"] == W(489.31, abs=0.005)
    assert energy["GUI_GRID_POW"] == W(-14.28, abs=0.005)
    assert energy["GUI_BAT_DATA_FUEL_CHARGE"] == W(43.88, abs=0.005)
    assert energy["GUI_BAT_DATA_VOLTAGE"] == W(51.49, abs=0.005)
    assert energy["GUI_BAT_DATA_CURRENT"] == W(-4.77, abs=0.005)
    assert energy["GUI_BAT_DATA_OA_CHARGING"] is None  # VARIABLE_NOT_FOUND
    assert values["PV1"]["POWER_RATIO"] == 100
    assert values["PM1OBJ1"]["FREQ"] == W(50.01, abs=0.005)
    assert values["PM1OBJ1"]["P_AC"] == [W(-207.99, abs=0.005), W(228.54, abs=0.005), W(-34.82, abs=0.005)]
    assert values["PM1OBJ1"]["P_TOTAL"] == energy["GUI_GRID_POW"]


def test_pysenec_capture_to_canonical_reading() -> None:
    reading = to_reading(PYSENEC_CAPTURE["ENERGY"], timestamp_s=12.5)
    assert reading.grid_power_w == W(-14.28, abs=0.005)  # exporting
    assert reading.pv_power_w == 258.0
    assert reading.battery_power_w == W(249.19, abs=0.005)  # vendor −249.19 (discharging) → + canonical
    assert reading.battery_soc_pct == W(43.88, abs=0.005)
    assert reading.timestamp_s == 12.5
    assert reading.grid_currents_a is None
    # pv + grid + battery, as the reference computes it (GUI_HOUSE_POW itself reads 489.31 W)
    assert reading.house_power_w == W(492.9, abs=0.02)


def test_ha_senec_docs_example_to_canonical_reading() -> None:
    values = decode_all({"ENERGY": HA_SENEC_EXAMPLE})["ENERGY"]
    assert values["STAT_STATE"] == 13  # BATTERY FULL
    assert values["GUI_BAT_DATA_POWER"] == W(-0.53, abs=0.005)
    assert values["GUI_HOUSE_POW"] == W(641.12, abs=0.005)
    reading = to_reading(HA_SENEC_EXAMPLE, timestamp_s=0.0)
    assert reading.pv_power_w == W(4917.64, abs=0.005)
    assert reading.grid_power_w == W(-4277.05, abs=0.005)
    assert reading.battery_power_w == W(0.53, abs=0.005)
    assert reading.battery_soc_pct == 70.0


def test_the_request_body_is_compact_json_of_exactly_the_needed_variables() -> None:
    assert REQUEST_BODY == (
        b'{"ENERGY":{"GUI_GRID_POW":"","GUI_INVERTER_POWER":"","GUI_BAT_DATA_POWER":"",'
        b'"GUI_BAT_DATA_FUEL_CHARGE":"","GUI_HOUSE_POW":"","STAT_STATE":""}}'
    )


# -- every prefix ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("fl_43E00000", 448.0),  # the reference's example (§2.2)
        ("fl_00000000", 0.0),
        ("fl_3f800000", 1.0),  # lower-case hex digits
        ("u8_11", 17),
        ("u8_FF", 255),
        ("u1_0000", 0),
        ("u1_FFFF", 65535),
        ("u3_00000064", 100),
        ("u3_FFFFFFFF", 2**32 - 1),
        ("u6_FFFFFFFFFFFFFFFF", 2**64 - 1),
        ("i8_7F", 127),
        ("i8_80", -128),
        ("i8_FF", -1),
        ("i1_7FFF", 32767),
        ("i1_8000", -32768),
        ("i1_FFFF", -1),
        ("i1_FF9C", -100),
        ("i3_00000064", 100),
        ("i3_FFFFFF9C", -100),
        ("i3_80000000", -(2**31)),
        ("i3_7FFFFFFF", 2**31 - 1),
        ("st_SENEC_HOME_V3", "SENEC_HOME_V3"),  # underscores kept (pysenec splits on them)
        ("st_", ""),
        ("ch_A_B", "A_B"),
        ("er_0001", None),
    ],
)
def test_decode_each_prefix(raw: str, expected: object) -> None:
    value = decode_value(raw)
    assert value == expected
    assert type(value) is type(expected)


def test_negative_zero_float_decodes_with_its_sign() -> None:
    value = decode_value("fl_80000000")
    assert isinstance(value, float)
    assert value == 0.0 and math.copysign(1.0, value) == -1.0


@pytest.mark.parametrize("sentinel", sorted(SENTINELS))
def test_sentinels_decode_to_none(sentinel: str) -> None:
    assert decode_value(sentinel) is None


def test_lists_decode_elementwise() -> None:
    raw = ["fl_43676667", "fl_43683333", "fl_4367B333"]  # U_AC, meters.md §2.2
    assert decode_value(raw) == W([231.4, 232.2, 231.7], abs=0.01)
    assert decode_value(["i1_FFFF", "st_x_y", "VARIABLE_NOT_FOUND"]) == [-1, "x_y", None]
    assert decode_value([]) == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("fl_43E0000", "exactly 8 hex digits"),
        ("fl_43E000000", "exactly 8 hex digits"),
        ("fl_", "exactly 8 hex digits"),
        ("u8_011", "exactly 2 hex digits"),
        ("u1_FFF", "exactly 4 hex digits"),
        ("u3_0064", "exactly 8 hex digits"),
        ("u6_FFFFFFFF", "exactly 16 hex digits"),
        ("i8_8", "exactly 2 hex digits"),
        ("i1_FFFFF", "exactly 4 hex digits"),
        ("i3_FFFFFFFFF", "exactly 8 hex digits"),
        ("u1_GGGG", "hex digits"),
        ("u1_F_FF", "hex digits"),  # int(…, 16) would accept the underscore
        ("i1_+FFF", "hex digits"),
        ("i1_ FFF", "hex digits"),
        ("xx_12", "unknown value encoding"),
        ("fl43E00000", "unknown value encoding"),
        ("", "unknown value encoding"),
        ("variable_not_found", "unknown value encoding"),  # sentinels are upper case
    ],
)
def test_malformed_values_raise_clear_errors(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        decode_value(raw)
    assert repr(raw) in str(err.value)


def test_a_list_element_that_is_not_a_string_is_malformed() -> None:
    with pytest.raises(ValueError, match="not an encoded string"):
        decode_value(["fl_43E00000", 5])  # type: ignore[list-item]


# -- the canonical conversion's errors ------------------------------------------------------------


def energy(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = dict(HA_SENEC_EXAMPLE)
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_pv_reading_minus_zero_or_negative_is_made_positive() -> None:
    assert to_reading(energy(GUI_INVERTER_POWER="fl_80000000"), 0.0).pv_power_w == 0.0
    assert to_reading(energy(GUI_INVERTER_POWER="fl_C0000000"), 0.0).pv_power_w == 2.0


@pytest.mark.parametrize(
    "name", ["GUI_GRID_POW", "GUI_INVERTER_POWER", "GUI_BAT_DATA_POWER", "GUI_BAT_DATA_FUEL_CHARGE"]
)
def test_a_missing_needed_variable_is_named(name: str) -> None:
    body = energy()
    del body[name]
    with pytest.raises(ValueError, match=f"ENERGY.{name} missing"):
        to_reading(body, 0.0)


@pytest.mark.parametrize("raw", [*sorted(SENTINELS), "er_0003"])
def test_a_needed_variable_without_value_names_variable_and_answer(raw: str) -> None:
    with pytest.raises(ValueError, match=f"ENERGY.GUI_GRID_POW: no value, the appliance answered '{raw}'"):
        to_reading(energy(GUI_GRID_POW=raw), 0.0)


def test_unneeded_variables_may_be_anything() -> None:
    reading = to_reading(energy(STAT_STATE="VARIABLE_NOT_FOUND", GUI_HOUSE_POW="garbage"), 0.0)
    assert reading.battery_soc_pct == 70.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("st_12", "expected a number"),
        (["fl_43E00000"], "expected a number"),
        (12.5, "expected an encoded string"),
        ("fl_123", "ENERGY.GUI_BAT_DATA_POWER: 'fl_123': fl_ needs exactly 8 hex digits"),
    ],
)
def test_a_malformed_needed_variable_is_named(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        to_reading(energy(GUI_BAT_DATA_POWER=raw), 0.0)
    assert "GUI_BAT_DATA_POWER" in str(err.value)


def test_out_of_range_values_are_rejected_by_the_reading() -> None:
    with pytest.raises(ValueError, match="battery_soc_pct"):
        to_reading(energy(GUI_BAT_DATA_FUEL_CHARGE=encode_float(250.0)), 0.0)
    with pytest.raises(ValueError, match="grid_power_w"):
        to_reading(energy(GUI_GRID_POW="fl_7FC00000"), 0.0)  # NaN


# -- the emulator's encoder -----------------------------------------------------------------------


def test_encoder_matches_the_reference_examples() -> None:
    assert encode_float(448.0) == "fl_43E00000"
    assert encode_float(struct.unpack(">f", bytes.fromhex("C1647AE1"))[0]) == "fl_C1647AE1"
    assert encode_int(17, "u8") == "u8_11"
    assert encode_int(100, "u3") == "u3_00000064"
    assert encode_int(-1, "i1") == "i1_FFFF"
    assert encode_int(-100, "i3") == "i3_FFFFFF9C"
    assert encode_int(-128, "i8") == "i8_80"


@pytest.mark.parametrize(("value", "kind"), [(256, "u8"), (-1, "u1"), (128, "i8"), (-(2**31) - 1, "i3")])
def test_encoder_rejects_values_out_of_range(value: int, kind: IntKind) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_int(value, kind)


@given(st.floats(width=32, allow_nan=False))
def test_float_round_trip(value: float) -> None:
    raw = encode_float(value)
    assert raw.startswith("fl_") and len(raw) == 11 and raw[3:] == raw[3:].upper()
    decoded = decode_value(raw)
    assert decoded == value
    assert isinstance(decoded, float) and math.copysign(1.0, decoded) == math.copysign(1.0, value)


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_i3_round_trip(value: int) -> None:
    assert decode_value(encode_int(value, "i3")) == value


@given(st.data())
def test_every_integer_kind_round_trips(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(get_args(IntKind)))
    bits = int({"8": 8, "1": 16, "3": 32, "6": 64}[kind[1]])
    signed = kind[0] == "i"
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    value = data.draw(st.integers(min_value=low, max_value=high))
    assert decode_value(encode_int(value, kind)) == value


def site_state(pv: float, grid: float, battery: float, soc: float) -> SiteState:
    return meter_state(pv_w=pv, grid_w=grid, battery_w=battery, soc_pct=soc)


@pytest.mark.parametrize(
    ("pv", "battery", "soc", "code"),
    [
        (3000.0, -1200.0, 50.0, 14),  # CHARGE
        (0.0, 800.0, 50.0, 16),  # DISCHARGE
        (200.0, 800.0, 50.0, 17),  # PV + DISCHARGE
        (3000.0, 0.0, 100.0, 13),  # BATTERY FULL
        (0.0, 0.0, 10.0, 15),  # BATTERY EMPTY
        (500.0, 1.0, 50.0, 21),  # OWN CONSUMPTION
    ],
)
def test_emulator_stat_state(pv: float, battery: float, soc: float, code: int) -> None:
    assert stat_state(site_state(pv, 100.0, battery, soc)) == code


def test_emulator_energy_section_decodes_to_the_canonical_state() -> None:
    state = site_state(pv=3000.0, grid=-500.0, battery=-1200.0, soc=55.5)
    section = energy_section(state)
    assert section["GUI_BAT_DATA_POWER"] == encode_float(1200.0)  # vendor: + = charging
    assert decode_value(section["GUI_HOUSE_POW"]) == 1300.0
    assert decode_value(section["STAT_STATE"]) == 14
    reading = to_reading(section, 1.0)
    assert (reading.pv_power_w, reading.grid_power_w, reading.battery_power_w) == (3000.0, -500.0, -1200.0)
    assert reading.battery_soc_pct == 55.5
