"""Draw a replayed day: PV, house, car, grid and battery power (needs matplotlib, the ``plot`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pvcharge.errors import PvchargeError
from pvcharge.sim.replay import DayScore, Sample
from pvcharge.sim.trace import Trace


def plot_day(samples: Sequence[Sample], trace: Trace, score: DayScore, out: str) -> None:
    """Write a PNG of the day to ``out``.

    Raises:
        PvchargeError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PvchargeError("--plot needs matplotlib: pip install 'pvcharge[plot]'") from exc
    hours = [((s.t_s + trace.utc_offset_s) % 86400) / 3600 for s in samples]
    fig: Any
    fig, (ax, ax_a) = plt.subplots(2, 1, figsize=(14, 7), sharex=True, height_ratios=[3, 1])
    ax.plot(hours, [s.pv_power_w for s in samples], label="PV", lw=0.8, color="#f5a300")
    ax.plot(hours, [s.house_power_w for s in samples], label="house", lw=0.6, color="#777777")
    ax.plot(hours, [s.car_power_w for s in samples], label="car", lw=1.0, color="#1f77b4")
    ax.plot(hours, [s.grid_power_w for s in samples], label="grid (> 0 import)", lw=0.6, color="#d62728")
    ax.plot(
        hours,
        [s.battery_power_w for s in samples],
        label="battery (> 0 discharge)",
        lw=0.6,
        color="#2ca02c",
        alpha=0.7,
    )
    ax.set_ylabel("W")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(
        f"{trace.name}: capture {100 * score.capture:.1f} %, car {score.car_kwh:.1f} kWh "
        f"(battery {score.battery_to_car_kwh:.2f}, grid {score.grid_to_car_kwh:.2f}), "
        f"starts {score.starts}, phase switches {score.phase_switches}, writes {score.charger_writes}"
    )
    ax_a.step(hours, [s.offered_current_a for s in samples], where="post", label="offered A", lw=0.8)
    ax_a.step(hours, [s.phases for s in samples], where="post", label="phases", lw=0.8)
    ax_a.set_xlabel("local time (h)")
    ax_a.legend(loc="upper left", fontsize=8)
    ax_a.grid(alpha=0.3)
    fig.savefig(out, dpi=90, bbox_inches="tight")
    plt.close(fig)
