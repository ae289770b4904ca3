"""Simulation: a site model driven by a measured PV day, and device emulators that speak the real
protocols (Modbus TCP, HTTP) on loopback.  Used by ``pvcharge demo``, the tests and users who want
to try pvcharge before pointing it at real devices.  Emulators listen on loopback only.
"""

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound, then closed again): for a client that
    must be told where a server will listen before it does (the OCPP charge point of the demo)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
