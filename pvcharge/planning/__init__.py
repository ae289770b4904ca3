"""Charge plans ("80 % by 7:00"): the pure planner (:mod:`.planner`), and the sources it plans from:
day-ahead prices (:mod:`.tariffs`) and solar forecasts (:mod:`.forecast`). See docs/plans.md."""
