"""The checkpoint writer and files: every change into the kernel at once, fsync'd on a cadence
(dead-letter file first), what was in flight recorded, the fsync'd copy trusted after a reboot."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest
from kit import wait_until

from forwarder.delivery.acker import Acker
from forwarder.model import Batch
from forwarder.state import checkpoints as checkpoints_module
from forwarder.state import writer as writer_module
from forwarder.state.checkpoints import Checkpoints
from forwarder.state.deadletter import DeadLetter
from forwarder.state.writer import CheckpointWriter
from forwarder.stats import Stats


class HeldDeadLetter(DeadLetter):
    """Records the checkpoint files at each sync; the first sync waits until released."""

    def __init__(self, path: Path, checkpoint: Path, hold: bool = True) -> None:
        super().__init__(path)
        self.checkpoint = checkpoint
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.entered.set()
        self.seen_at_sync: list[tuple[int | None, int | None]] = []  # (checkpoints.json, .synced)

    def sync(self) -> None:
        synced = self.checkpoint.with_name(self.checkpoint.name + ".synced")
        self.seen_at_sync.append((offset_in(self.checkpoint), offset_in(synced)))
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(10)
        super().sync()


def offset_in(path: Path) -> int | None:
    return orjson.loads(path.read_bytes())["files"]["k"]["offset"] if path.exists() else None


def on_disk(cps: Checkpoints) -> int | None:
    return offset_in(cps.path)


@pytest.fixture
def no_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only notifications wake the writer (its periodic sweep is for changes other than acks)."""
    monkeypatch.setattr(writer_module, "SWEEP", 60.0)


def batch(seq: int, offset: int, events: int = 0) -> Batch:
    return Batch(seq=seq, events=[{"eventName": "e"}] * events, positions={"k": offset})


def test_acks_during_a_durable_write_go_into_the_next_one(tmp_path: Path, no_sweep: None) -> None:
    """checkpoint_fsync_interval = 0: every write fsync'd, the dead-letter file first."""
    cps = Checkpoints(tmp_path)
    dead = HeldDeadLetter(tmp_path / "dead.ndjson", cps.path)
    stats = Stats()
    writer = CheckpointWriter(cps, dead, 0.0, stats)
    acker = Acker(cps, lambda key: ("/log", 1, 2), writer.publish)
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
        assert stats.checkpoint_syncs == 2
        # The dead-letter file is synced after the view is taken and before it is written.
        assert dead.seen_at_sync == [(None, None), (100, None)]
        assert orjson.loads(cps.path.read_bytes())["durable"] is True
    finally:
        writer.stop()
        writer.join(5)
    assert not writer.is_alive()


def test_every_ack_reaches_the_file_at_once_and_fsyncs_follow_the_cadence(tmp_path: Path, no_sweep: None) -> None:
    cps = Checkpoints(tmp_path)
    dead = HeldDeadLetter(tmp_path / "dead.ndjson", cps.path, hold=False)
    stats = Stats()
    writer = CheckpointWriter(cps, dead, 0.5, stats)
    acker = Acker(cps, lambda key: ("/log", 1, 2), writer.publish)
    writer.start()
    try:
        acker.done(batch(0, 100))
        assert wait_until(lambda: on_disk(cps) == 100, timeout=5, interval=0.005)
        assert wait_until(lambda: offset_in(cps.synced_path) == 100, timeout=5), "the first change is fsync'd"
        syncs = stats.checkpoint_syncs
        for seq in range(1, 20):  # each one is in checkpoints.json at once, not fsync'd yet
            acker.done(batch(seq, 100 * (seq + 1)))
            assert wait_until(lambda: on_disk(cps) == 100 * (seq + 1), timeout=5, interval=0.002)  # noqa: B023
        assert stats.checkpoint_syncs <= syncs + 1
        assert wait_until(lambda: offset_in(cps.synced_path) == 2000, timeout=5), "fsync'd within the interval"
        # The dead-letter file is fsync'd before each checkpoint fsync, after the view it holds was written.
        assert all(main is not None and (synced is None or synced <= main) for main, synced in dead.seen_at_sync)
        assert len(dead.seen_at_sync) == stats.checkpoint_syncs
    finally:
        writer.stop()
        writer.join(5)


def test_a_failed_write_is_retried_without_another_notification(tmp_path: Path, no_sweep: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "RETRY", 0.05)
    cps = Checkpoints(tmp_path)
    stats = Stats()
    writer = CheckpointWriter(cps, DeadLetter(tmp_path / "dead.ndjson"), 1.0, stats)
    acker = Acker(cps, lambda key: ("/log", 1, 2), writer.publish)
    real_publish = Checkpoints.publish
    fail = threading.Event()
    fail.set()

    def flaky(self: Checkpoints, *args: object, **kwargs: object) -> bool:
        if fail.is_set():
            fail.clear()
            raise OSError(28, "No space left on device")
        return real_publish(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Checkpoints, "publish", flaky)
    writer.start()
    try:
        acker.done(batch(0, 10))  # first attempt fails; retried without another notification
        assert wait_until(lambda: on_disk(cps) == 10)
        assert stats.checkpoint_writes == 1
    finally:
        writer.stop()
        writer.join(5)


def test_the_file_records_what_is_in_flight_and_the_next_run_reads_it(tmp_path: Path) -> None:
    """A batch goes only once the file records it in flight; a clean flush records 0."""
    cps = Checkpoints(tmp_path)
    acker = Acker(cps, lambda key: ("/log", 1, 2))
    never = threading.Event()
    first, second = batch(0, 100, events=7), batch(1, 200, events=5)
    assert acker.wait_turn(first, 2, never) and acker.wait_turn(second, 2, never)
    assert orjson.loads(cps.path.read_bytes())["in_flight"] == {"batches": 2, "events": 12}
    acker.done(first)
    cps.publish()
    assert orjson.loads(cps.path.read_bytes())["in_flight"] == {"batches": 1, "events": 5}
    crashed = Checkpoints(tmp_path)  # kill -9 here: the next run knows what may come twice
    assert crashed.loaded is not None
    assert (crashed.loaded.in_flight_batches, crashed.loaded.in_flight_events) == (1, 5)
    assert crashed.get("k").offset == 100  # type: ignore[union-attr]
    acker.done(second)
    cps.flush()
    clean = Checkpoints(tmp_path)
    assert clean.loaded is not None and clean.loaded.in_flight_events == 0 and not clean.loaded.after_reboot


def test_after_a_reboot_only_what_was_fsyncd_is_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cps = Checkpoints(tmp_path)
    cps.advance({"k": 100}, {"k": ("/log", 1, 2)})
    cps.publish()
    assert cps.sync()
    cps.advance({"k": 900}, {})
    cps.publish()  # in the kernel, not fsync'd
    assert Checkpoints(tmp_path).get("k").offset == 900  # type: ignore[union-attr]  # same boot: trusted
    monkeypatch.setattr(checkpoints_module, "boot_id", lambda: "another-boot")
    rebooted = Checkpoints(tmp_path)
    assert rebooted.get("k").offset == 100  # type: ignore[union-attr]
    assert rebooted.loaded is not None and rebooted.loaded.after_reboot
    assert rebooted.loaded.unsynced_bytes == 800
    # checkpoints.json torn by the power loss: the fsync'd copy, with a warning, not a re-read from 0
    cps.path.write_bytes(b"\0" * 64)
    torn = Checkpoints(tmp_path)
    assert torn.load_problem is None and torn.get("k").offset == 100  # type: ignore[union-attr]
    # a durable write (clean shutdown) is trusted after a reboot
    monkeypatch.setattr(checkpoints_module, "boot_id", lambda: "boot-a")
    cps = Checkpoints(tmp_path)
    cps.advance({"k": 1000}, {})
    cps.flush()
    monkeypatch.setattr(checkpoints_module, "boot_id", lambda: "boot-b")
    assert Checkpoints(tmp_path).get("k").offset == 1000  # type: ignore[union-attr]
