"""pvcharge: charge an electric car from rooftop PV surplus.

Sign convention used everywhere inside the project (see ``pvcharge.readings``):
``grid_power_w > 0`` imports, ``battery_power_w > 0`` discharges, ``pv_power_w >= 0``,
so the house load behind the grid meter (car included) is ``pv + grid + battery``.
"""

__version__ = "0.1.0"
