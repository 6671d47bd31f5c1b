"""Failure modes of the process itself: signals during start-up, a worker thread crashing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from kit import SECRET, Cli, cli_env, event_line, fast_args, read_checkpoints


def test_sigterm_during_startup_is_a_clean_stop(fake, tmp_path: Path) -> None:
    """The handlers are installed before anything starts: an early SIGTERM exits 0, not -15."""
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(10)))
    for delay in (0.3, 0.5, 0.7):
        proc = subprocess.Popen([sys.executable, "-m", "forwarder", "run", str(log), *fast_args(fake, tmp_path / "s")],
                                env=cli_env(STATSIG_SERVER_SECRET_KEY=SECRET, FORWARDER_LOG_FORMAT="json"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        cli = Cli(proc)
        deadline = time.monotonic() + 20
        while b"forwarding to Statsig" not in bytes(cli.stderr) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay / 10)
        proc.send_signal(signal.SIGTERM)
        assert cli.wait(30) == 0, bytes(cli.stderr).decode()


def test_a_crashed_worker_thread_is_loud_and_exits_non_zero(fake, tmp_path: Path) -> None:
    """A bug that kills a sender must not end in a silent exit 0 with events left behind."""
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(50)))
    state = tmp_path / "state"
    # sitecustomize-style injection: make the sink raise an unexpected error on its first send
    boom = tmp_path / "boom"
    boom.mkdir()
    (boom / "sitecustomize.py").write_text(
        "import forwarder.delivery.sink as s\n"
        "def send(self, events, retry_count=0):\n"
        "    raise RuntimeError('injected bug')\n"
        "s.StatsigSink.send = send\n"
    )
    env = cli_env(STATSIG_SERVER_SECRET_KEY=SECRET, FORWARDER_LOG_FORMAT="json", PYTHONPATH=str(boom))
    proc = subprocess.Popen([sys.executable, "-m", "forwarder", "run", "--once", str(log), *fast_args(fake, state),
                             "--shutdown-timeout", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    cli = Cli(proc)
    assert cli.wait(30) == 1
    rec = cli.wait_log("internal error in thread")
    assert rec["level"] == "critical" and "injected bug" in rec.get("exc", "")
    assert fake.event_count == 0
    assert not (state / "checkpoints.json").exists() or not read_checkpoints(state), "nothing acknowledged"
