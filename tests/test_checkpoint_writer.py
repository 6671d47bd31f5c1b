"""The checkpoint writer and files: every change into the kernel at once (the journal), fsync'd
on a cadence (checkpoints.json, dead-letter file first), what was in flight recorded, only the
fsync'd file trusted after a reboot."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from kit import event_line, fast_args, seqs, wait_until

from forwarder.delivery.acker import Acker
from forwarder.model import Batch, StatsigEvent
from forwarder.state import checkpoints as checkpoints_module
from forwarder.state import writer as writer_module
from forwarder.state.checkpoints import Checkpoints
from forwarder.state.deadletter import DeadLetter
from forwarder.state.writer import CheckpointWriter
from forwarder.stats import Stats


class HeldDeadLetter(DeadLetter):
    """Records the checkpoint files at each sync; the first sync waits until released."""

    def __init__(self, path: Path, checkpoints: Checkpoints, hold: bool = True) -> None:
        super().__init__(path)
        self.checkpoints = checkpoints
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.entered.set()
        self.seen_at_sync: list[tuple[int | None, int | None]] = []  # (journal, checkpoints.json)

    def sync(self) -> None:
        self.seen_at_sync.append((in_kernel(self.checkpoints), fsynced(self.checkpoints)))
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(10)
        super().sync()


def offset(doc: dict[str, Any]) -> int:
    return int(doc["files"]["k"]["offset"])


def fsynced(cps: Checkpoints) -> int | None:
    """What checkpoints.json (the fsync'd file) holds."""
    return offset(orjson.loads(cps.path.read_bytes())) if cps.path.exists() else None


def in_kernel(cps: Checkpoints) -> int | None:
    """What a process crash now would resume from: the journal's last line, else checkpoints.json."""
    lines = cps.journal_path.read_bytes().splitlines() if cps.journal_path.exists() else []
    return offset(orjson.loads(lines[-1])) if lines else fsynced(cps)


def batch(seq: int, offset: int, events: int = 0) -> Batch:
    return Batch(seq=seq, events=[StatsigEvent(eventName="e", time=0)] * events, positions={"k": offset})


def last_doc(cps: Checkpoints) -> dict[str, Any]:
    lines = cps.journal_path.read_bytes().splitlines() if cps.journal_path.exists() else []
    return orjson.loads(lines[-1] if lines else cps.path.read_bytes())  # type: ignore[no-any-return]


def test_acks_during_a_durable_write_go_into_the_next_one(tmp_path: Path) -> None:
    """checkpoint_fsync_interval = 0: every write fsync'd, the dead-letter file first."""
    cps = Checkpoints(tmp_path)
    dead = HeldDeadLetter(tmp_path / "dead.ndjson", cps)
    stats = Stats()
    writer = CheckpointWriter(cps, dead, 0.0, stats)
    acker = Acker(cps, lambda key: ("/log", 1, 2), writer.publish)
    writer.start()
    try:
        acker.done(batch(0, 100))  # the acknowledgement wakes the writer: no period to wait for
        assert dead.entered.wait(10), "the acknowledgement woke the writer"
        for seq in range(1, 6):  # acknowledged while that write is held
            acker.done(batch(seq, 100 * (seq + 1)))
        assert fsynced(cps) is None
        dead.release.set()
        assert wait_until(lambda: fsynced(cps) == 600)
        assert wait_until(lambda: stats.checkpoint_writes == 2), "one write for the first ack, one for the five"
        assert stats.checkpoint_syncs == 2
        # The dead-letter file is synced after the view is taken and before it is written.
        assert dead.seen_at_sync == [(None, None), (100, 100)]
        assert not cps.journal_path.exists()
    finally:
        writer.stop()
        writer.join(5)
    assert not writer.is_alive()


def test_every_ack_reaches_the_kernel_at_once_and_fsyncs_follow_the_cadence(tmp_path: Path) -> None:
    cps = Checkpoints(tmp_path)
    dead = HeldDeadLetter(tmp_path / "dead.ndjson", cps, hold=False)
    stats = Stats()
    writer = CheckpointWriter(cps, dead, 0.5, stats)
    acker = Acker(cps, lambda key: ("/log", 1, 2), writer.publish)
    writer.start()
    try:
        acker.done(batch(0, 100))
        assert wait_until(lambda: in_kernel(cps) == 100, timeout=5, interval=0.005)
        assert wait_until(lambda: stats.checkpoint_syncs == 1, timeout=5), "the first change is fsync'd at once"
        assert fsynced(cps) == 100
        started = time.monotonic()
        for seq in range(1, 20):  # each one in the journal at once, not fsync'd yet
            acker.done(batch(seq, 100 * (seq + 1)))
            assert wait_until(lambda: in_kernel(cps) == 100 * (seq + 1), timeout=5, interval=0.002)  # noqa: B023
        assert stats.checkpoint_syncs <= 1 + (time.monotonic() - started) / 0.5 + 1, "one fsync per interval"
        assert stats.checkpoint_writes > stats.checkpoint_syncs + 10
        assert wait_until(lambda: fsynced(cps) == 2000, timeout=5), "fsync'd within the interval"
        # The dead-letter file is fsync'd before each checkpoint fsync, after the view was in the kernel.
        assert all(kernel is not None and (synced is None or synced <= kernel) for kernel, synced in dead.seen_at_sync)
        assert wait_until(lambda: len(dead.seen_at_sync) == stats.checkpoint_syncs), "one dead-letter fsync each"
        assert not cps.journal_path.exists(), "the journal is removed once checkpoints.json is newer"
    finally:
        writer.stop()
        writer.join(5)


def test_a_failed_write_is_retried_without_another_notification(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "RETRY", 0.05)
    cps = Checkpoints(tmp_path)
    stats = Stats()
    writer = CheckpointWriter(cps, DeadLetter(tmp_path / "dead.ndjson"), 60.0, stats)
    writer._last_sync = time.monotonic()  # no fsync for the next minute: only journal writes
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
        assert wait_until(lambda: in_kernel(cps) == 10)
        assert stats.checkpoint_writes == 1
    finally:
        writer.stop()
        writer.join(5)


def test_a_short_journal_write_leaves_no_torn_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cps = Checkpoints(tmp_path)
    cps.advance({"k": 100}, {"k": ("/log", 1, 2)})
    cps.publish()
    real_write = os.write

    def short(fd: int, data: Any) -> int:  # the disk fills in the middle of the line
        monkeypatch.setattr(os, "write", real_write)
        real_write(fd, bytes(data)[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", short)
    cps.advance({"k": 200}, {})
    with pytest.raises(OSError):
        cps.publish()
    cps.publish()
    assert [offset(orjson.loads(line)) for line in cps.journal_path.read_bytes().splitlines()] == [100, 200]


def test_the_file_records_what_is_in_flight_and_the_next_run_reads_it(tmp_path: Path) -> None:
    """A batch goes only once the kernel holds it in flight; a clean flush records 0."""
    cps = Checkpoints(tmp_path)
    acker = Acker(cps, lambda key: ("/log", 1, 2))
    never = threading.Event()
    first, second = batch(0, 100, events=7), batch(1, 200, events=5)
    assert acker.wait_turn(first, 2, never) and acker.wait_turn(second, 2, never)
    assert last_doc(cps)["in_flight"] == {"batches": 2, "events": 12, "sent": {"k": 200}}
    acker.done(first)
    cps.publish()
    assert last_doc(cps)["in_flight"] == {"batches": 1, "events": 5, "sent": {"k": 200}}
    crashed = Checkpoints(tmp_path)  # kill -9 here: the next run knows what may come twice
    assert crashed.loaded is not None
    assert (crashed.loaded.in_flight_batches, crashed.loaded.in_flight_events) == (1, 5)
    assert crashed.get("k").offset == 100  # type: ignore[union-attr]
    # That run, killed before re-sending it all, passes it on; once its positions pass it, it is gone.
    crashed.set_in_flight(1, 3, {"k": 150})
    crashed.publish()
    assert Checkpoints(tmp_path).loaded.in_flight_events == 5  # type: ignore[union-attr]  # one file: the longer
    crashed.advance({"k": 150}, {})
    crashed.set_in_flight(0, 0, {})
    crashed.publish()
    assert Checkpoints(tmp_path).loaded.in_flight_events == 5  # type: ignore[union-attr]
    crashed.advance({"k": 200}, {})
    crashed.publish()
    assert Checkpoints(tmp_path).loaded.in_flight_events == 0  # type: ignore[union-attr]
    acker.done(second)
    cps.flush()
    clean = Checkpoints(tmp_path)
    assert clean.loaded is not None and clean.loaded.in_flight_events == 0 and not clean.loaded.after_reboot
    assert clean.get("k").offset == 200  # type: ignore[union-attr]


def test_after_a_reboot_only_what_was_fsyncd_is_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cps = Checkpoints(tmp_path)
    cps.advance({"k": 100}, {"k": ("/log", 1, 2)})
    assert cps.flush()
    cps.advance({"k": 900}, {})
    cps.publish()  # in the kernel, not fsync'd
    with open(cps.journal_path, "ab") as f:
        f.write(b"\0" * 300)  # a power loss can leave zeros or garbage past the last line
    assert Checkpoints(tmp_path).get("k").offset == 900  # type: ignore[union-attr]  # same boot: trusted
    monkeypatch.setattr(checkpoints_module, "boot_id", lambda: "another-boot")
    rebooted = Checkpoints(tmp_path)
    assert rebooted.get("k").offset == 100  # type: ignore[union-attr]
    assert rebooted.loaded is not None and rebooted.loaded.after_reboot
    assert rebooted.loaded.unsynced_bytes == 800
    rebooted.advance({"k": 950}, {})
    rebooted.publish()  # a new line after the garbage, newer than every line before the reboot
    assert Checkpoints(tmp_path).get("k").offset == 950  # type: ignore[union-attr]


def test_checkpoint_interval_still_starts_and_says_it_is_ignored(fake, spawn, tmp_path: Path) -> None:
    """Configurations written before checkpoint_fsync_interval keep working."""
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(10)))
    state = tmp_path / "state"
    cli = spawn("run", "--once", str(log), *fast_args(fake, state), "--checkpoint-interval", "0.1")
    assert cli.wait(60) == 0, bytes(cli.stderr).decode(errors="replace")
    warned = [r for r in cli.logs() if "checkpoint_interval is deprecated" in r.get("msg", "")]
    assert [r["level"] for r in warned] == ["warning"]
    assert sorted(seqs(fake)) == list(range(10))
    assert not (state / "checkpoints.json.journal").exists(), "a clean stop leaves the fsync'd file only"
    assert orjson.loads((state / "checkpoints.json").read_bytes())["in_flight"]["events"] == 0
