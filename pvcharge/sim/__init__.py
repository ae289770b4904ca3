"""Simulation: a site model driven by a measured PV day, and device emulators that speak the real
protocols (Modbus TCP, HTTP) on loopback.  Used by ``pvcharge demo``, the tests and users who want
to try pvcharge before pointing it at real devices.  Emulators listen on loopback only.
"""
