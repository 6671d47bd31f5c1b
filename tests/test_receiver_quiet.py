"""An idle receiver sleeps until a request comes (issue 20): no uvicorn tick, yet a fresh Date
header on every answer and a prompt stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
from kit import Cli


def _voluntary_switches(pid: int) -> int:
    """Times the process's threads blocked (woke up) so far, from /proc."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                total += int(line.split()[1])
    return total


def test_an_idle_receiver_does_not_wake_and_still_dates_its_answers(
    spawn: Callable[..., Cli], tmp_path: Path
) -> None:
    cli = spawn("receive", "--listen", "127.0.0.1:0", str(tmp_path / "events.ndjson"))
    url = "http://" + cli.wait_log("receiver listening")["address"]
    time.sleep(1.0)  # start-up done
    before = _voluntary_switches(cli.proc.pid)
    time.sleep(3.0)
    woke = _voluntary_switches(cli.proc.pid) - before
    assert woke < 10, f"{woke} wake-ups in 3 idle seconds"  # uvicorn's tick alone: 30, receive's own: 6
    event = {"event_name": "signup", "user_id": "u1"}
    with httpx.Client(base_url=url) as c:
        first = c.post("/v1/analytics/events", json=event)
        assert first.status_code == 200, first.text
        time.sleep(1.5)
        second = c.post("/v1/analytics/events", json=event)
        assert second.status_code == 200
    d1, d2 = (parsedate_to_datetime(r.headers["date"]).timestamp() for r in (first, second))
    assert abs(d1 - time.time()) < 10
    assert d2 >= d1 + 1  # refreshed by the request, with no timer running
    started = time.monotonic()
    assert cli.stop() == 0
    assert time.monotonic() - started < 10
