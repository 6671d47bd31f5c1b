"""Counts stay current while the reader waits on back-pressure (Statsig down, window full)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
from fake_statsig import FakeStatsig
from kit import Cli, Http, P, append, assert_exactly_once, cli_env, event_line, fast_args, wait_until

N = 3000  # one read chunk (about 500 KB), far more than the window: 1 request in flight + 1 queued, 100 each


def test_lines_read_published_while_the_reader_is_blocked_on_an_outage(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    log, state = tmp_path / "events.ndjson", tmp_path / "state"
    append(log, b"".join(event_line(i) for i in range(N)))
    fake.fail_always(503)
    cli = spawn("run", str(log), *fast_args(fake, state), "--metrics-listen", "127.0.0.1:0",
                "--batch-size", "100", "--max-in-flight", "1")
    http = Http(cli)
    assert wait_until(lambda: http.value(P + "events_retried_total", source="file") >= 200, timeout=10)

    # The reader is stuck mid-chunk in the queue (most of the file unread), yet what it read shows.
    assert wait_until(lambda: http.value(P + "lines_read_total", source="file") > 0, timeout=3)
    lines = http.value(P + "lines_read_total", source="file")
    assert 0 < lines < N
    assert http.value(P + "events_read_total", source="file") == lines
    done = subprocess.run([sys.executable, "-m", "forwarder", "status", "--state-dir", str(state), "--json",
                           "--interval", "0"], capture_output=True, timeout=30, env=cli_env())
    doc = orjson.loads(done.stdout)
    assert doc["events"]["read"] > 0 and doc["events"]["delivered"] == 0 and doc["events"]["retried"] > 0

    fake.clear_faults()
    assert_exactly_once(fake, range(N))  # counted once: published partial counts are not added again
    assert wait_until(lambda: http.value(P + "lines_read_total", source="file") == N)
    assert http.value(P + "events_read_total", source="file") == N
    assert cli.stop() == 0
