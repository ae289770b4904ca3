"""Vendor API clients shared by more than one driver (e.g. a meter and a charger of the same cloud)."""
