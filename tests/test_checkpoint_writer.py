"""The checkpoint writer: group commit, woken by every change of the view (the acker's advances
included), dead-letter file synced before the checkpoint."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest
from kit import wait_until

from forwarder.delivery.acker import Acker
from forwarder.model import Batch
from forwarder.state import writer as writer_module
from forwarder.state.checkpoints import Checkpoints
from forwarder.state.deadletter import DeadLetter
from forwarder.state.writer import CheckpointWriter
from forwarder.stats import Stats


class HeldDeadLetter(DeadLetter):
    """Records the checkpoint file at each sync; the first sync waits until released."""

    def __init__(self, path: Path, checkpoint: Path) -> None:
        super().__init__(path)
        self.checkpoint = checkpoint
        self.entered = threading.Event()
        self.release = threading.Event()
        self.seen_at_sync: list[int | None] = []

    def sync(self) -> None:
        data = self.checkpoint.read_bytes() if self.checkpoint.exists() else None
        self.seen_at_sync.append(None if data is None else orjson.loads(data)["files"]["k"]["offset"])
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(10)
        super().sync()


def on_disk(cps: Checkpoints) -> int | None:
    return orjson.loads(cps.path.read_bytes())["files"]["k"]["offset"] if cps.path.exists() else None


@pytest.fixture
def no_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only notifications wake the writer (its periodic sweep is for changes other than acks)."""
    monkeypatch.setattr(writer_module, "SWEEP", 60.0)


def batch(seq: int, offset: int) -> Batch:
    return Batch(seq=seq, positions={"k": offset})


def test_acks_during_a_write_go_into_the_next_one(tmp_path: Path, no_sweep: None) -> None:
    cps = Checkpoints(tmp_path)
    dead = HeldDeadLetter(tmp_path / "dead.ndjson", cps.path)
    stats = Stats()
    writer = CheckpointWriter(cps, dead, 0.0, stats)
    acker = Acker(cps, lambda key: ("/log", 1, 2))
    writer.start()
    try:
        acker.done(batch(0, 100))  # the acknowledgement wakes the writer: no period to wait for
        assert dead.entered.wait(10), "the acknowledgement woke the writer"
        for seq in range(1, 6):  # acknowledged while that write is held
            acker.done(batch(seq, 100 * (seq + 1)))
        assert on_disk(cps) is None
        dead.release.set()
        assert wait_until(lambda: on_disk(cps) == 600)
        assert stats.checkpoint_writes == 2, "one write for the first ack, one for the five during it"
        # The dead-letter file is synced after the view is taken and before it is written.
        assert dead.seen_at_sync == [None, 100]
    finally:
        writer.stop()
        writer.join(5)
    assert not writer.is_alive()


def test_a_failed_write_is_retried_without_another_notification(tmp_path: Path, no_sweep: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "RETRY", 0.05)
    cps = Checkpoints(tmp_path)
    stats = Stats()
    writer = CheckpointWriter(cps, DeadLetter(tmp_path / "dead.ndjson"), 0.0, stats)
    acker = Acker(cps, lambda key: ("/log", 1, 2))
    real_write = Checkpoints.flush
    fail = threading.Event()
    fail.set()

    def flaky(self: Checkpoints, before_write: object = None) -> bool:
        if fail.is_set():
            fail.clear()
            with self._lock:
                self._dirty = True  # as a failed write leaves it
            raise OSError(28, "No space left on device")
        return real_write(self, before_write)  # type: ignore[arg-type]

    monkeypatch.setattr(Checkpoints, "flush", flaky)
    writer.start()
    try:
        acker.done(batch(0, 10))  # first attempt fails; retried without another notification
        assert wait_until(lambda: on_disk(cps) == 10)
        assert stats.checkpoint_writes == 1
    finally:
        writer.stop()
        writer.join(5)
