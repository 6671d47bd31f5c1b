"""systemd's sd_notify datagram protocol (Type=notify), with the standard library.

systemd passes a unix datagram socket in $NOTIFY_SOCKET (a path, or '@name' for the
abstract namespace); each datagram is newline-separated KEY=VALUE fields: READY=1 once
started, WATCHDOG=1 at least every $WATCHDOG_USEC microseconds, STOPPING=1, STATUS=...
Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._warned = False
        self.watchdog_usec = _watchdog_usec(env)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *fields: str) -> bool:
        """Send one datagram of KEY=VALUE fields; False if not sent (never raises)."""
        if not self._address:
            return False
        data = "\n".join(fields).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, self._address)
            except OSError as e:
                if not self._warned:
                    log.warning("cannot notify systemd", extra={"error": str(e)})
                    self._warned = True
                return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> bool:
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def stopping(self, status: str) -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """$WATCHDOG_USEC when it is meant for this process ($WATCHDOG_PID unset or ours)."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


class Watchdog(threading.Thread):
    """Sends WATCHDOG=1 every half watchdog period while `alive()` holds.

    When the pipeline's threads are gone, the pings stop and systemd kills and restarts
    the service (WatchdogSec= with Restart=on-failure); nothing is lost, as on any crash.
    """

    def __init__(self, notifier: Notifier, usec: int, alive: Callable[[], bool]) -> None:
        super().__init__(name="sd-watchdog", daemon=True)
        self._notifier = notifier
        self._interval = usec / 2_000_000
        self._alive = alive
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            if self._alive():
                self._notifier.notify("WATCHDOG=1")
            if self.stopped.wait(self._interval):
                return
