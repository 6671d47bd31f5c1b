"""`status` and `top` against a running forwarder (and `status` against a stopped one)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fake_statsig import FakeStatsig
from kit import Cli, Http, P, Tmux, append, cli_env, event_line, fast_args, tmux_session, wait_until


def status(state: Path, *args: str) -> tuple[int, Any]:
    done = subprocess.run([sys.executable, "-m", "forwarder", "status", "--state-dir", str(state), *args],
                          capture_output=True, text=True, timeout=30, env=cli_env())
    assert not done.stderr, done.stderr
    return done.returncode, orjson.loads(done.stdout) if "--json" in args else done.stdout


def test_status_live_through_an_outage_a_refused_key_and_stopped(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    log, state = tmp_path / "events.ndjson", tmp_path / "state"
    append(log, b"".join(event_line(i) for i in range(10)))
    cli = spawn("run", str(log), *fast_args(fake, state), "--metrics-listen", "127.0.0.1:0")
    http = Http(cli)  # the conditions waited for are read from /metrics directly: quicker than `status`
    assert fake.wait_for(10)
    delivered_size = log.stat().st_size
    assert wait_until(lambda: http.value(P + "file_delivered_offset_bytes", path=str(log)) == delivered_size)

    fake.fail_always(503)
    append(log, b"".join(event_line(i) for i in range(10, 15)))
    assert wait_until(lambda: http.value(P + "sink_state", state="retrying") == 1)
    code, doc = status(state, "--json", "--interval", "0.3")
    assert code == 0
    assert doc["source"] == "live" and doc["running"] is True and doc["pid"] == cli.proc.pid
    assert doc["ready"] is True and doc["statsig_text"] == "retrying"
    assert "delivery failed, will retry: " in doc["last_error"]["message"]
    assert doc["last_error"]["level"] == "warning"
    # the metric carries a bounded reason code, the text comes from /readyz
    assert doc["last_error"]["reason"] == "delivery_failed"
    assert http.value(P + "last_error_info", level="warning", reason="delivery_failed") == 1
    assert [ls for (n, ls) in http.metrics() if n == P + "last_error_info"] == [
        (("level", "warning"), ("reason", "delivery_failed"))]
    assert doc["events"]["read"] == 15 and doc["events"]["delivered"] == 10
    assert doc["events"]["delivered_per_s"] == 0
    assert doc["dead_letter"] == {"invalid": 0, "rejected_by_statsig": 0, "total": 0}
    [f] = doc["files"]
    assert f["path"] == str(log) and f["size"] == log.stat().st_size and f["offset"] == delivered_size
    assert f["bytes_behind"] == log.stat().st_size - delivered_size == doc["bytes_behind"]
    assert f["seconds_behind"] > 0 and f["bytes_per_s"] == 0
    assert doc["oldest_undelivered_age_s"] > 0

    fake.clear_faults()
    fake.fail_always(401)
    append(log, event_line(15))
    assert wait_until(lambda: http.value(P + "sink_state", state="auth_failed") == 1)
    code, text = status(state)
    assert "Statsig: refusing the key   NOT READY (statsig refuses the key" in text
    assert "last problem (" in text and "error): delivery failed, will retry" in text

    fake.clear_faults()
    assert fake.wait_for(16)
    assert wait_until(lambda: http.value(P + "file_bytes_behind", path=str(log)) == 0)
    code, doc = status(state, "--json", "--interval", "0")
    assert doc["statsig"] == "ok" and doc["ready"] is True and doc["events"]["delivered"] == 16

    assert cli.stop() == 0
    code, doc = status(state, "--json")
    assert code == 3
    assert doc["source"] == "state_dir" and doc["running"] is False and doc["statsig"] == "stopped"
    assert [(f["path"], f["offset"], f["bytes_behind"]) for f in doc["files"]] == [(str(log), log.stat().st_size, 0)]
    code, text = status(state)
    assert code == 3 and text.startswith("statsig-forwarder: not running")


# -- top, in a real terminal ------------------------------------------------------------------

@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    with tmux_session(tmp_path) as t:
        yield t


def lag_line(screen: str) -> str:
    return next((line for line in screen.splitlines() if line.startswith("lag: ")), "")


def test_top_shows_the_lag_draining_as_statsig_recovers(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path, tmux: Tmux
) -> None:
    log, state = tmp_path / "events.ndjson", tmp_path / "state"
    fake.fail_always(503)
    append(log, b"".join(event_line(i) for i in range(600)))
    cli = spawn("run", str(log), *fast_args(fake, state), "--metrics-listen", "127.0.0.1:0",
                "--batch-size", "20", "--max-in-flight", "1")
    cli.wait_log("metrics listening")
    done = tmp_path / "top.exit"
    tmux.start(f"{sys.executable} -m forwarder top --state-dir {state} --interval 0.3; echo $? > {done}; sleep 30",
               tmp_path)
    assert wait_until(lambda: "Statsig: retrying" in tmux.screen(), timeout=20), tmux.screen()
    screen = tmux.screen()
    assert f"pid {cli.proc.pid} at http://" in screen
    assert "last problem (" in screen and "delivery failed, will retry" in screen
    assert not lag_line(screen).startswith("lag: 0 B") and "events.ndjson" in screen

    fake.latency = 0.1  # 30 batches one at a time: a few seconds of draining to watch
    fake.clear_faults()
    seen: list[str] = []

    def draining() -> bool:
        seen.append(tmux.screen())
        return "draining" in lag_line(seen[-1]) and "Statsig: ok" in seen[-1]

    assert wait_until(draining, timeout=20), seen[-1]
    assert "caught up in ~" in lag_line(seen[-1])
    assert wait_until(lambda: lag_line(tmux.screen()).startswith("lag: 0 B behind, caught up"), timeout=30), \
        tmux.screen()
    assert fake.wait_for(600)

    tmux.keys("q")
    assert wait_until(done.exists, timeout=10) and wait_until(lambda: done.read_text().strip() != "", timeout=5)
    assert done.read_text().strip() == "0"

    interrupted = tmp_path / "top-ctrl-c.exit"
    tmux.start(f"{sys.executable} -m forwarder top --state-dir {state}; echo $? > {interrupted}; sleep 30",
               tmp_path, session="ctrl-c")
    assert wait_until(lambda: "lag: 0 B behind" in tmux.screen(), timeout=20), tmux.screen()
    tmux.keys("C-c")
    assert wait_until(lambda: interrupted.exists() and interrupted.read_text().strip() != "", timeout=10)
    assert interrupted.read_text().strip() == "0"
    assert cli.stop() == 0
