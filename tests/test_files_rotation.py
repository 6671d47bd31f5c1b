"""Scenario tests: restart, rename rotation, delete: the real CLI, real files, the fake Statsig."""

from __future__ import annotations

import os
import threading
import time

from kit import (
    assert_exactly_once,
    assert_no_loss,
    deliver_and_stop,
    event_line,
    fast_args,
    logs_dir,
    read_checkpoints,
    run,
    seqs,
    wait_seqs,
    wait_until,
    write,
)


def test_restart_resumes_at_saved_position(spawn, fake, tmp_path):
    f = logs_dir(tmp_path) / "events.ndjson"
    state = tmp_path / "state"
    write(f, range(50))
    deliver_and_stop(spawn, fake, state, range(50), str(f))
    assert next(iter(read_checkpoints(state).values()))["offset"] == f.stat().st_size
    write(f, range(50, 100))
    cli = run(spawn, fake, state, str(f))
    assert_exactly_once(fake, range(100))
    assert cli.stop() == 0


def test_partial_line_across_restart_is_delivered_once_whole(spawn, fake, tmp_path):
    f = logs_dir(tmp_path) / "events.ndjson"
    state = tmp_path / "state"
    last = event_line(5)
    with open(f, "wb") as out:
        out.write(b"".join(event_line(i) for i in range(5)) + last[:40])
    deliver_and_stop(spawn, fake, state, range(5), str(f))
    with open(f, "ab") as out:
        out.write(last[40:] + event_line(6))
    cli = run(spawn, fake, state, str(f))
    assert_exactly_once(fake, range(7))
    assert cli.stop() == 0
    assert not (state / "dead-letter.ndjson").exists()


def test_rename_rotation_old_file_written_after_rename_is_drained(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    writer = open(f, "ab", buffering=0)  # noqa: SIM115 - held open across the rename
    writer.write(b"".join(event_line(i) for i in range(20)))
    cli = run(spawn, fake, tmp_path / "state", str(f))
    wait_seqs(fake, range(20))
    os.rename(f, logs / "events.ndjson.1")  # logrotate: rename, then create
    writer.write(b"".join(event_line(i) for i in range(20, 30)))  # the app still writes the old file
    time.sleep(0.2)
    write(f, range(30, 40))
    writer.write(event_line(40))
    writer.close()
    assert_exactly_once(fake, range(41))
    cli.wait_log("released rotated file")
    assert cli.stop() == 0


def test_twenty_rotations_under_steady_writes_lose_nothing(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    f.touch()
    cli = run(spawn, fake, tmp_path / "state", str(f))
    cli.wait_log("watching for changes")
    total = 0
    for rotation in range(20):
        with open(f, "ab", buffering=0) as out:
            for _ in range(15):
                out.write(event_line(total))
                total += 1
                time.sleep(0.002)
            os.rename(f, logs / f"events.ndjson.{rotation}")
            out.write(event_line(total))  # one more into the renamed file
            total += 1
        f.touch()
        time.sleep(0.05)
    assert_exactly_once(fake, range(total))
    assert cli.stop() == 0


def test_very_fast_rotations_with_rotated_names_in_the_glob(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    write(f, range(10))
    cli = run(spawn, fake, tmp_path / "state", str(logs / "events.ndjson*"))
    wait_seqs(fake, range(10))
    n = 10
    for rotation in range(5):  # faster than any scan: only fingerprints can sort this out
        write(f, range(n, n + 10))
        n += 10
        os.rename(f, logs / f"events.ndjson.{rotation}")
    write(f, range(n, n + 10))
    n += 10
    assert_exactly_once(fake, range(n))
    assert cli.stop() == 0


def test_rotation_while_stopped_resumes_old_file_and_reads_new(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    state = tmp_path / "state"
    write(f, range(30))
    deliver_and_stop(spawn, fake, state, range(30), str(logs / "events.ndjson*"))
    write(f, range(30, 40))  # written before the rotation, while we were down
    os.rename(f, logs / "events.ndjson.1")
    write(f, range(40, 60))
    cli = run(spawn, fake, state, str(logs / "events.ndjson*"))
    assert_exactly_once(fake, range(60))
    assert cli.stop() == 0


def test_rotate_wait_expiring_while_sink_down_keeps_unread_bytes(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    write(f, range(2000))
    fake.fail_always(503)
    cli = spawn("run", str(f), "--batch-size", "20", "--max-in-flight", "1",
                *fast_args(fake, tmp_path / "state"))
    wait_until(lambda: len(fake.requests) >= 3)
    os.rename(f, logs / "rotated.ndjson")  # not matched: only the open descriptor can finish it
    write(f, range(2000, 2010))
    time.sleep(1.5)  # rotate_wait (0.5 s) passes many times over while nothing can be delivered
    fake.clear_faults()
    assert_exactly_once(fake, range(2010))
    assert cli.stop() == 0


def test_deleted_file_is_read_to_its_end_then_closed(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    write(f, range(500))
    fake.fail_always(503)
    cli = spawn("run", str(f), "--batch-size", "20", "--max-in-flight", "1",
                *fast_args(fake, tmp_path / "state"))
    wait_until(lambda: len(fake.requests) >= 2)
    f.unlink()  # still open: its unread lines are read before it is let go
    time.sleep(0.8)
    fake.clear_faults()
    assert_exactly_once(fake, range(500))
    cli.wait_log("released deleted file")
    pid = cli.proc.pid
    wait_until(lambda: not any("(deleted)" in os.readlink(f"/proc/{pid}/fd/{fd}")
                               for fd in os.listdir(f"/proc/{pid}/fd") if _link_ok(pid, fd)))
    assert not any("events.ndjson" in os.readlink(f"/proc/{pid}/fd/{fd}")
                   for fd in os.listdir(f"/proc/{pid}/fd") if _link_ok(pid, fd))
    assert cli.stop() == 0


def _link_ok(pid: int, fd: str) -> bool:
    try:
        os.readlink(f"/proc/{pid}/fd/{fd}")
        return True
    except OSError:
        return False


def test_delete_and_recreate_same_path_is_read_from_start(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    state = tmp_path / "state"
    write(f, range(40))
    cli = run(spawn, fake, state, str(f))
    wait_seqs(fake, range(40))
    f.unlink()
    cli.wait_log("released deleted file")
    write(f, range(40, 45))  # shorter than the old offset; may even reuse the inode
    assert_exactly_once(fake, range(45))
    assert cli.stop() == 0
    assert len(read_checkpoints(state)) == 1  # the deleted file's checkpoint is gone


def test_inode_reuse_by_a_new_file_starts_at_zero(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    state = tmp_path / "state"
    write(f, range(40))
    deliver_and_stop(spawn, fake, state, range(40), str(f))
    old_ino = f.stat().st_ino
    f.unlink()
    # Free inodes are handed out again: create files until one gets the old number.
    for i in range(200):
        g = logs / f"tmp{i}"
        g.touch()
        if g.stat().st_ino == old_ino:
            g.rename(f)
            break
    else:
        f.touch()
    write(f, range(40, 50))
    cli = run(spawn, fake, state, str(f))
    assert_exactly_once(fake, range(50))
    assert cli.stop() == 0


def test_kill9_during_steady_writes_loses_nothing(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    state = tmp_path / "state"
    stop = threading.Event()
    count = [0]

    def writer() -> None:
        while not stop.is_set() and count[0] < 3000:
            write(f, range(count[0], count[0] + 10))
            count[0] += 10
            time.sleep(0.005)

    t = threading.Thread(target=writer)
    t.start()
    cli = run(spawn, fake, state, str(f))
    wait_until(lambda: len(seqs(fake)) > 300)
    cli.kill9()
    stop.set()
    t.join()
    cli = run(spawn, fake, state, str(f))
    assert_no_loss(fake, range(count[0]))
    assert cli.stop() == 0
