"""Tell systemd how the daemon is doing: the sd_notify(3) protocol.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a unix datagram socket; a name starting with
``@`` is in the abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``).  The daemon sends, each as ``KEY=value`` lines in one datagram:

- ``READY=1`` after the first completed control cycle (``systemctl start`` returns then);
- ``WATCHDOG=1`` after every cycle, so systemd restarts a loop that hangs for ``WatchdogSec``;
- ``STATUS=...``: mode, surplus and current, shown by ``systemctl status pvcharge``;
- ``RELOADING=1`` with ``MONOTONIC_USEC=`` on SIGHUP, then ``READY=1`` when the reload is done;
- ``STOPPING=1`` on SIGTERM.

The messages go through systemd-python (``pip install 'pvcharge[systemd]'``, which needs the
libsystemd headers to build) when it is importable, else straight to the socket: the protocol is one
``sendto`` of a datagram, so the fallback is complete for every ``unix`` socket systemd uses.  Without
``NOTIFY_SOCKET`` (a terminal, Docker) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("pvcharge.notify")

Sender = Callable[[str], None]


def _systemd_python_sender() -> Sender | None:
    """``systemd.daemon.notify`` if systemd-python is installed, else None."""
    try:
        from systemd import daemon
    except ImportError:
        return None

    def send(message: str) -> None:
        if not daemon.notify(message):
            raise OSError(f"sd_notify({message.splitlines()[0]!r}) failed")

    return send


def _socket_sender(address: str) -> Sender:
    """Send each message as one datagram to ``address`` (``@name``: abstract namespace)."""
    target = "\0" + address[1:] if address.startswith("@") else address

    def send(message: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(2.0)  # systemd reads at once; never let a full queue hang the loop
            sock.sendto(message.encode("utf-8"), target)

    return send


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in µs, for ``MONOTONIC_USEC=`` (sd_notify(3))."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """sd_notify for one process: a no-op without ``NOTIFY_SOCKET``.

    Args:
        environ: where to read ``NOTIFY_SOCKET``/``WATCHDOG_USEC``/``WATCHDOG_PID`` (default
            ``os.environ``).
        backend: ``"auto"`` (systemd-python when importable, else the socket), ``"systemd-python"``
            or ``"socket"``.

    A failed send is logged once (``notify_failed``) and never raised: systemd going away must not
    stop the control loop.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, backend: str = "auto") -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        self.backend: str | None = None
        self._send: Sender | None = None
        self._failed = False
        if self.address is not None:
            if self.address.startswith(("/", "@")):
                sender = _systemd_python_sender() if backend in ("auto", "systemd-python") else None
                if sender is not None:
                    self.backend, self._send = "systemd-python", sender
                elif backend == "systemd-python":
                    raise ImportError("systemd-python is not installed (pip install 'pvcharge[systemd]')")
                else:
                    self.backend, self._send = "socket", _socket_sender(self.address)
            else:  # e.g. vsock:CID:PORT (systemd 253+ in VMs): not for a Raspberry Pi
                log.warning("notify_unsupported", notify_socket=self.address)
        self.watchdog_s = _watchdog_s(env)

    @property
    def enabled(self) -> bool:
        return self._send is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (in the order given) in one datagram; True if it went out."""
        if self._send is None or not fields:
            return False
        message = "\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items())
        try:
            self._send(message)
        except OSError as exc:
            if not self._failed:
                log.warning("notify_failed", notify_socket=self.address, error=str(exc))
            self._failed = True
            return False
        if self._failed:
            log.info("notify_recovered", notify_socket=self.address)
        self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (plus ``STATUS=``): start-up or a reload is complete."""
        fields: dict[str, str | int] = {"READY": 1}
        if status is not None:
            fields["STATUS"] = status
        return self.send(**fields)

    def watchdog(self, status: str | None = None) -> bool:
        """``WATCHDOG=1`` (plus ``STATUS=``): the loop is alive."""
        fields: dict[str, str | int] = {"WATCHDOG": 1}
        if status is not None:
            fields["STATUS"] = status
        return self.send(**fields)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=`` (required with it since systemd 253)."""
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS="reloading the config")

    def stopping(self) -> bool:
        return self.send(STOPPING=1, STATUS="stopping: leaving the charger in its exit state")


def _watchdog_s(env: Mapping[str, str]) -> float | None:
    """The watchdog timeout systemd enforces for this process, in s (None: no watchdog)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None  # meant for another process (we were forked or exec'd by the one it names)
    return usec / 1e6


def _one_line(text: str) -> str:
    """A field value must not contain a newline: it would start a new ``KEY=value`` line."""
    return " ".join(text.split("\n"))
