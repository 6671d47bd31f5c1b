"""kill -9 at random moments while a writer appends: nothing lost, and every crash re-sends at
most the in-flight window (max_in_flight x batch_size), at any write rate."""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from pathlib import Path

import pytest
from fake_statsig import FakeStatsig
from kit import SCALE, Cli, Tally, event_line, fast_args, seqs, wait_until

IN_FLIGHT = 2  # the default max_in_flight
# A request the fake is answering when the process dies is recorded up to `jitter` later.
SETTLE = 0.25


class Writer(threading.Thread):
    """Appends event lines with increasing sequence numbers, about `per_tick / tick` a second."""

    def __init__(self, path: Path, per_tick: int = 25, tick: float = 0.005) -> None:
        super().__init__(name="writer", daemon=True)
        self.path = path
        self.per_tick = per_tick
        self.tick = tick
        self.written = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            while not self.stopped.wait(self.tick):
                self._append(fd, self.per_tick)
        finally:
            os.close(fd)

    def _append(self, fd: int, n: int) -> None:
        os.write(fd, b"".join(event_line(seq) for seq in range(self.written, self.written + n)))
        self.written += n


class FullSpeedWriter(Writer):
    """Keeps the file `ahead` events past what the fake received, appended `chunk` lines per
    write: the forwarder never waits for input, whatever its speed."""

    def __init__(self, path: Path, fake: FakeStatsig, ahead: int = 40_000, chunk: int = 10_000) -> None:
        super().__init__(path)
        self.fake, self.ahead, self.chunk = fake, ahead, chunk

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            while not self.stopped.is_set():
                if self.written - self.fake.event_count < self.ahead:
                    self._append(fd, self.chunk)
                else:
                    self.stopped.wait(0.01)
        finally:
            os.close(fd)


@pytest.mark.parametrize(("rate", "batch"), [("full", 500), ("5k", 500), ("full", 2000), ("5k", 2000)],
                         ids=["full_speed-batch500", "5k_per_s-batch500", "full_speed-batch2000",
                              "5k_per_s-batch2000"])
def test_kill9_loop_loses_nothing_and_resends_at_most_the_window(
    fake, spawn, tmp_path: Path, tally: Tally, rate: str, batch: int
) -> None:
    kills = 20 * SCALE
    seed = int(os.environ.get("TORTURE_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    window = IN_FLIGHT * batch
    tally.note = f"{kills} kills, {rate}, batch_size {batch}, seed {seed}"
    fake.jitter = 0.02  # answers take 0-20 ms, so requests finish out of order
    log = tmp_path / "events.ndjson"
    state = tmp_path / "state"
    args = [str(log), *fast_args(fake, state), "--batch-size", str(batch), "--max-in-flight", str(IN_FLIGHT)]
    writer = FullSpeedWriter(log, fake) if rate == "full" else Writer(log)
    writer.start()
    runs: list[Cli] = []
    ends: list[int] = []  # len(fake.events) once each killed process was gone
    when: list[str] = []
    try:
        for _ in range(kills):
            before = fake.event_count
            cli = spawn("run", *args)
            runs.append(cli)
            when.append("start-up" if rng.random() < 0.25 else "mid-stream")
            if when[-1] == "start-up":  # (which takes 0.3-2 s, with the load)
                time.sleep(rng.uniform(0.05, 1.0))
            else:  # mid-stream: a random moment after its first delivery
                wait_until(lambda: fake.event_count > before, timeout=30, interval=0.01)  # noqa: B023
                time.sleep(rng.uniform(0.0, 0.6))
            cli.kill9()
            time.sleep(SETTLE)
            ends.append(len(fake.events))
    finally:
        writer.stopped.set()
        writer.join()
    total = writer.written
    cli = spawn("run", *args)
    runs.append(cli)
    assert wait_until(lambda: fake.event_count >= total and set(seqs(fake)) >= set(range(total)), timeout=180), (
        f"missing: {sorted(set(range(total)) - set(seqs(fake)))[:20]} (seed {seed}); fake got {fake.event_count} "
        f"of {total} ({len(set(range(total)) - set(seqs(fake)))} missing; without a seq: "
        f"{[e for e in fake.events if not isinstance(e.get('metadata'), dict) or 'seq' not in e['metadata']][:2]}) "
        f"in {len(fake.requests)} requests {collections.Counter(r.status for r in fake.requests)}; "
        f"last run said: {[r.get('msg') for r in cli.logs()][-15:]}")
    assert cli.stop() == 0

    counts = collections.Counter(seqs(fake))
    tally.written, tally.delivered = total, len(counts)
    tally.duplicated = sum(counts.values()) - len(counts)
    tally.lost = total - len(counts)
    assert set(counts) == set(range(total))

    # What each restart re-sent: events the next run delivered that had been delivered before the crash.
    events = seqs_of(fake.events)  # in arrival order
    bounds = [0, *ends, len(fake.events)]
    seen: set[int] = set(events[: bounds[1]])
    per_crash = []
    for i in range(kills):
        after = events[bounds[i + 1] : bounds[i + 2]]
        resent = sum(1 for s in after if s in seen)
        logged = _logged_in_flight(runs[i + 1])
        print(f"crash {i:2} ({when[i]:>10}, that run delivered {bounds[i + 1] - bounds[i]:6}): re-sent {resent:5}"
              f"  (the next run logged {logged} in flight; bound {IN_FLIGHT} x {batch} = {window})")
        per_crash.append(resent)
        seen.update(after)
        assert logged is None or logged <= window, (i, logged, seed)
        assert resent <= (logged or 0), (
            f"crash {i}: {resent} re-sent, but the restart said up to {logged} events may come again; seed {seed}")
    tally.crashes = per_crash
    tally.note += f"; worst crash re-sent {max(per_crash)} (bound {window})"
    bad = [(i, n) for i, n in enumerate(per_crash) if n > window]
    assert not bad, f"crashes re-sent more than {IN_FLIGHT} x {batch} = {window} events: {bad}; seed {seed}"
    assert tally.duplicated == sum(per_crash), "no duplicate but those re-sent after a crash"


def _logged_in_flight(cli: Cli) -> int | None:
    """What a run said at start about the events its predecessor had in flight (None: nothing)."""
    for rec in cli.logs():
        if "in_flight_events" in rec:
            return int(rec["in_flight_events"])
    return None


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
