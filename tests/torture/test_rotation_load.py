"""Rotations every ~100 ms while a writer keeps appending: rename+create and copytruncate."""

from __future__ import annotations

import collections
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from kit import SCALE, Tally, event_line, fast_args, seqs, wait_until


class RotatingWriter(threading.Thread):
    """An application logging ~4000 events/s; `rotate()` is logrotate, run under its lock.

    rename: the file is renamed and the application reopens its path (a new file).
    copytruncate: the file is copied and truncated in place; the application keeps its
    O_APPEND descriptor. The lock keeps writes out of the copy-then-truncate gap: a line
    written there is lost by copytruncate itself, before any shipper can see it.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(name="app", daemon=True)
        self.path = path
        self.lock = threading.Lock()
        self.written = 0
        self.stopped = threading.Event()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def run(self) -> None:
        while not self.stopped.wait(0.005):
            with self.lock:
                os.write(self.fd, b"".join(event_line(self.written + i) for i in range(20)))
                self.written += 20
        os.close(self.fd)

    def rotate(self, mode: str, n: int) -> None:
        rotated = self.path.with_name(f"{self.path.name}.{n}")
        with self.lock:
            if mode == "rename":
                os.rename(self.path, rotated)
                os.write(self.fd, event_line(self.written))  # a straggler into the renamed file
                self.written += 1
                os.close(self.fd)
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            else:
                shutil.copyfile(self.path, rotated)
                os.truncate(self.path, 0)


@pytest.mark.parametrize("mode", ["rename", "copytruncate"])
def test_rotation_under_load_loses_nothing(fake, spawn, tmp_path: Path, tally: Tally, mode: str) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "events.ndjson"
    app = RotatingWriter(path)
    cli = spawn("run", str(logs / "events.ndjson*"), *fast_args(fake, tmp_path / "state"))
    cli.wait_log("watching for changes")
    app.start()
    rotations = 20 * SCALE
    for n in range(rotations):
        time.sleep(0.1)
        app.rotate(mode, n)
    app.stopped.set()
    app.join()
    total = app.written
    ok = wait_until(lambda: set(seqs(fake)) >= set(range(total)), timeout=60)
    time.sleep(0.5)
    assert cli.stop() == 0
    counts = collections.Counter(seqs(fake))
    missing = sorted(set(range(total)) - set(counts))
    tally.written, tally.delivered, tally.lost = total, len(counts), len(missing)
    tally.duplicated = sum(counts.values()) - len(counts)
    tally.note = f"{rotations} {mode} rotations every 100 ms"
    assert ok and not missing, f"{len(missing)} lost, first {missing[:10]}"
    assert set(counts) == set(range(total))
    if mode == "rename":
        assert tally.duplicated == 0, "rename rotation without a crash never re-sends"
