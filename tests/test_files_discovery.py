"""Scenario tests: globs, exclude, symlinks, ignore_older, many files, --poll."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kit import assert_exactly_once, logs_dir, read_checkpoints, run, seqs, wait_seqs, wait_until, write


def test_new_files_matching_recursive_glob_are_found_and_exclude_is_honoured(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    write(logs / "a.ndjson", range(10))
    cli = run(spawn, fake, tmp_path / "state", str(logs / "**" / "*.ndjson"), "--exclude", "*debug*",
              "--glob-interval", "30")  # only directory events can find the new files in time
    wait_seqs(fake, range(10))
    (logs / "svc" / "deep").mkdir(parents=True)
    write(logs / "svc" / "deep" / "b.ndjson", range(10, 20))
    write(logs / "svc" / "c.ndjson", range(20, 30))
    write(logs / "svc" / "debug.ndjson", range(1000, 1010))  # excluded
    write(logs / "svc" / "c.txt", range(2000, 2010))  # not matched
    assert_exactly_once(fake, range(30))
    assert cli.stop() == 0


def test_file_reached_through_two_paths_is_read_once(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    real = logs / "app-1.ndjson"
    write(real, range(20))
    os.symlink(real, logs / "current.ndjson")
    os.link(real, logs / "hardlink.ndjson")
    cli = run(spawn, fake, tmp_path / "state", str(logs / "*.ndjson"), str(logs / "current.ndjson"))
    wait_seqs(fake, range(20))
    write(real, range(20, 30))
    assert_exactly_once(fake, range(30))
    assert cli.stop() == 0


def test_symlink_whose_target_rotates(spawn, fake, tmp_path):
    # Kubernetes: /var/log/containers/x.log -> /var/log/pods/.../0.log, rotated by kubelet.
    pods = tmp_path / "pods"
    pods.mkdir()
    containers = logs_dir(tmp_path)
    target = pods / "0.log"
    write(target, range(20))
    os.symlink(target, containers / "app.log")
    cli = run(spawn, fake, tmp_path / "state", str(containers / "*.log"), "--glob-interval", "0.3")
    wait_seqs(fake, range(20))
    write(target, range(20, 25))  # no event in the watched dir: found by polling
    os.rename(target, pods / "0.log.20260101")
    write(pods / "0.log.20260101", range(25, 30))
    write(target, range(30, 40))
    assert_exactly_once(fake, range(40))
    assert cli.stop() == 0


def test_ignore_older_skips_old_files_until_they_change(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    old = logs / "old.ndjson"
    write(old, range(1000, 1010))
    day_ago = time.time() - 86400
    os.utime(old, (day_ago, day_ago))
    write(logs / "new.ndjson", range(10))
    cli = run(spawn, fake, tmp_path / "state", str(logs / "*.ndjson"), "--ignore-older", "3600")
    wait_seqs(fake, range(10))
    cli.wait_log("older than ignore_older")
    write(old, range(10, 15))  # only what is written after it came back to life
    assert_exactly_once(fake, range(15))
    assert cli.stop() == 0


def test_many_files_with_a_small_open_file_cap(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    for i in range(20):
        write(logs / f"f{i:02d}.ndjson", range(i * 100, i * 100 + 5))
    cli = run(spawn, fake, tmp_path / "state", str(logs / "*.ndjson"), "--max-open-files", "4")
    wait_seqs(fake, [i * 100 + j for i in range(20) for j in range(5)])
    for i in range(20):  # every file grows again after it was parked
        write(logs / f"f{i:02d}.ndjson", range(i * 100 + 5, i * 100 + 10))
    assert_exactly_once(fake, [i * 100 + j for i in range(20) for j in range(10)])
    pid = cli.proc.pid
    open_logs = [fd for fd in os.listdir(f"/proc/{pid}/fd") if _points_into(pid, fd, logs)]
    assert len(open_logs) <= 4
    assert cli.stop() == 0


def _points_into(pid: int, fd: str, d: Path) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(d) + "/")
    except OSError:
        return False


def test_poll_mode_follows_appends_and_rotation(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    write(f, range(10))
    cli = run(spawn, fake, tmp_path / "state", str(f), "--poll")
    assert cli.wait_log("watching for changes")["mode"] == "polling"
    wait_seqs(fake, range(10))
    write(f, range(10, 20))
    os.rename(f, logs / "events.ndjson.1")
    write(f, range(20, 30))
    assert_exactly_once(fake, range(30))
    assert cli.stop() == 0


def test_checkpoint_of_a_file_gone_expires_after_checkpoint_ttl(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    state = tmp_path / "state"
    write(logs / "a.ndjson", range(10))
    write(logs / "b.ndjson", range(10, 20))
    cli = run(spawn, fake, state, str(logs / "a.ndjson"), str(logs / "*.ndjson"))
    assert_exactly_once(fake, range(20))
    assert cli.stop() == 0
    assert len(read_checkpoints(state)) == 2
    (logs / "b.ndjson").rename(tmp_path / "elsewhere.ndjson")  # gone from the paths, not deleted
    cli = run(spawn, fake, state, str(logs / "*.ndjson"), "--checkpoint-ttl", "0.5")
    assert wait_until(lambda: len(read_checkpoints(state)) == 1, 10)
    cli.wait_log("expired checkpoints")
    assert cli.stop() == 0
    assert seqs(fake) == list(range(20))
