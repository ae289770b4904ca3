"""The development set: measured variable days from Graz (2017), as 1-s PV + house-load traces.

    pip install -e '.[bench]'                  # pvlib and the sunpeek-exampledata wheel
    python -m benchmarks.graz                  # build the cache, print the day list (dates, classes)
    python -m benchmarks.graz --write-list     # and rewrite benchmarks/data/graz_2017_days.csv

**Source.** ``sunpeek-exampledata==0.2.1`` (PyPI; CC BY-SA 4.0; data © 2017-2023 SOLID Solar Energy
Systems GmbH; original dataset Zenodo record 7741084), file
``sunpeek_exampledata/FHW/FHW__array_ArcS__2017-01-01__2017-12-31__1m__UTC.csv``: one year of 1-min
measurements at the Fernheizwerk Graz solar-thermal plant (47.0472 N, 15.4364 E, 344 m), ``;``-separated,
stamped in UTC (column ``timestamps_UTC``).  Columns used: ``rd_gti`` (in-plane irradiance on the 30°
south plane, W/m²), ``rd_ghi`` (GHI, W/m²), ``te_amb`` (air temperature, K), ``ve_wind`` (wind speed,
m/s).  Location, plane and units are the wheel's own plant description,
``sunpeek_exampledata/FHW/plant_config_FHW_Arcon_South.json`` (``latitude``/``longitude``/``elevation``;
``raw_sensors``: ``rd_gti`` tilt 30°, azim 180°, ``W m**-2``; ``te_amb`` ``K``; ``ve_wind`` ``m s**-1``);
it lists no unit for ``rd_ghi``, read as W/m² like its other ``rd_`` columns (its values are of
``rd_gti``'s size).  The file's SHA-256 is checked before use (:data:`SOURCE_SHA256`).  Only this Graz
file is read: the wheel's other site is kept for independent checks.

**PV.** A hypothetical 10 kWp array on that plane, with pvlib: Faiman cell temperature from the
measured in-plane irradiance, air temperature and wind (pvlib's default u0, u1); PVWatts DC
(−0.4 %/K); PVWatts inverter (96 % nominal efficiency) clipping at 10 kW AC.  No transposition is
modelled: the plane's irradiance is measured.

**Days.** Cut in local time (Europe/Vienna, CEST in summer), 05:00–21:00 (the car is plugged in 08:00–
18:00; in Graz the sun is below the horizon before 05:00 and after 21:00 CEST all summer).  A day is
kept if, while the sun is above 5°, at most :data:`MAX_MISSING_MIN` minutes of ``rd_gti``/``rd_ghi``
are missing and no value repeats unchanged for :data:`MAX_FLAT_MIN` minutes or more (a gap the
logger filled with its last value); missing minutes are interpolated linearly.

**Classes**, from GHI against the Ineichen clear-sky GHI (Linke turbidity :data:`LINKE_TURBIDITY`)
while the sun is above 10°: the clear-sky index ``kt = ΣGHI / ΣGHI_clear`` and Stein's variability
index ``VI = Σ√(ΔGHI² + Δt²) / Σ√(ΔGHI_clear² + Δt²)`` (Δt = 1 min, in W/m² per minute):

- ``clear``: kt ≥ 0.7 and VI < 5;
- ``overcast``: kt < 0.35 (little surplus whatever the clouds do);
- ``variable``: VI ≥ 8 (the GHI line is 8× longer than the clear-sky one: clouds come and go all day);
- ``mixed``: the rest (a clear half-day and a cloudy one, or thin moving clouds).

**1 s.** The replay runs at 1 s; the source has 1-min means.  :func:`downscale` makes a 1-s series
that keeps every minute's mean exactly (up to the 0 W / 10 kW bounds): linear interpolation between
the minute means (placed at the minutes' centres), plus AR(1) noise (10-s correlation) whose size
is half the larger step to a neighbouring minute, seeded by the date; each minute is then shifted back
to its mean.  The sub-minute structure is made up; only the minute means are measured.

**House.** A measured household load: the two UCI days the project already pairs with PV (2007-07-01
from ``serf_east_2022-03-18.csv`` and 2007-07-02 from ``serf_east_2022-03-19.csv`` of
``../shared/traces``, both may be copied; see ``benchmarks/data/ATTRIBUTION.md``), by local clock
minute, alternating by day of year (even: 2007-07-01, odd: 2007-07-02), each minute held for its
60 s.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.resources
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from pvcharge.sim.trace import Trace, load_trace

SOURCE_FILE = "FHW/FHW__array_ArcS__2017-01-01__2017-12-31__1m__UTC.csv"  #: inside sunpeek_exampledata 0.2.1
#: sha256sum of that file as the 0.2.1 wheel ships it
SOURCE_SHA256 = "02c3b36af9d407278da833c1cfbc84f24fdfdd13c45cc07783bdd0e7ad7590fe"
#: degrees N, degrees E, m: the wheel's FHW/plant_config_FHW_Arcon_South.json
LATITUDE, LONGITUDE, ALTITUDE_M = 47.047201, 15.436428, 344.0
TZ = ZoneInfo("Europe/Vienna")
DAY_START_H, DAY_END_H = 5, 21
PEAK_W = 10_000.0  #: array size (kWp at STC) and AC limit of the inverter, W
MAX_MISSING_MIN = 10
MAX_FLAT_MIN = 15
LINKE_TURBIDITY = 3.5
MONTHS = range(4, 10)  #: April to September

DATA = Path(__file__).resolve().parent / "data"
DAY_LIST = DATA / "graz_2017_days.csv"
HOUSE_TRACES = {0: "serf_east_2022-03-18.csv", 1: "serf_east_2022-03-19.csv"}  #: in ../shared/traces
HOUSE_FILES = {0: DATA / "uci_house_2007-07-01.csv", 1: DATA / "uci_house_2007-07-02.csv"}
CLASSES = ("clear", "mixed", "variable", "overcast")


class DatasetError(Exception):
    """The source data is missing or not the pinned file."""


@dataclass(frozen=True)
class DayInfo:
    """One local day of the source: quality and class."""

    day: date
    kept: bool
    why: str  # "" when kept, else why not
    day_class: str
    kt: float
    vi: float
    pv_kwh: float

    def row(self) -> dict[str, str]:
        return {
            "date": self.day.isoformat(),
            "class": self.day_class,
            "kt": f"{self.kt:.4f}",
            "vi": f"{self.vi:.2f}",
            "pv_kwh": f"{self.pv_kwh:.1f}",
            "kept": "yes" if self.kept else "no",
            "why_not": self.why,
        }


# -- pure helpers (tested on synthetic input) -------------------------------------------------
def classify(kt: float, vi: float) -> str:
    """The day class from the clear-sky index ``kt`` and Stein's variability index ``vi`` (rule in
    the module docstring)."""
    if kt < 0.35:
        return "overcast"
    if kt >= 0.7 and vi < 5:
        return "clear"
    if vi >= 8:
        return "variable"
    return "mixed"


def variability(ghi: np.ndarray, ghi_clear: np.ndarray) -> tuple[float, float]:
    """``(kt, vi)`` of a 1-min GHI series against its clear-sky series (W/m², same length, no NaN)."""
    clear_sum = float(np.sum(ghi_clear))
    kt = float(np.sum(ghi)) / clear_sum if clear_sum > 0 else 0.0
    line = np.sum(np.sqrt(np.diff(ghi) ** 2 + 1.0))
    line_clear = np.sum(np.sqrt(np.diff(ghi_clear) ** 2 + 1.0))
    return kt, float(line / line_clear) if line_clear > 0 else 0.0


def longest_flat_run(values: np.ndarray) -> int:
    """The longest run of identical consecutive values (NaN never counts as equal), in samples."""
    if len(values) == 0:
        return 0
    same = np.concatenate([[False], values[1:] == values[:-1]])
    best = run = 1
    for s in same[1:]:
        run = run + 1 if s else 1
        best = max(best, run)
    return best


def downscale(minute_means: np.ndarray, seed: int, upper: float = PEAK_W) -> np.ndarray:
    """A 1-s series (60 samples per minute) whose every minute averages to its 1-min mean.

    Linear interpolation between the minute means at the minutes' centres, plus AR(1) noise (10-s
    correlation, seeded) scaled by half the larger step to a neighbouring minute; each minute is then
    shifted back to its mean, within ``[0, upper]`` (a mean at a bound stays flat at it).
    """
    m = np.clip(np.asarray(minute_means, dtype=float), 0.0, upper)
    n = len(m)
    centres = np.arange(n) * 60.0 + 29.5
    t = np.arange(n * 60, dtype=float)
    base = np.interp(t, centres, m)
    step = np.abs(np.diff(m, prepend=m[:1], append=m[-1:]))
    scale = 0.5 * np.maximum(step[:-1], step[1:])
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(n * 60)
    phi = math.exp(-1.0 / 10.0)
    noise = np.empty_like(white)
    acc = 0.0
    gain = math.sqrt(1 - phi * phi)
    for i, x in enumerate(white):
        acc = phi * acc + gain * x
        noise[i] = acc
    x = (base + noise * np.repeat(scale, 60)).reshape(n, 60)
    for _ in range(20):  # shift each minute to its mean, within the bounds
        x = np.clip(x - (x.mean(axis=1) - m)[:, None], 0.0, upper)
        if np.max(np.abs(x.mean(axis=1) - m)) < 1e-6:
            break
        free = (x > 0.0) & (x < upper)
        short = (m - x.mean(axis=1)) * 60.0
        counts = np.maximum(free.sum(axis=1), 1)
        x = np.clip(x + free * (short / counts)[:, None], 0.0, upper)
    return np.asarray(x.reshape(-1))


def trace_1s(
    name: str, t0_s: float, utc_offset_s: int, pv_w: np.ndarray, house_w: np.ndarray, seed: int
) -> Trace:
    """A 1-s :class:`Trace` from 1-min PV and house means starting at Unix time ``t0_s``: PV
    downscaled (:func:`downscale`), the house held for each minute."""
    pv = downscale(pv_w, seed)
    house = np.repeat(np.asarray(house_w, dtype=float), 60)
    n = len(pv)
    return Trace(
        name=name,
        t_s=tuple(float(t0_s + i) for i in range(n)),
        pv_power_w=tuple(round(float(v), 1) for v in pv),
        house_power_w=tuple(float(v) for v in house),
        utc_offset_s=utc_offset_s,
        step_s=1.0,
    )


# -- the source ---------------------------------------------------------------------------------
def source_path() -> Path:
    """The pinned Graz CSV inside the installed ``sunpeek_exampledata`` package.

    Raises:
        DatasetError: the package is not installed (``pip install -e '.[bench]'``) or the file's
            SHA-256 is not :data:`SOURCE_SHA256`.
    """
    try:
        ref = importlib.resources.files("sunpeek_exampledata") / SOURCE_FILE
    except ModuleNotFoundError as exc:
        raise DatasetError(
            "sunpeek_exampledata is not installed: pip install -e '.[bench]' (sunpeek-exampledata==0.2.1)"
        ) from exc
    path = Path(str(ref))
    if not path.is_file():
        raise DatasetError(f"{path}: not found in the installed sunpeek_exampledata")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise DatasetError(f"{path}: SHA-256 {digest}, expected {SOURCE_SHA256} (sunpeek-exampledata 0.2.1)")
    return path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pvcharge-bench" / "graz2017"


def house_minutes(parity: int) -> dict[int, float]:
    """Minute of the local day → house power in W, for UCI day ``parity`` (0: 2007-07-01, 1: 07-02)."""
    path = HOUSE_FILES[parity]
    with path.open(encoding="utf-8") as f:
        return {int(r["minute"]): float(r["house_power_w"]) for r in csv.DictReader(f)}


def build(out: Path | None = None) -> list[DayInfo]:
    """Read the source, model PV, check and classify every April–September day, write the kept days
    as 1-min trace CSVs (``graz_YYYY-MM-DD_<class>.csv``) into ``out`` (default :func:`cache_dir`)."""
    try:
        import pandas as pd
        import pvlib
    except ImportError as exc:
        raise DatasetError(f"{exc.name} is not installed: pip install -e '.[bench]'") from exc

    out = out or cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    df = pd.read_csv(
        source_path(),
        sep=";",
        usecols=["timestamps_UTC", "rd_ghi", "rd_gti", "te_amb", "ve_wind"],
        index_col="timestamps_UTC",
        parse_dates=True,
    )
    df.index = df.index.tz_localize("UTC")
    loc = pvlib.location.Location(LATITUDE, LONGITUDE, altitude=ALTITUDE_M)
    houses = {p: house_minutes(p) for p in (0, 1)}
    infos: list[DayInfo] = []
    day = date(2017, MONTHS.start, 1)
    while day.month in MONTHS:
        start = datetime(day.year, day.month, day.day, DAY_START_H, tzinfo=TZ)
        end = datetime(day.year, day.month, day.day, DAY_END_H, tzinfo=TZ)
        index = pd.date_range(start, end, freq="1min", inclusive="left").tz_convert("UTC")
        d = df.reindex(index)
        solpos = loc.get_solarposition(index)
        clear = loc.get_clearsky(
            index, model="ineichen", solar_position=solpos, linke_turbidity=LINKE_TURBIDITY
        )
        up5 = (solpos["apparent_elevation"] > 5).to_numpy()
        up10 = (solpos["apparent_elevation"] > 10).to_numpy()
        gti, ghi = d["rd_gti"].to_numpy(float), d["rd_ghi"].to_numpy(float)
        missing = int(np.sum((np.isnan(gti) | np.isnan(ghi)) & up5))
        flat = max(longest_flat_run(gti[up5]), longest_flat_run(ghi[up5]))
        why = ""
        if missing > MAX_MISSING_MIN:
            why = f"{missing} daytime minutes missing"
        elif flat >= MAX_FLAT_MIN:
            why = f"a value repeats for {flat} min"
        filled = d.interpolate(limit_direction="both")
        gti_f = np.clip(filled["rd_gti"].to_numpy(float), 0.0, None)
        ghi_f = np.clip(filled["rd_ghi"].to_numpy(float), 0.0, None)
        kt, vi = (
            variability(ghi_f[up10], clear["ghi"].to_numpy(float)[up10])
            if not np.isnan(ghi_f).any()
            else (0, 0)
        )
        cls = classify(kt, vi)
        pv_w = pv_power_w(gti_f, filled["te_amb"].to_numpy(float) - 273.15, filled["ve_wind"].to_numpy(float))
        pv_kwh = float(np.nansum(pv_w)) / 60000.0
        info = DayInfo(day, not why and not np.isnan(pv_w).any(), why, cls, kt, vi, pv_kwh)
        infos.append(info)
        if info.kept:
            house = houses[day.timetuple().tm_yday % 2]
            minute0 = DAY_START_H * 60
            rows = ["timestamp,pv_power_w,house_power_w"]
            for i in range(len(index)):
                stamp = (start + timedelta(minutes=i)).isoformat()
                rows.append(f"{stamp},{pv_w[i]:.1f},{house[minute0 + i]:.1f}")
            (out / day_file(info)).write_text("\n".join(rows) + "\n", encoding="utf-8")
        day += timedelta(days=1)
    return infos


def pv_power_w(gti: np.ndarray, temp_air_c: np.ndarray, wind_m_s: np.ndarray) -> np.ndarray:
    """AC power in W of the 10 kWp array (module docstring) from in-plane irradiance (W/m²), air
    temperature (°C) and wind (m/s); NaN wind counts as 1 m/s."""
    import pvlib

    wind = np.where(np.isnan(wind_m_s), 1.0, wind_m_s)
    cell_c = pvlib.temperature.faiman(gti, temp_air_c, wind)
    dc_w = pvlib.pvsystem.pvwatts_dc(gti, cell_c, PEAK_W, -0.004)
    ac_w = pvlib.inverter.pvwatts(dc_w, PEAK_W / 0.96, eta_inv_nom=0.96)
    return np.clip(np.asarray(ac_w, dtype=float), 0.0, PEAK_W)


def day_file(info: DayInfo) -> str:
    return f"graz_{info.day.isoformat()}_{info.day_class}.csv"


def read_day_list(path: Path = DAY_LIST) -> list[DayInfo]:
    with path.open(encoding="utf-8") as f:
        return [
            DayInfo(
                date.fromisoformat(r["date"]),
                r["kept"] == "yes",
                r["why_not"],
                r["class"],
                float(r["kt"]),
                float(r["vi"]),
                float(r["pv_kwh"]),
            )
            for r in csv.DictReader(f)
        ]


def write_day_list(infos: list[DayInfo], path: Path = DAY_LIST) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(infos[0].row()))
        writer.writeheader()
        for info in infos:
            writer.writerow(info.row())


def load_days(
    classes: tuple[str, ...] = CLASSES, every: int = 1, offset: int = 0
) -> Iterator[tuple[DayInfo, Trace]]:
    """The kept days of the committed list (of these classes; every ``every``-th, from the ``offset``-th
    on), as 1-s traces, one at a time (a 1-s day takes ~6 MB); the cache is built first if a file is
    missing.

    Raises:
        DatasetError: the source is missing, or a rebuilt day's class differs from the list.
    """
    infos = [i for i in read_day_list() if i.kept and i.day_class in classes][offset::every]
    folder = cache_dir()
    if any(not (folder / day_file(i)).is_file() for i in infos):
        built = {i.day: i for i in build(folder)}
        for i in infos:
            b = built[i.day]
            if (b.kept, b.day_class) != (i.kept, i.day_class):
                raise DatasetError(f"{i.day}: the rebuilt day differs from {DAY_LIST.name}: {b} vs {i}")
    for info in infos:
        minute = load_trace(folder / day_file(info))
        seed = int(info.day.strftime("%Y%m%d"))
        pv, house = np.array(minute.pv_power_w), np.array(minute.house_power_w)
        yield info, trace_1s(day_file(info), minute.start_s, minute.utc_offset_s, pv, house, seed)


def extract_house(traces: Path) -> None:
    """Write the two UCI house days (by local minute) from the shared SERF East traces in ``traces``."""
    for parity, name in HOUSE_TRACES.items():
        trace = load_trace(traces / name)
        rows = ["minute,house_power_w"]
        for t, h in zip(trace.t_s, trace.house_power_w, strict=True):
            rows.append(f"{int(trace.local_seconds_of_day(t) // 60)},{h:.1f}")
        HOUSE_FILES[parity].write_text("\n".join(rows) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write-list", action="store_true", help=f"rewrite {DAY_LIST.name}")
    parser.add_argument(
        "--extract-house",
        metavar="TRACES",
        help="rewrite the UCI house files from this ../shared/traces folder",
    )
    args = parser.parse_args(argv)
    if args.extract_house:
        extract_house(Path(args.extract_house))
    try:
        infos = build()
    except DatasetError as exc:
        print(f"benchmarks.graz: {exc}", file=sys.stderr)
        return 2
    if args.write_list:
        write_day_list(infos)
    counts: dict[str, Any] = {}
    for i in infos:
        key = i.day_class if i.kept else "rejected"
        counts[key] = counts.get(key, 0) + 1
    print(f"{len(infos)} days, cache {cache_dir()}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
