"""Unit tests of the tailer, the watcher, fingerprints and the observer fallback (temp files)."""

from __future__ import annotations

import errno
import gzip
import logging
import os
import shutil
import threading
from pathlib import Path

import orjson
import pytest
from kit import event_line
from watchdog.observers.polling import PollingObserver

from forwarder.model import Chunk, Item
from forwarder.settings import load_settings
from forwarder.source import tailer as files_mod
from forwarder.source.fingerprint import fingerprint_fd, matches
from forwarder.source.tailer import FileTailer
from forwarder.source.wake import start_observer
from forwarder.state.checkpoints import Checkpoints


def _tailer(tmp_path: Path, pattern: str, scan_interval: float = 5.0) -> FileTailer:
    return FileTailer([pattern], Checkpoints(tmp_path / "state_cp"), load_settings(glob_interval=scan_interval))


def test_idle_files_are_not_read_or_statted_when_native_events_work(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(100):
        (logs / f"f{i}.ndjson").write_bytes(event_line(i))
    t = _tailer(tmp_path, str(logs / "*.ndjson"), scan_interval=3600)
    t.set_watching(True, {str(logs): False})
    first = t.poll(1 << 20)
    assert len(first) == 100
    t.poll(1 << 20)  # every file now known to be at its end
    calls = {"pread": 0, "fstat": 0, "stat": 0}
    for name in calls:
        real = getattr(os, name)

        def counting(*a: object, _real=real, _name=name, **k: object) -> object:
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(os, name, counting)
    for _ in range(50):
        assert t.poll(1 << 20) == []
    monkeypatch.undo()
    assert calls == {"pread": 0, "fstat": 0, "stat": 0}
    (logs / "f7.ndjson").open("ab").write(event_line(1007))
    t.notify(str((logs / "f7.ndjson").resolve()))
    [chunk] = t.poll(1 << 20)
    assert isinstance(chunk, Chunk) and chunk.data == event_line(1007)
    t.close()


def test_without_native_events_every_file_is_checked(tmp_path):
    f = tmp_path / "a.ndjson"
    f.write_bytes(event_line(0))
    t = _tailer(tmp_path, str(f), scan_interval=3600)
    assert len(t.poll(1 << 20)) == 1
    f.open("ab").write(event_line(1))
    [chunk] = t.poll(1 << 20)  # no notify(): polling mode reads anyway
    assert isinstance(chunk, Chunk) and chunk.data == event_line(1)
    t.close()


def test_one_busy_file_cannot_starve_the_others(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    big = event_line(0) * 20_000  # about 4 MB
    for i in range(6):
        (logs / f"f{i}.ndjson").write_bytes(event_line(i + 1) + big)  # distinct first lines
    t = _tailer(tmp_path, str(logs / "*.ndjson"))
    budget = 1 << 20
    served: set[str] = set()
    for _ in range(3):
        out = t.poll(budget)
        assert sum(len(c.data) for c in out if isinstance(c, Chunk)) <= budget + files_mod.READ_SIZE
        served.update(c.path for c in out)
    assert len(served) == 6  # every file got a turn within a few polls, none waited for the others
    t.close()


def test_fingerprint_is_first_line_capped_and_ignores_a_leading_hole(tmp_path):
    a = tmp_path / "a"
    a.write_bytes(b"first line\nsecond\n")
    b = tmp_path / "b"
    with open(b, "wb") as out:
        out.seek(1 << 20)
        out.write(b"first line\nother\n")
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fingerprint_fd(fa.fileno()) == fingerprint_fd(fb.fileno())
    c = tmp_path / "c"
    c.write_bytes(b"x" * 300)
    with open(c, "rb") as fc:
        assert fingerprint_fd(fc.fileno(), 256) is not None  # long first line: first 256 bytes
    d = tmp_path / "d"
    d.write_bytes(b'{"short":')
    with open(d, "rb") as fd:
        assert fingerprint_fd(fd.fileno()) is None  # waits
        key = fingerprint_fd(fd.fileno(), short_ok=True)
        assert key is not None and key.startswith("head9:")
    d.open("ab").write(b' 1}\n{"more": 2}\n')
    with open(d, "rb") as fd:
        assert matches(fd.fileno(), key)  # grown, still the same file


def test_native_observer_failure_falls_back_to_polling(tmp_path, caplog):
    def no_inotify() -> PollingObserver:
        raise OSError(errno.EMFILE, "inotify instance limit reached")

    wake, change = threading.Event(), threading.Event()
    watching = start_observer({str(tmp_path): False}, wake, change, False, 0.05, None, no_inotify)
    try:
        assert not watching.native
        assert isinstance(watching.observer, PollingObserver)
        assert "falling back to polling" in caplog.text
        (tmp_path / "new.ndjson").write_bytes(b"x\n")
        assert change.wait(5)  # the polling observer reports the new file
    finally:
        watching.stop()


def test_watch_limit_while_scheduling_falls_back_to_polling(tmp_path):
    class FullObserver(PollingObserver):
        def schedule(self, *a: object, **k: object):
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    watching = start_observer({str(tmp_path): True}, threading.Event(), threading.Event(), False, 0.05,
                              None, FullObserver)
    try:
        assert not watching.native and type(watching.observer) is PollingObserver
    finally:
        watching.stop()


@pytest.mark.parametrize("pattern,expected", [
    ("/var/log/app/events.ndjson", {"/var/log/app": False}),
    ("/var/log/app/*.ndjson", {"/var/log/app": False}),
    ("/var/log/*/events.ndjson", {"/var/log": True}),
    ("/var/log/app/**/*.ndjson", {"/var/log/app": True}),
])
def test_watched_dirs(tmp_path, pattern, expected):
    assert _tailer(tmp_path, pattern).watched_dirs() == expected


def _seqs(items: list[Item]) -> list[int]:
    out = []
    for item in items:
        assert isinstance(item, Chunk), item
        out += [orjson.loads(raw)["metadata"]["seq"] for raw in item.data.splitlines()]
    return out


def _drain(t: FileTailer, polls: int = 6) -> list[int]:
    got: list[int] = []
    for _ in range(polls):
        t.rescan = True
        got += _seqs(t.poll(1 << 20))
    return got


def test_copytruncate_copy_shorter_than_what_was_read_sends_nothing_again(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "events.ndjson"
    live.write_bytes(b"".join(event_line(i) for i in range(5)))
    t = FileTailer([str(logs / "events.ndjson*")], Checkpoints(tmp_path / "state_cp"), load_settings(rotate_wait=0))
    assert _drain(t) == list(range(5))
    shutil.copyfile(live, logs / "events.ndjson.1")  # logrotate copies...
    live.open("ab").write(b"".join(event_line(i) for i in range(5, 10)))
    assert _drain(t) == list(range(5, 10))  # ...the forwarder reads what the writer appends...
    os.truncate(live, 0)  # ...then logrotate truncates: the copy ends before what was read
    live.open("ab").write(b"".join(event_line(i) for i in range(10, 13)))
    assert _drain(t) == list(range(10, 13))
    assert "copy of a file already read further (copytruncate)" in caplog.text
    assert "truncated while stopped" not in caplog.text
    t.close()


def test_an_empty_gz_filled_between_two_reads_is_identified_as_gzip(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    logs.mkdir()
    gz = logs / "events.ndjson.1.gz"
    gz.write_bytes(gzip.compress(b"".join(event_line(i) for i in range(20))))
    ino = gz.stat().st_ino
    real_pread = os.pread
    looks = {"n": 0}

    def pread(fd: int, n: int, offset: int) -> bytes:
        if os.fstat(fd).st_ino == ino and looks["n"] == 0:
            looks["n"] += 1
            return b""  # the first look finds it empty: logrotate created it, gzip fills it next
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    t = FileTailer([str(logs / "*")], Checkpoints(tmp_path / "state_cp"), load_settings(rotate_wait=0))
    got = _drain(t)
    assert looks["n"] == 1
    assert sorted(got) == list(range(20))  # read once, decompressed; no binary line dead-lettered
    t.close()
