"""A log directory that does not exist yet is waited for: said once, picked up when it appears."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fake_statsig import FakeStatsig
from kit import Cli, Http, append, event_line, fast_args, seqs


def test_missing_log_directory_is_waited_for_and_picked_up(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    logs = tmp_path / "var-log-app"  # does not exist yet
    cli = spawn("run", str(logs / "events.ndjson"), str(logs / "more" / "*.ndjson"),
                *fast_args(fake, tmp_path / "state"), "--metrics-listen", "127.0.0.1:0")
    http = Http(cli)
    waiting = cli.wait_log("waiting for paths to appear")
    assert waiting["level"] == "warning"
    assert waiting["paths"] == [str(logs / "events.ndjson"), str(logs / "more" / "*.ndjson")]
    status, body = http.ready()
    assert status == 200 and body["ready"] is True  # nothing is wrong; see forwarder/health.py
    assert body["reasons"] == [f"no files yet: waiting for {logs / 'events.ndjson'}, {logs / 'more' / '*.ndjson'}"]
    assert http.value("statsig_forwarder_files_open") == 0

    (logs / "more").mkdir(parents=True)
    append(logs / "more" / "a.ndjson", b"".join(event_line(i) for i in range(3)))
    append(logs / "events.ndjson", b"".join(event_line(i) for i in range(3, 6)))
    assert fake.wait_for(6, timeout=15)
    cli.wait_log("paths appeared, following them")
    status, body = http.ready()
    assert (status, body["ready"], body["reasons"]) == (200, True, [])
    assert body["last_problem"]["reason"] == "waiting_for_paths_to_appear"  # the last warning, kept for status
    assert cli.stop() == 0
    assert sorted(seqs(fake)) == list(range(6))
    assert sum("waiting for paths to appear" in r.get("msg", "") for r in cli.logs()) == 1
