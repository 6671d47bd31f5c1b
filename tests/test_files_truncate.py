"""Scenario tests: copytruncate and truncation, live and while stopped."""

from __future__ import annotations

import os
import shutil
import time

from kit import assert_exactly_once, deliver_and_stop, lines, logs_dir, run, wait_seqs, write


def test_copytruncate_live_copy_resumes_at_saved_offset(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    write(f, range(100))
    cli = run(spawn, fake, tmp_path / "state", str(logs / "events.ndjson*"))
    wait_seqs(fake, range(100))
    write(f, range(100, 150))
    shutil.copyfile(f, logs / "events.ndjson.1")  # logrotate copytruncate
    os.truncate(f, 0)
    write(f, range(150, 200))
    assert_exactly_once(fake, range(200))
    assert cli.stop() == 0


def test_copytruncate_while_stopped(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    state = tmp_path / "state"
    write(f, range(100))
    deliver_and_stop(spawn, fake, state, range(100), str(logs / "events.ndjson*"))
    write(f, range(100, 150))
    shutil.copyfile(f, logs / "events.ndjson.1")
    os.truncate(f, 0)
    write(f, range(150, 160))
    cli = run(spawn, fake, state, str(logs / "events.ndjson*"))
    assert_exactly_once(fake, range(160))
    assert cli.stop() == 0


def test_copytruncate_with_stale_writer_leaving_a_hole(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    writer = open(f, "wb", buffering=0)  # no O_APPEND: keeps its offset across the truncation  # noqa: SIM115
    writer.write(lines(range(100)))
    state = tmp_path / "state"
    cli = run(spawn, fake, state, str(logs / "events.ndjson*"))
    wait_seqs(fake, range(100))
    shutil.copyfile(f, logs / "events.ndjson.1")
    os.truncate(f, 0)
    time.sleep(0.3)
    writer.write(lines(range(100, 120)))  # lands after a hole of NULs
    writer.close()
    assert f.stat().st_size > 20 * 150
    assert_exactly_once(fake, range(120))
    assert cli.stop() == 0
    assert not (state / "dead-letter.ndjson").exists()


def test_truncate_then_append_less_than_old_offset(spawn, fake, tmp_path):
    f = logs_dir(tmp_path) / "events.ndjson"
    write(f, range(100))
    cli = run(spawn, fake, tmp_path / "state", str(f))
    wait_seqs(fake, range(100))
    os.truncate(f, 0)
    write(f, range(100, 105))
    assert_exactly_once(fake, range(105))
    assert cli.stop() == 0


def test_truncate_then_append_more_than_old_offset(spawn, fake, tmp_path):
    f = logs_dir(tmp_path) / "events.ndjson"
    write(f, range(10))
    cli = run(spawn, fake, tmp_path / "state", str(f))
    wait_seqs(fake, range(10))
    with open(f, "wb") as out:  # truncate and write more than before in one go
        out.write(lines(range(10, 100)))
    assert_exactly_once(fake, range(100))
    assert cli.stop() == 0


def test_truncated_while_stopped_is_read_from_start(spawn, fake, tmp_path):
    f = logs_dir(tmp_path) / "events.ndjson"
    state = tmp_path / "state"
    write(f, range(50))
    deliver_and_stop(spawn, fake, state, range(50), str(f))
    os.truncate(f, 0)
    write(f, range(50, 55))
    cli = run(spawn, fake, state, str(f))
    assert_exactly_once(fake, range(55))
    assert cli.stop() == 0
