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
CHECKPOINT_INTERVAL = 0.2
# The checkpoint file's mtime is taken a moment after the view it holds was snapshotted
# (and the kernel's file clock is coarse): count deliveries from a little before it.
MTIME_SLACK = 0.1


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
            "--checkpoint-interval", str(CHECKPOINT_INTERVAL), "--flush-interval", "0.05"]
    writer = Writer(log)
    writer.start()
    crashes: list[Crash] = []
    try:
        for _ in range(kills):
            cli = spawn("run", *args)
            time.sleep(rng.uniform(0.1, 1.5))  # sometimes during start-up, mostly mid-stream
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
    # promise: at most the batches in flight plus what was delivered since that checkpoint
    # was written. Summed over the crashes, that bounds every duplicate.
    requests = fake.accepted_requests()
    allowed_total = 0
    worst = (0, 0)
    for i, crash in enumerate(crashes):
        resent = {s for s in seqs_of(fake.events[: crash.accepted_before])
                  if writer.offsets[s] >= crash.checkpoint}
        since_write = sum(len(r.events) for r in requests
                          if crash.checkpoint_written - MTIME_SLACK <= r.received <= crash.killed_at + 0.05)
        bound = IN_FLIGHT * BATCH + since_write
        assert len(resent) <= bound, (f"crash {i}: {len(resent)} events re-sent, bound {bound} "
                                      f"({IN_FLIGHT} x {BATCH} in flight + {since_write} since the checkpoint "
                                      f"write); seed {seed}")
        allowed_total += len(resent)
        worst = max(worst, (len(resent), bound))
    tally.note += f"; worst crash re-sent {worst[0]} (bound {worst[1]})"
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
