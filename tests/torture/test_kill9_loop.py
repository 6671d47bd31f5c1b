"""kill -9 at random moments while a writer appends: nothing lost, duplicates bounded per crash."""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from kit import SCALE, Tally, event_line, fast_args, seqs, wait_until

BATCH = 100
IN_FLIGHT = 2
# The checkpoint file's mtime is taken a moment after the view it holds was snapshotted, the
# kernel's file clock is coarse, and an answer reaches the acker a moment after the fake
# recorded it (on a loaded 2-core machine, sometimes over 0.1 s): count deliveries from a
# little before it.
MTIME_SLACK = 0.25
# "One checkpoint write's worth": the writer thread below appends about 5,000 events/s; a
# checkpoint write (two fsyncs of small files) takes milliseconds, and writes are at least
# checkpoint_interval (0.1 s, the default) apart. 0.4 s of the writer's output leaves room for
# a loaded machine (fsync stalls, late acks), and is far below what writes once a second re-sent
# (up to 5,000 + in flight; 2,500 at the first crash when tried).
WRITE_WORTH = 2000


class Writer(threading.Thread):
    """Appends event lines with increasing sequence numbers, remembering each line's offset."""

    def __init__(self, path: Path, per_tick: int = 25, tick: float = 0.005) -> None:
        super().__init__(name="writer", daemon=True)
        self.path = path
        self.per_tick = per_tick
        self.tick = tick
        self.offsets: list[int] = []  # offsets[seq] = where line `seq` starts
        self.size = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            while not self.stopped.wait(self.tick):
                lines = []
                for _ in range(self.per_tick):
                    line = event_line(len(self.offsets))
                    self.offsets.append(self.size)
                    self.size += len(line)
                    lines.append(line)
                os.write(fd, b"".join(lines))
        finally:
            os.close(fd)


@dataclass
class Crash:
    killed_at: float  # wall clock
    accepted_before: int  # len(fake.events) once the killed process was gone
    checkpoint: int  # offset in the checkpoint file it left behind
    checkpoint_written: float  # that file's mtime (0: none yet)


def test_kill9_loop_loses_nothing_and_bounds_duplicates(fake, spawn, tmp_path: Path, tally: Tally) -> None:
    kills = 20 * SCALE
    seed = int(os.environ.get("TORTURE_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    tally.note = f"{kills} kills, seed {seed}"
    fake.jitter = 0.04  # answers take 0-40 ms, so requests finish out of order
    log = tmp_path / "events.ndjson"
    state = tmp_path / "state"
    args = [str(log), *fast_args(fake, state), "--batch-size", str(BATCH), "--max-in-flight", str(IN_FLIGHT),
            "--checkpoint-interval", "0.1", "--flush-interval", "0.05"]  # the default floor
    writer = Writer(log)
    writer.start()
    crashes: list[Crash] = []
    try:
        for _ in range(kills):
            before = fake.event_count
            cli = spawn("run", *args)
            if rng.random() < 0.25:  # during start-up (which takes 0.3-2 s, with the load)
                time.sleep(rng.uniform(0.05, 1.0))
            else:  # mid-stream: a random moment after its first delivery
                wait_until(lambda: fake.event_count > before, timeout=20, interval=0.01)  # noqa: B023
                time.sleep(rng.uniform(0.0, 1.0))
            killed_at = time.time()
            cli.kill9()
            time.sleep(0.05)  # a request the fake was already answering gets recorded
            checkpoint, written = 0, 0.0
            path = state / "checkpoints.json"
            if path.exists():
                written = path.stat().st_mtime
                files = orjson.loads(path.read_bytes())["files"]
                checkpoint = max((f["offset"] for f in files.values()), default=0)
            crashes.append(Crash(killed_at, len(fake.events), checkpoint, written))
    finally:
        writer.stopped.set()
        writer.join()
    total = len(writer.offsets)
    cli = spawn("run", *args)
    assert wait_until(lambda: fake.event_count >= total and set(seqs(fake)) >= set(range(total)), timeout=120), (
        f"missing: {sorted(set(range(total)) - set(seqs(fake)))[:20]} (seed {seed})")
    assert cli.stop() == 0

    counts = collections.Counter(seqs(fake))
    duplicates = sum(counts.values()) - len(counts)
    tally.written, tally.delivered, tally.duplicated = total, len(counts), duplicates
    assert set(counts) == set(range(total))

    # Each crash re-sends what the fake accepted past the checkpoint it left behind. The
    # promise (README "Guarantees"): at most the batches in flight plus what was acknowledged
    # during one checkpoint write; a checkpoint is written as soon as the position moves.
    requests = fake.accepted_requests()
    allowed_total = 0
    per_crash = []
    for i, crash in enumerate(crashes):
        resent = {s for s in seqs_of(fake.events[: crash.accepted_before])
                  if writer.offsets[s] >= crash.checkpoint}
        since_write = sum(len(r.events) for r in requests
                          if crash.checkpoint_written - MTIME_SLACK <= r.received <= crash.killed_at + 0.05)
        in_flight = IN_FLIGHT * BATCH
        print(f"crash {i:2}: re-sent {len(resent):5}  (bound {in_flight} in flight + {since_write} acknowledged "
              f"since the checkpoint write began; {in_flight} + {WRITE_WORTH} at most)")
        assert len(resent) <= in_flight + since_write, (
            f"crash {i}: {len(resent)} events re-sent, more than {in_flight} in flight + {since_write} "
            f"acknowledged since the last checkpoint write began; seed {seed}")
        assert len(resent) <= in_flight + WRITE_WORTH, (
            f"crash {i}: {len(resent)} events re-sent, more than {in_flight} in flight + {WRITE_WORTH} "
            f"(one checkpoint write's worth): the checkpoint lagged the acknowledgements; seed {seed}")
        allowed_total += len(resent)
        per_crash.append(len(resent))
    tally.crashes = per_crash
    tally.note += f"; worst crash re-sent {max(per_crash)} (bound {IN_FLIGHT * BATCH} + {WRITE_WORTH})"
    assert duplicates <= allowed_total, (duplicates, allowed_total, seed)


def seqs_of(events: list[dict[str, object]]) -> list[int]:
    out = []
    for e in events:
        metadata = e.get("metadata")
        if isinstance(metadata, dict) and "seq" in metadata:
            out.append(int(metadata["seq"]))
    return out


def test_kill9_before_any_delivery_with_start_at_end_loses_nothing(fake, spawn, tmp_path: Path, tally: Tally) -> None:
    """start_at=end skips what the file held at first sight, and only that, across a crash."""
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(10)))
    state = tmp_path / "state"
    args = [str(log), *fast_args(fake, state), "--start-at", "end"]
    cli = spawn("run", *args)
    cli.wait_log("new file")
    time.sleep(0.6)  # a few checkpoint intervals, nothing to deliver
    cli.kill9()
    with open(log, "ab") as f:  # written while the forwarder is down
        f.write(b"".join(event_line(i) for i in range(10, 20)))
    cli = spawn("run", *args)
    assert wait_until(lambda: set(seqs(fake)) >= set(range(10, 20)), timeout=20), seqs(fake)
    time.sleep(0.3)
    assert cli.stop() == 0
    tally.written, tally.delivered = 10, len(set(seqs(fake)))
    tally.note = "start_at=end; 10 lines skipped on purpose, 10 written while down"
    assert sorted(seqs(fake)) == list(range(10, 20))
