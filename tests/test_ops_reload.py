"""`statsig-forwarder reload --pid`: waits for the running forwarder's answer, exit code tells it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fake_statsig import FakeStatsig
from kit import Cli, append, cli_env, event_line, fast_args, seqs, write_config


def reload(pid: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forwarder", "reload", "--pid", str(pid), *args],
                          capture_output=True, text=True, timeout=30, env=cli_env())


def test_reload_command_reports_applied_refused_and_missing_process(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    a = tmp_path / "a.ndjson"
    config = tmp_path / "forwarder.toml"
    write_config(config, [a], batch_size=500)
    cli = spawn("run", "--config", str(config), *fast_args(fake, tmp_path / "state"))
    append(a, b"".join(event_line(i) for i in range(5)))
    assert fake.wait_for(5)

    write_config(config, [a], batch_size=2, max_in_flight=4)
    done = reload(cli.proc.pid)
    assert done.returncode == 0, done.stderr
    assert "applied: batch_size" in done.stdout
    assert "needs a restart to take effect: max_in_flight" in done.stdout
    # it returned once the reload had happened: what is appended now goes in batches of 2
    append(a, b"".join(event_line(i) for i in range(5, 11)))
    assert fake.wait_for(11)
    assert [len(r.events) for r in fake.accepted_requests()[-3:]] == [2, 2, 2]

    config.write_text("paths = [unclosed\n")
    refused = reload(cli.proc.pid)
    assert refused.returncode == 1
    assert "reload refused" in refused.stderr and "cannot read config file" in refused.stderr
    append(a, b"".join(event_line(i) for i in range(11, 15)))  # still running on the previous config
    assert fake.wait_for(15)
    assert [len(r.events) for r in fake.accepted_requests()[-2:]] == [2, 2]

    config.write_text('paths = ["x"]\nbatch_size = 0\n')
    with open(tmp_path / "journal", "w") as journal:  # as under ExecReload=: stderr is the journal
        st = os.fstat(journal.fileno())
        invalid = subprocess.run([sys.executable, "-m", "forwarder", "reload", "--pid", str(cli.proc.pid)],
                                 stdout=subprocess.PIPE, stderr=journal, text=True, timeout=30,
                                 env=cli_env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"))
    assert invalid.returncode == 1
    assert (tmp_path / "journal").read_text().startswith("<3>reload refused") and "batch_size" in (
        tmp_path / "journal").read_text()

    assert cli.stop() == 0
    gone = reload(cli.proc.pid)
    assert gone.returncode == 2 and f"no process {cli.proc.pid}" in gone.stderr
    assert sorted(seqs(fake)) == list(range(15))


def test_reload_command_times_out_on_a_process_that_is_not_a_forwarder(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                "signal.signal(signal.SIGHUP, signal.SIG_IGN); time.sleep(30)"])
    try:
        lost = reload(sleeper.pid)
        assert lost.returncode == 2 and "cannot find the state directory" in lost.stderr
        (tmp_path / "state").mkdir()
        late = reload(sleeper.pid, "--state-dir", str(tmp_path / "state"), "--timeout", "0.5")
        assert late.returncode == 2 and "no answer" in late.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
