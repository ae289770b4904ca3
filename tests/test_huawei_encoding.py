"""Huawei SUN2000 register encoding and vendor → canonical conversion, against reference meters.md §1.3."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvcharge.meters.huawei import decode_i32, decode_u16, encode_i32, encode_u16, to_reading

# reference meters.md §1.3 "Worked encodings"
GRID_37113 = [0xFFFF, 0xF63C]  # −2500 W (vendor + = export → importing 2500 W)
BATTERY_37765 = [0x0000, 0x04B0]  # +1200 W (vendor + = charging)
PV_32064 = [0x0000, 0x146E]  # 5230 W
SOC_37760 = [0x022B]  # 55.5 %


def meter_block(grid: list[int], currents: tuple[int, int, int] = (0, 0, 0)) -> list[int]:
    """37107..37114: phase currents (raw, gain 100, + = export) then 37113."""
    return [w for c in currents for w in encode_i32(c)] + grid


def battery_block(soc: list[int], power: list[int]) -> list[int]:
    """37760..37766: SoC, 37761 (unused), 37762 status running, 37763–37764 bus V/A, battery power."""
    return [*soc, 0, 2, 0, 0, *power]


@pytest.mark.parametrize(("value", "words"), [(-2500, GRID_37113), (1200, BATTERY_37765), (5230, PV_32064)])
def test_i32_worked_encodings(value: int, words: list[int]) -> None:
    assert encode_i32(value) == words
    assert decode_i32(*words, register=37113) == value


def test_u16_worked_encoding() -> None:
    assert encode_u16(555) == SOC_37760
    assert decode_u16(SOC_37760[0], register=37760) / 10 == 55.5


def test_worked_example_to_canonical() -> None:
    reading = to_reading(PV_32064, meter_block(GRID_37113), battery_block(SOC_37760, BATTERY_37765), 123.0)
    assert reading.grid_power_w == 2500.0  # import
    assert reading.battery_power_w == -1200.0  # charging
    assert reading.pv_power_w == 5230.0
    assert reading.battery_soc_pct == 55.5
    assert reading.timestamp_s == 123.0
    assert reading.house_power_w == 5230.0 + 2500.0 - 1200.0


def test_phase_currents_signed_like_37113() -> None:
    # 37107/09/11 gain 100 A, + = export (reference §1.3): 12.34 A export on L1, 5 A import on L3.
    reading = to_reading(PV_32064, meter_block(GRID_37113, (1234, 0, -500)), None, 0.0)
    assert reading.grid_currents_a == (-12.34, 0.0, 5.0)


def test_without_battery() -> None:
    reading = to_reading(PV_32064, meter_block(GRID_37113), None, 0.0)
    assert reading.battery_power_w == 0.0
    assert reading.battery_soc_pct is None


def test_negative_pv_input_is_clamped() -> None:
    assert to_reading(encode_i32(-15), meter_block(GRID_37113), None, 0.0).pv_power_w == 0.0


@pytest.mark.parametrize(
    ("pv", "meter", "battery", "register"),
    [
        ([0x7FFF, 0xFFFF], meter_block(GRID_37113), None, "32064"),
        (PV_32064, meter_block([0x7FFF, 0xFFFF]), None, "37113"),
        (PV_32064, meter_block(GRID_37113, (0, 0x7FFFFFFF, 0)), None, "37109"),
        (PV_32064, meter_block(GRID_37113), battery_block([0xFFFF], BATTERY_37765), "37760"),
        (PV_32064, meter_block(GRID_37113), battery_block(SOC_37760, [0x7FFF, 0xFFFF]), "37765"),
    ],
)
def test_invalid_markers_name_the_register(
    pv: list[int], meter: list[int], battery: list[int] | None, register: str
) -> None:
    with pytest.raises(ValueError, match=rf"register {register} reports 'no value'"):
        to_reading(pv, meter, battery, 0.0)


def test_soc_above_100_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"register 37760 reports SoC 100\.1 %"):
        to_reading(PV_32064, meter_block(GRID_37113), battery_block([1001], BATTERY_37765), 0.0)


def test_wrong_block_length_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected 8 registers from 37107, got 2"):
        to_reading(PV_32064, GRID_37113, None, 0.0)


def test_words_must_be_16_bit() -> None:
    with pytest.raises(ValueError, match="register 37114 holds 65536"):
        decode_i32(0, 0x10000, register=37113)


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1).filter(lambda v: v != 0x7FFFFFFF))
def test_i32_round_trip(value: int) -> None:
    words = encode_i32(value)
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode_i32(*words, register=37113) == value


@given(st.integers().filter(lambda v: not -(2**31) <= v < 2**31))
def test_i32_out_of_range_is_rejected(value: int) -> None:
    with pytest.raises(ValueError, match="does not fit in I32"):
        encode_i32(value)
