"""sd_notify: the real CLI talks to a test NOTIFY_SOCKET as systemd's Type=notify expects."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_statsig import FakeStatsig
from kit import Cli, NotifySocket, append, event_line, fast_args, wait_until

from forwarder.sdnotify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(str(tmp_path / "notify.sock"))
    yield ns
    ns.close()


def test_ready_watchdog_stopping_in_order(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    log = tmp_path / "events.ndjson"
    append(log, event_line(1))
    cli = spawn("run", str(log), *fast_args(fake, tmp_path / "state"),
                env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000"})
    assert wait_until(lambda: notify_socket.kinds().count("WATCHDOG") >= 3)
    assert fake.wait_for(1)
    cli.signal(signal.SIGTERM)
    assert cli.wait() == 0
    assert wait_until(lambda: "STOPPING" in notify_socket.kinds(), timeout=3)
    kinds = notify_socket.kinds()
    assert kinds[0] == "READY", kinds
    assert kinds.count("READY") == 1
    stopping = kinds.index("STOPPING")
    assert kinds[1:stopping] == ["WATCHDOG"] * (stopping - 1) and stopping >= 4, kinds
    ready = notify_socket.messages[0]
    assert ready["READY"] == "1" and ready["MAINPID"] == str(cli.proc.pid) and ready["STATUS"]


def test_abstract_socket_and_no_watchdog_without_watchdog_usec(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    ns = NotifySocket(f"@statsig-forwarder-test-{os.getpid()}")
    try:
        log = tmp_path / "events.ndjson"
        append(log, event_line(1))
        cli = spawn("run", str(log), *fast_args(fake, tmp_path / "state"),
                    env={"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
        assert wait_until(lambda: "READY" in ns.kinds())
        assert fake.wait_for(1)
        cli.signal(signal.SIGTERM)
        assert cli.wait() == 0
        assert wait_until(lambda: "STOPPING" in ns.kinds(), timeout=3)
        assert ns.kinds() == ["READY", "STOPPING"]  # WATCHDOG_PID names another process
    finally:
        ns.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.ready("x") and notifier.watchdog_usec is None


def test_unreachable_notify_socket_does_not_stop_the_service(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert notifier.ready("x") is False  # logged once, never raised
