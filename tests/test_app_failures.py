"""Failure modes of the process itself: signals during start-up, a worker thread crashing,
start-up failures of every command (one `error:` line, exit 2), and what each command serves.

The crash tests run a Forwarder in this process with a sink passed in (`Forwarder(..., sink=)`),
the documented seam for delivery faults that the fake Statsig cannot produce.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kit import SECRET, Cli, busy_port, cli_env, event_line, fast_args, read_checkpoints, seqs

from forwarder.app import Forwarder
from forwarder.errors import RetryableError
from forwarder.model import StatsigEvent
from forwarder.settings import Settings, load_settings


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


def once(tmp_path: Path, lines: int) -> Settings:
    """Settings for an in-process `run --once` over a file of `lines` events."""
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(lines)))
    return load_settings(None, paths=[str(log)], state_dir=tmp_path / "state", once=True, batch_size=10,
                         flush_interval=0.1, checkpoint_interval=0.1, poll_interval=0.05, retry_initial=0.01,
                         retry_max=0.05, shutdown_timeout=1.0)


class ExplodingSink:
    """A bug in delivery: every send raises what no sink is supposed to raise."""

    def send(self, events: list[StatsigEvent], retry_count: int = 0) -> None:
        raise RuntimeError("injected bug")

    def close(self) -> None:
        pass


class FlakySink:
    """Fails the first `failures` sends with a retryable error, then records what it accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.accepted: list[dict[str, Any]] = []

    def send(self, events: list[StatsigEvent], retry_count: int = 0) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise RetryableError("injected outage", status=503)
        self.accepted.extend(e.as_dict() for e in events)

    def close(self) -> None:
        pass


def test_a_crashed_worker_thread_is_loud_and_fails_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    """A bug that kills a sender must not end in a silent success with events left behind
    (the CLI exits 1 on `failed`); nothing is acknowledged."""
    settings = once(tmp_path, 50)
    with caplog.at_level(logging.WARNING):
        result = Forwarder(settings, sink=ExplodingSink()).run()
    assert result.failed and not result.clean
    crashes = [r for r in caplog.records if r.getMessage().startswith("internal error in thread sender-")]
    assert crashes and crashes[0].levelno == logging.CRITICAL
    assert crashes[0].exc_info is not None and "injected bug" in str(crashes[0].exc_info[1])
    assert not (settings.state_dir / "checkpoints.json").exists() or not read_checkpoints(settings.state_dir)


def test_a_sink_passed_in_gets_every_event_once_and_moves_checkpoints(tmp_path: Path) -> None:
    settings = once(tmp_path, 95)
    sink = FlakySink(failures=3)
    result = Forwarder(settings, sink=sink).run()
    assert result.clean and not result.failed
    assert sorted(e["metadata"]["seq"] for e in sink.accepted) == list(range(95))
    assert result.stats["send_retries"] == 3
    size = Path(settings.paths[0]).stat().st_size
    assert [f["offset"] for f in read_checkpoints(settings.state_dir).values()] == [size]


def _non_log_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if not line.startswith("{")]


@pytest.mark.parametrize("command", ["run", "replay"])
def test_a_busy_metrics_port_is_one_error_line_and_exit_2(spawn, fake, tmp_path: Path, command: str) -> None:
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(5)))
    with busy_port() as port:
        args = ["run", "--once"] if command == "run" else ["replay"]
        cli = spawn(*args, str(log), *fast_args(fake, tmp_path / "state"), "--metrics-listen", f"127.0.0.1:{port}")
        assert cli.wait() == 2
    assert _non_log_lines(cli.stderr) == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert fake.event_count == 0


def test_replay_serves_no_receiver_so_a_busy_listen_port_does_not_stop_it(spawn, fake, tmp_path: Path) -> None:
    """`replay` used to inherit `run`'s servers: with --listen it started the receiver, and a
    busy port ended in a ServeError traceback."""
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(5)))
    with busy_port() as port:
        cli = spawn("replay", str(log), *fast_args(fake, tmp_path / "state"), "--listen", f"127.0.0.1:{port}")
        assert cli.wait() == 0, bytes(cli.stderr).decode()
    assert b"Traceback" not in cli.stderr
    assert cli.wait_log("this command serves no receiver")["level"] == "warning"
    assert sorted(seqs(fake)) == list(range(5))


@pytest.mark.parametrize("command", [["run", "x.ndjson"], ["receive", "x.ndjson"], ["replay", "x.ndjson"],
                                     ["validate", "x.ndjson"], ["check"], ["checkpoints", "list"],
                                     ["checkpoints", "reset", "--all"]], ids=" ".join)
def test_every_command_reports_a_missing_config_file_in_one_line(spawn, tmp_path: Path, command: list[str]
                                                                 ) -> None:
    cli = spawn(*command, "--config", str(tmp_path / "missing.toml"))
    assert cli.wait() == 2
    assert _non_log_lines(cli.stderr) == [f"error: config file not found: {tmp_path / 'missing.toml'}"]


def test_replay_of_a_missing_file_is_one_error_line(spawn, tmp_path: Path) -> None:
    cli = spawn("replay", "missing.ndjson", "--state-dir", str(tmp_path / "state"))
    assert cli.wait() == 2
    assert _non_log_lines(cli.stderr) == ["error: cannot read missing.ndjson: No such file or directory"]
