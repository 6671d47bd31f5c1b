"""forwarder.client's EventLog on real files: following rotation (rename, delete), the mode of a file
it creates, many processes x threads writing while the file is rotated (every line whole, each
once), and paths that cannot be written (missing directory, read-only, under a file, disk full,
file size limit): False, no exception, the fallback line logged, the error logged once per
streak, and writes succeed again once the path is writable.

Read-only and disk full use real filesystems: as root (CI) a small tmpfs mounted by the test
(remounted read-only; filled up), since root ignores permission bits; otherwise a directory
without write permission, and the file size limit (RLIMIT_FSIZE, EFBIG) for a full disk.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from forwarder.client import EventLog

ROOT = os.geteuid() == 0
FALLBACK = "[Fallback] Analytics event: {} (user: {})"
PAD = {"pad": "p" * 700}


def lines_of(*paths: Path) -> list[dict[str, object]]:
    return [orjson.loads(x) for p in paths for x in p.read_bytes().splitlines()]


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_follows_rename_and_delete_like_watched_file_handler(tmp_path):
    log = tmp_path / "events.ndjson"
    events = EventLog(log)
    with umask(0o022):
        assert events.log_event("u1", "first")
        assert (log.stat().st_mode & 0o777) == 0o640
        log.rename(tmp_path / "events.ndjson.1")  # logrotate `create`, without creating
        assert events.log_event("u1", "second")
        log.unlink()
        assert events.log_event("u1", "third")
        log.rename(tmp_path / "events.ndjson.2")
        log.write_bytes(b"")  # logrotate `create`: an empty file is already there
        assert events.log_event("u1", "fourth")
    assert [x["event_name"] for x in lines_of(tmp_path / "events.ndjson.1")] == ["first"]
    assert [x["event_name"] for x in lines_of(tmp_path / "events.ndjson.2")] == ["third"]
    assert [x["event_name"] for x in lines_of(log)] == ["fourth"]
    events.close()


def test_a_created_file_gets_the_configured_mode(tmp_path):
    with umask(0o022):
        assert EventLog(tmp_path / "a.ndjson", mode=0o600).log_event("u1", "x")
        assert EventLog(tmp_path / "b.ndjson", mode=0o644).log_event("u1", "x")
    assert (tmp_path / "a.ndjson").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "b.ndjson").stat().st_mode & 0o777 == 0o644


WRITER = r"""
import sys, threading
from forwarder.client import EventLog
path, proc, threads, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
events = EventLog(path)
failed = []
def work(t):
    for i in range(n):
        # sizes from 100 bytes to 9 KB: over PIPE_BUF and over a page, where a torn write would show
        meta = {"p": proc, "t": t, "i": i, "pad": "x" * ((i * 997 + t * 131 + proc * 17) % 9000)}
        if not events.log_event(f"u{proc}", "interleave", i, meta):
            failed.append(i)
ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
sys.exit(1 if failed else 0)
"""


def test_processes_and_threads_never_interleave_lines_even_while_rotating(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "events.ndjson"
    procs, threads, n = 4, 4, 1500
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(p), str(threads), str(n)])
               for p in range(procs)]
    rotations = 0
    while any(w.poll() is None for w in writers):
        time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            log.rename(logs / f"events.ndjson.{rotations}")
            rotations += 1
    assert [w.wait() for w in writers] == [0] * procs
    seen: collections.Counter[tuple[int, int, int]] = collections.Counter()
    for f in logs.iterdir():
        data = f.read_bytes()
        assert data.endswith(b"\n") or not data
        for raw in data.splitlines():
            doc = orjson.loads(raw)  # a torn or interleaved line would not parse
            meta = doc["metadata"]
            assert doc["value"] == meta["i"] and len(meta["pad"]) == (meta["i"] * 997 + meta["t"] * 131
                                                                       + meta["p"] * 17) % 9000
            seen[(meta["p"], meta["t"], meta["i"])] += 1
    assert rotations >= 5
    assert set(seen) == {(p, t, i) for p in range(procs) for t in range(threads) for i in range(n)}
    assert max(seen.values()) == 1


# -- paths that cannot be written -------------------------------------------------------------
def sh(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{args}: {done.stderr}"


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    path.mkdir()
    sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@contextlib.contextmanager
def unwritable_dir(d: Path) -> Iterator[Path]:
    """A directory nobody can create files in (a read-only tmpfs as root; no write permission
    otherwise); `writable(d)` makes it writable again."""
    if ROOT:
        with tmpfs(d):
            sh("mount", "-o", "remount,ro", str(d))
            yield d
    else:
        d.mkdir()
        d.chmod(0o555)
        try:
            yield d
        finally:
            d.chmod(0o755)


def writable(d: Path) -> None:
    if ROOT:
        sh("mount", "-o", "remount,rw", str(d))
    else:
        d.chmod(0o755)


def check_failure_streak(events: EventLog, caplog: pytest.LogCaptureFixture, make_writable, what: str,
                         streak_began: bool = False) -> None:
    """Three failing calls: False, no exception, their fallback lines, the error once (not again
    when `streak_began` already logged it); then writable: True."""
    caplog.clear()
    with caplog.at_level(logging.INFO, "forwarder.client"):
        # as big as the events that filled the disk: a smaller one might still fit
        assert events.log_event("u1", "lost_one", None, PAD) is False
        assert events.log_event({"userID": "u2"}, "lost_two", 2, PAD) is False
        assert events.log_events([{"event_name": "lost_three", "user_id": "u3", "metadata": PAD}]) is False
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == (0 if streak_began else 1), [r.getMessage() for r in errors]
        assert streak_began or what in errors[0].getMessage(), errors[0].getMessage()
        text = caplog.text
        for name, user in (("lost_one", "u1"), ("lost_two", "u2"), ("lost_three", "u3")):
            assert FALLBACK.format(name, user) in text
        make_writable()
        assert events.log_event("u1", "back") is True
        assert "is writable again" in caplog.text
        assert events.log_event("u1", "back_again") is True


def test_missing_directory(tmp_path, caplog):
    d = tmp_path / "not-yet"
    events = EventLog(d / "events.ndjson")
    check_failure_streak(events, caplog, d.mkdir, "No such file or directory")
    assert [x["event_name"] for x in lines_of(d / "events.ndjson")] == ["back", "back_again"]


def test_read_only_directory(tmp_path, caplog):
    with unwritable_dir(tmp_path / "ro") as d:
        events = EventLog(d / "events.ndjson")
        what = "Read-only file system" if ROOT else "Permission denied"
        check_failure_streak(events, caplog, lambda: writable(d), what)
        assert [x["event_name"] for x in lines_of(d / "events.ndjson")] == ["back", "back_again"]
        events.close()


def test_path_under_a_file(tmp_path, caplog):
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the directory should be")
    events = EventLog(blocker / "events.ndjson")

    def fix() -> None:
        blocker.unlink()
        blocker.mkdir()

    check_failure_streak(events, caplog, fix, "Not a directory")


def test_disk_full(tmp_path, caplog):
    if not ROOT:  # without mount rights a full device is the file size limit (the next test)
        run_under_file_size_limit(tmp_path)
        return
    with tmpfs(tmp_path / "small", "64k") as d:
        log = d / "events.ndjson"
        events = EventLog(log)
        filler = d / "filler"
        with open(filler, "wb") as f, contextlib.suppress(OSError):
            f.write(b"\0" * (56 * 1024))
        written = 0
        caplog.clear()
        while events.log_event("u1", "fill", written, PAD):  # until the device is full
            written += 1
            assert written < 1000
        assert written >= 1
        # The call that hit the full device left no partial line behind.
        assert log.read_bytes().endswith(b"\n")
        assert [x["value"] for x in lines_of(log)] == list(range(written))
        (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert "no space" in error and "short write" in error and "undone" in error, error
        check_failure_streak(events, caplog, filler.unlink, "no space", streak_began=True)
        assert [x["event_name"] for x in lines_of(log)][-2:] == ["back", "back_again"]
        events.close()


LIMITED = r"""
import logging, resource, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from forwarder.client import EventLog
path = sys.argv[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
events = EventLog(path)
n = 0
while events.log_event("u1", "fill", n, {"pad": "p" * 700}):
    n += 1
assert not events.log_event("u1", "lost_again", None, {"pad": "p" * 700})
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
assert events.log_event("u1", "back")
print(n)
"""


def run_under_file_size_limit(tmp_path: Path) -> None:
    log = tmp_path / "limited.ndjson"
    done = subprocess.run([sys.executable, "-c", LIMITED, str(log)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    n = int(done.stdout)
    assert n >= 10
    got = lines_of(log)  # the short write at the limit was undone: every line whole
    assert [x["value"] for x in got[:-1]] == list(range(n)) and got[-1]["event_name"] == "back"
    assert done.stderr.count("ERROR") == 1 and "no space" in done.stderr and "file size limit" in done.stderr
    assert FALLBACK.format("fill", "u1") in done.stderr and FALLBACK.format("lost_again", "u1") in done.stderr
    assert "is writable again" in done.stderr


def test_file_size_limit(tmp_path):
    run_under_file_size_limit(tmp_path)


def test_many_threads_share_one_event_log_across_a_failure(tmp_path):
    """Threads writing while the directory disappears and comes back: no exception, every True is in a file."""
    d = tmp_path / "logs"
    d.mkdir()
    events = EventLog(d / "events.ndjson")
    ok: collections.Counter[int] = collections.Counter()
    stop = threading.Event()

    def work(t: int) -> None:
        i = 0
        while not stop.is_set():
            if events.log_event("u1", "t", t * 1_000_000 + i):
                ok[t * 1_000_000 + i] += 1
            i += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for k in range(5):
        time.sleep(0.05)
        (d / "events.ndjson").rename(tmp_path / f"kept.{k}")
        d.rename(tmp_path / f"gone.{k}")
        time.sleep(0.02)
        d.mkdir()
    stop.set()
    for t in threads:
        t.join()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    values = collections.Counter(x["value"] for x in lines_of(*files))
    assert set(ok) <= set(values) and max(values.values()) == 1
    events.close()


def test_a_forked_child_keeps_writing_even_if_a_thread_held_the_lock(tmp_path):
    """A pre-forking server (gunicorn --preload) forks while another thread is inside a write."""
    log = tmp_path / "events.ndjson"
    events = EventLog(log)
    assert events.log_event("u1", "parent_before")
    events._lock.acquire()  # another thread mid-write at the moment of fork
    pid = os.fork()
    if pid == 0:  # the child: the lock was reset at fork, the descriptor is shared (O_APPEND)
        os._exit(0 if events.log_event("u1", "child") else 1)
    events._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert events.log_event("u1", "parent_after")
    assert [x["event_name"] for x in lines_of(log)] == ["parent_before", "child", "parent_after"]
    events.close()
