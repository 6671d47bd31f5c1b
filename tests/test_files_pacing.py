"""Steady load (issue 20): busy files are polled instead of waking per write, quiet ones wait for
events, and waiting to read never delays a batch. Real watchdog observers on temp files."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fake_statsig import FakeStatsig
from kit import Cli, append, event_line
from test_receiver_quiet import _voluntary_switches

from forwarder.delivery.batcher import Batcher
from forwarder.model import Chunk, StatsigEvent
from forwarder.settings import load_settings
from forwarder.source.tailer import SETTLE, FileTailer
from forwarder.source.wake import Watching, follow
from forwarder.state.checkpoints import Checkpoints


def _follow(tmp_path: Path) -> tuple[FileTailer, Watching, threading.Event, Path]:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "events.ndjson"
    log.write_bytes(event_line(0))
    tailer = FileTailer([str(log)], Checkpoints(tmp_path / "state"), load_settings(glob_interval=3600))
    wake = threading.Event()
    watching = follow(tailer, wake, False, 0.25)
    assert watching.native
    return tailer, watching, wake, log


def _trickle(write: Callable[[bytes], object], first: int, n: int) -> None:
    """One write per event, a few ms apart: the kernel merges events of writes nobody read yet."""
    for i in range(first, first + n):
        write(event_line(i))
        time.sleep(0.003)


def _seqs(tailer: FileTailer) -> int:
    """Lines read by one poll."""
    return sum(item.data.count(b"\n") for item in tailer.poll(1 << 20) if isinstance(item, Chunk))


def test_a_busy_file_is_polled_without_events_and_events_come_back_when_it_is_quiet(tmp_path: Path) -> None:
    tailer, watching, wake, log = _follow(tmp_path)
    try:
        assert _seqs(tailer) == 1
        assert tailer.next_poll() > 60  # quiet and evented: nothing on a timer until the next scan
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        _trickle(lambda b: os.write(fd, b), 1, 20)  # faster than the settle time
        assert wake.wait(5)
        time.sleep(0.2)  # the observer delivers every write's event
        assert _seqs(tailer) == 20
        assert tailer.next_poll() == SETTLE  # busy: read every settle time, write events paused
        wake.clear()
        os.write(fd, event_line(21))
        assert not wake.wait(0.5)  # no event per write while busy...
        assert _seqs(tailer) == 1  # ...and the poll reads it anyway
        time.sleep(SETTLE)
        assert _seqs(tailer) == 0  # a settle time with nothing new: events back on, read once more
        assert _seqs(tailer) == 0
        assert tailer.next_poll() > 60
        os.write(fd, event_line(22))
        assert wake.wait(5)  # a write wakes the reader again
        assert _seqs(tailer) == 1
        os.close(fd)
    finally:
        watching.stop()
        tailer.close()


def test_writes_between_the_last_poll_and_resuming_events_are_read(tmp_path: Path) -> None:
    tailer, watching, wake, log = _follow(tmp_path)
    try:
        assert _seqs(tailer) == 1
        with open(log, "ab", buffering=0) as f:
            _trickle(f.write, 1, 10)
            assert wake.wait(5)
            time.sleep(0.2)
            assert _seqs(tailer) == 10
            time.sleep(SETTLE)
            f.write(event_line(11))  # lands while write events are paused
            assert _seqs(tailer) == 1
            time.sleep(SETTLE)
            assert _seqs(tailer) == 0  # events resume here
            f.write(event_line(12))
        assert wake.wait(5)
        assert tailer.next_poll() == 0  # notified: read now
        assert _seqs(tailer) == 1
    finally:
        watching.stop()
        tailer.close()


def test_rotation_is_seen_at_once_while_write_events_are_paused(tmp_path: Path) -> None:
    tailer, watching, wake, log = _follow(tmp_path)
    try:
        assert _seqs(tailer) == 1
        with open(log, "ab", buffering=0) as f:
            _trickle(f.write, 1, 10)
        assert wake.wait(5)
        time.sleep(0.2)
        assert _seqs(tailer) == 10
        assert tailer.next_poll() == SETTLE
        wake.clear()
        os.rename(log, log.with_suffix(".ndjson.1"))
        log.write_bytes(event_line(100))
        assert wake.wait(5)  # directory entries are always watched
        assert tailer.next_poll() == 0
        assert _seqs(tailer) == 1
    finally:
        watching.stop()
        tailer.close()


def test_a_batch_opens_when_its_data_could_first_have_been_written() -> None:
    batcher = Batcher(500, 1_000_000, 1.0)
    batcher.since = time.monotonic() - 0.3  # the reader last saw the end of the file then
    batcher.extend([StatsigEvent(eventName="e", time=0)], 10)
    due = batcher.seconds_until_due()
    assert due is not None and 0.6 < due <= 0.7
    batcher.since = None
    batcher.take()
    batcher.extend([StatsigEvent(eventName="e", time=0)], 10)
    due = batcher.seconds_until_due()
    assert due is not None and due > 0.95


def test_a_read_cut_by_the_byte_budget_continues_at_once_even_mid_line(tmp_path: Path) -> None:
    tailer, watching, wake, log = _follow(tmp_path)
    try:
        assert _seqs(tailer) == 1
        with open(log, "ab") as f:  # more than one read's worth, so the budget cuts a line in two
            f.write(b"".join(event_line(i) for i in range(1, 8000)))
        assert wake.wait(5)
        first = _seqs(tailer)
        assert 0 < first < 7999
        assert tailer.next_poll() == 0  # not a settle time later: that would fall behind a fast writer
        total = first
        while total < 7999:
            total += _seqs(tailer)
        assert total == 7999
    finally:
        watching.stop()
        tailer.close()


def test_an_idle_run_does_not_poll_on_a_timer(spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.write_bytes(event_line(0))
    cli = spawn("run", str(log), "--statsig-api", fake.url, "--state-dir", str(tmp_path / "state"),
                "--flush-interval", "0.2")
    assert fake.wait_for(1, timeout=30)
    time.sleep(2.0)  # start-up work (key check, first checkpoint) done
    before = _voluntary_switches(cli.proc.pid)
    time.sleep(3.0)
    woke = _voluntary_switches(cli.proc.pid) - before
    # Left: the checkpoint writer's 1 s sweep, the sweep for new files every glob_interval (5 s).
    # Before issue 20 the reader (every poll_interval) and the main loop (every 0.2 s) made it ~30.
    assert woke < 12, f"{woke} wake-ups in 3 idle seconds"
    append(log, event_line(1))
    assert fake.wait_for(2, timeout=10)  # a write still wakes it
    assert cli.stop() == 0
