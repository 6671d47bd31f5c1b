"""Rotation by real writers and real logrotate, while the writer keeps appending (never paused).

- logrotate `copytruncate` + `compress` + `delaycompress`, forced about once a second: nothing
  lost except the lines logrotate itself loses between its copy and its truncate (measured:
  what is in the rotated files plus the live file, against what was written), no duplicate,
  nothing dead-lettered.
- logrotate `create` + `compress` + `delaycompress` with `logging.handlers.WatchedFileHandler`
  writing: no loss, no duplicate, nothing dead-lettered.
- `RotatingFileHandler` and `TimedRotatingFileHandler` (when='S') writing: no loss, no duplicate.

The glob includes the rotated names (`events.ndjson*`). logrotate comes from the Debian
package (`.ci/run` installs it).
"""

from __future__ import annotations

import collections
import gzip
import logging
import logging.handlers
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from fake_statsig import FakeStatsig
from kit import event_line, logs_dir, run, seqs, wait_until

WRITE_SECONDS = 8.0
LINES_PER_SECOND = 400


class Writer(threading.Thread):
    """Appends numbered events through `emit` at a steady rate until stopped."""

    def __init__(self, emit: Callable[[bytes], object]) -> None:
        super().__init__(daemon=True)
        self.emit = emit
        self.written = 0
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * LINES_PER_SECOND)
            while self.written < due:
                self.emit(event_line(self.written))
                self.written += 1
            self.stop.wait(0.005)


def logrotate(tmp_path: Path, log: Path, *directives: str) -> Callable[[], None]:
    """A forced `logrotate -f -s <state> <conf>` over `log` with `directives`."""
    assert shutil.which("logrotate"), "logrotate is not installed (.ci/run installs it)"
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{log} {{\n  rotate 1000\n  missingok\n" + "".join(f"  {d}\n" for d in directives) + "}\n")
    conf.chmod(0o644)
    state = tmp_path / "logrotate.state"

    def rotate() -> None:
        done = subprocess.run(["logrotate", "-f", "-s", str(state), str(conf)], capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr.decode()

    return rotate


def rotate_while_writing(writer: Writer, rotate: Callable[[], None], every: float = 1.0) -> int:
    writer.start()
    rotations = 0
    deadline = time.monotonic() + WRITE_SECONDS
    while time.monotonic() < deadline:
        time.sleep(every)
        rotate()
        rotations += 1
    time.sleep(0.3)
    writer.stop.set()
    writer.join()
    return rotations


def on_disk(logs: Path) -> tuple[collections.Counter[int], list[bytes]]:
    """Complete lines in every file (gz decompressed) by seq, and partial (torn) lines."""
    found: collections.Counter[int] = collections.Counter()
    torn: list[bytes] = []
    for f in logs.iterdir():
        data = gzip.decompress(f.read_bytes()) if f.read_bytes()[:2] == b"\x1f\x8b" else f.read_bytes()
        for raw in data.split(b"\n"):
            raw = raw.strip(b"\0")  # a hole a writer may leave after copytruncate
            if not raw:
                continue
            try:
                found[orjson.loads(raw)["metadata"]["seq"]] += 1
            except orjson.JSONDecodeError:
                torn.append(raw)
    return found, torn


def dead_letters(state: Path) -> list[dict[str, object]]:
    path = state / "dead-letter.ndjson"
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def delivered_once(fake: FakeStatsig, expected: set[int], allowed: set[int], timeout: float = 30) -> list[int]:
    """Wait until every `expected` seq arrived; return them in arrival order (checked for duplicates)."""
    ok = wait_until(lambda: expected <= set(seqs(fake)), timeout)
    got = seqs(fake)
    missing = sorted(expected - set(got))
    assert ok, f"{len(missing)} lines never delivered, first {missing[:10]}"
    time.sleep(1.0)  # duplicates would arrive within a few flushes
    got = seqs(fake)
    dups = sorted(k for k, c in collections.Counter(got).items() if c > 1)
    assert not dups, f"{len(dups)} duplicated, first {dups[:10]}"
    assert set(got) <= allowed
    return got


def test_logrotate_copytruncate_compress_delaycompress_while_writing(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    log = logs / "events.ndjson"
    log.touch()
    state = tmp_path / "state"
    cli = run(spawn, fake, state, str(logs / "events.ndjson*"))
    out = open(log, "ab", buffering=0)  # noqa: SIM115 - O_APPEND: writes land at the end after a truncate
    writer = Writer(out.write)
    rotations = rotate_while_writing(writer, logrotate(tmp_path, log, "copytruncate", "compress", "delaycompress"))
    out.close()
    assert rotations >= 6 and len(list(logs.glob("*.gz"))) >= 4
    found, torn = on_disk(logs)
    assert max(found.values()) == 1  # each line in one file only
    lost_by_logrotate = set(range(writer.written)) - set(found)  # between its copy and its truncate
    assert len(lost_by_logrotate) < writer.written / 10, len(lost_by_logrotate)
    delivered_once(fake, set(found), set(range(writer.written)))
    print(f"copytruncate: {writer.written} written, {rotations} rotations, {len(lost_by_logrotate)} lost by "
          f"logrotate between copy and truncate, {len(torn)} torn")
    assert cli.stop() == 0
    # Only a line logrotate copied half of (torn in the copy) may be dead-lettered.
    bad = [r for r in dead_letters(state) if not any(str(r.get("line", "")).encode() in t for t in torn)]
    assert not bad, bad


def test_logrotate_create_compress_delaycompress_with_watched_file_handler(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    log = logs / "events.ndjson"
    log.touch()
    state = tmp_path / "state"
    cli = run(spawn, fake, state, str(logs / "events.ndjson*"))
    handler = logging.handlers.WatchedFileHandler(log)
    writer = Writer(lambda line: handler.emit(_record(line)))
    rotations = rotate_while_writing(writer, logrotate(tmp_path, log, "create", "compress", "delaycompress"))
    handler.close()
    assert rotations >= 6 and len(list(logs.glob("*.gz"))) >= 4
    found, torn = on_disk(logs)
    assert set(found) == set(range(writer.written)) and not torn
    delivered_once(fake, set(range(writer.written)), set(range(writer.written)))
    assert cli.stop() == 0
    assert not dead_letters(state)


def test_python_rotating_file_handler(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    log = logs / "events.ndjson"
    log.touch()
    state = tmp_path / "state"
    cli = run(spawn, fake, state, str(logs / "events.ndjson*"))
    handler = logging.handlers.RotatingFileHandler(log, maxBytes=60_000, backupCount=1000)
    writer = Writer(lambda line: handler.emit(_record(line)))
    rotate_while_writing(writer, lambda: None)
    handler.close()
    assert len(list(logs.iterdir())) >= 6  # it rotated about every 0.4 s
    delivered_once(fake, set(range(writer.written)), set(range(writer.written)))
    assert cli.stop() == 0
    assert not dead_letters(state)


def test_python_timed_rotating_file_handler(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    log = logs / "events.ndjson"
    log.touch()
    state = tmp_path / "state"
    cli = run(spawn, fake, state, str(logs / "events.ndjson*"))
    handler = logging.handlers.TimedRotatingFileHandler(log, when="S", interval=1, backupCount=1000)
    writer = Writer(lambda line: handler.emit(_record(line)))
    rotate_while_writing(writer, lambda: None)
    handler.close()
    assert len(list(logs.iterdir())) >= 6  # one file a second
    delivered_once(fake, set(range(writer.written)), set(range(writer.written)))
    assert cli.stop() == 0
    assert not dead_letters(state)


def _record(line: bytes) -> logging.LogRecord:
    """A log record whose formatted message is the event line (the handler adds the newline)."""
    return logging.LogRecord("events", logging.INFO, __file__, 0, line.rstrip(b"\n").decode(), None, None)
