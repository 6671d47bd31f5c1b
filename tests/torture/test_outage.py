"""Statsig down in every way it goes down: 503s, hung requests, refused connections, then back."""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

from kit import SCALE, Tally, append, event_line, fast_args, read_checkpoints, rss_kib, seqs, wait_until

BATCH = 200
IN_FLIGHT = 2


def checkpoint_offset(state: Path) -> int:
    if not (state / "checkpoints.json").exists():
        return 0
    return max((f["offset"] for f in read_checkpoints(state).values()), default=0)


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.05) -> None:
        super().__init__(name="rss", daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.samples.append(rss_kib(self.pid))
            except OSError:
                return


def test_outage_503_hang_refused_then_recovery(fake, spawn, tmp_path: Path, tally: Tally) -> None:
    log = tmp_path / "events.ndjson"
    state = tmp_path / "state"
    warmup = 2_000
    log.write_bytes(b"".join(event_line(i) for i in range(warmup)))
    cli = spawn("run", str(log), *fast_args(fake, state), "--batch-size", str(BATCH),
                "--max-in-flight", str(IN_FLIGHT), "--request-timeout", "1")
    assert fake.wait_for(warmup)
    assert wait_until(lambda: checkpoint_offset(state) == log.stat().st_size)
    time.sleep(0.5)  # warm: its steady-state memory is the baseline
    base_rss = rss_kib(cli.proc.pid)
    before = log.stat().st_size
    sampler = RssSampler(cli.proc.pid)
    sampler.start()

    # Down, while the file grows far past anything memory could hold if reading went on.
    fake.fail_always(503)
    total = warmup + 250_000 * SCALE
    chunk = 10_000
    for start in range(warmup, total, chunk):
        append(log, b"".join(event_line(i) for i in range(start, min(start + chunk, total))))
    grown_mib = (log.stat().st_size - before) / 2**20
    cli.wait_log("delivery failed, will retry")
    time.sleep(2)
    fake.clear_faults()
    fake.hang_next(10**9, 1.5)  # longer than --request-timeout: every request times out
    assert wait_until(lambda: any(r.status == 598 for r in fake.requests), timeout=10)
    time.sleep(2.5)
    fake.clear_faults()
    fake.stop()  # connection refused
    time.sleep(2.5)

    assert fake.event_count == warmup, "nothing is accepted while Statsig is down"
    assert checkpoint_offset(state) == before, "the checkpoint must not move while nothing is delivered"
    assert {r.status for r in fake.requests[-50:]} & {503, 598}
    outage_peak = max(sampler.samples)

    fake.start()  # same port
    assert fake.wait_for(total, timeout=120)
    cli.wait_log("delivery recovered")
    assert wait_until(lambda: checkpoint_offset(state) == log.stat().st_size)
    assert cli.stop() == 0
    sampler.stopped.set()

    counts = collections.Counter(seqs(fake))
    tally.written, tally.delivered = total, len(counts)
    tally.duplicated = sum(counts.values()) - len(counts)
    growth_mib = (outage_peak - base_rss) / 1024
    tally.note = (f"file grew {grown_mib:.0f} MiB while down; RSS {base_rss // 1024} MiB -> peak "
                  f"{outage_peak // 1024} MiB while down, {max(sampler.samples) // 1024} MiB catching up")
    assert set(counts) == set(range(total))
    # Reading pauses: what is held is the queue and the senders' batches, not the file.
    assert growth_mib < 40, f"RSS grew {growth_mib:.0f} MiB during the outage (file grew {grown_mib:.0f} MiB)"
    assert max(sampler.samples) / 1024 < base_rss / 1024 + 60, "catching up must stay bounded too"


def test_one_stuck_request_does_not_let_the_others_run_ahead(fake, spawn, tmp_path: Path, tally: Tally) -> None:
    """While the oldest batch hangs, the other senders may finish at most the in-flight window.

    Otherwise the checkpoint (held at the stuck batch) falls ever further behind what Statsig
    has, memory holds every finished batch, and a crash re-sends all of it.
    """
    log = tmp_path / "events.ndjson"
    state = tmp_path / "state"
    total = 20_000
    log.write_bytes(b"".join(event_line(i) for i in range(total)))
    fake.hang_next(1, 30)  # the first request hangs (until the kill)
    args = [str(log), *fast_args(fake, state), "--batch-size", str(BATCH), "--max-in-flight", str(IN_FLIGHT),
            "--request-timeout", "60"]
    cli = spawn("run", *args)
    assert wait_until(lambda: any(r.status == 598 for r in fake.requests), timeout=10)
    time.sleep(2)
    # The hung request may be batch 0 or 1 (both leave at once); the checkpoint stops before it.
    starts = [0]
    for i in range(total):
        starts.append(starts[-1] + len(event_line(i)))
    checkpoint = checkpoint_offset(state)
    ahead = sum(1 for s in seqs(fake) if starts[s] >= checkpoint)
    assert ahead <= IN_FLIGHT * BATCH, f"{ahead} events delivered past the checkpoint held by a stuck batch"
    cli.kill9()
    fake.clear_faults()
    cli = spawn("run", *args)
    assert wait_until(lambda: set(seqs(fake)) == set(range(total)), timeout=60)
    time.sleep(0.5)
    assert cli.stop() == 0
    counts = collections.Counter(seqs(fake))
    tally.written, tally.delivered = total, len(counts)
    tally.duplicated = sum(counts.values()) - len(counts)
    tally.note = f"{ahead} delivered past the checkpoint held by the stuck batch"
    assert set(counts) == set(range(total))
    assert tally.duplicated <= IN_FLIGHT * BATCH
