"""The ordering guarantee, in process: `Acker` moves checkpoints only over unbroken
acknowledgements, whatever order the senders finish in, and holds senders to its window."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.delivery.acker import Acker
from forwarder.delivery.batcher import Batcher
from forwarder.model import Batch, StatsigEvent
from forwarder.state.checkpoints import Checkpoints

KEYS = ("a", "b", "c")


class RecordingCheckpoints(Checkpoints):
    """The real checkpoint view, remembering every `advance` in the order it came."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir, "acker-checkpoints.json")
        self.applied: list[dict[str, int]] = []

    def advance(self, positions: dict[str, int], where: dict[str, tuple[str, int, int]]) -> None:
        self.applied.append(dict(positions))
        super().advance(positions, where)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("acker")


@st.composite
def batches_and_order(draw: st.DrawFn) -> tuple[list[Batch], list[int]]:
    """Batches 0..n-1 whose positions grow per file (some carry none), and a completion order."""
    n = draw(st.integers(1, 12))
    ends = dict.fromkeys(KEYS, 0)
    batches = []
    for seq in range(n):
        keys = draw(st.sets(st.sampled_from(KEYS)))
        positions = {}
        for key in sorted(keys):
            ends[key] += draw(st.integers(1, 1000))
            positions[key] = ends[key]
        batches.append(Batch(seq, events=[StatsigEvent(str(seq), seq)], positions=positions, opened=float(seq)))
    return batches, draw(st.permutations(range(n)))


def acked_prefix(done: set[int]) -> int:
    """How many batches, from the first, are all acknowledged."""
    n = 0
    while n in done:
        n += 1
    return n


def expected_offsets(batches: list[Batch], prefix: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for batch in batches[:prefix]:
        out.update(batch.positions)
    return out


def where(key: str) -> tuple[str, int, int]:
    return (f"/logs/{key}", 1, 2)


@settings(max_examples=100, deadline=None)
@given(case=batches_and_order())
def test_checkpoint_holds_at_the_oldest_unacknowledged_batch(state_dir: Path, case: tuple[list[Batch], list[int]]
                                                             ) -> None:
    """After every acknowledgement, in any order: each file's checkpoint is where the unbroken
    run of acknowledged batches from the first ends, never further; positions are applied
    once per batch, in batch order, with no batch skipped."""
    batches, order = case
    checkpoints = RecordingCheckpoints(state_dir)
    acker = Acker(checkpoints, where)
    for batch in batches:
        acker.begin(batch)
    done: set[int] = set()
    for seq in order:
        acker.done(batches[seq])
        done.add(seq)
        prefix = acked_prefix(done)
        offsets = {k: s.offset for k, s in checkpoints.snapshot().items()}
        assert offsets == expected_offsets(batches, prefix), f"acked {sorted(done)}"
        assert checkpoints.applied == [b.positions for b in batches[:prefix] if b.positions]
        unacked = [b.opened for b in batches[prefix:]]
        assert acker.oldest_opened() == (min(unacked) if unacked else None)
    assert all(state.path == f"/logs/{key}" for key, state in checkpoints.snapshot().items())


@settings(max_examples=100, deadline=None)
@given(case=batches_and_order(), window=st.integers(1, 4))
def test_wait_turn_admits_exactly_the_window(state_dir: Path, case: tuple[list[Batch], list[int]],
                                            window: int) -> None:
    """A batch may go only while it is within `window` of the oldest unacknowledged one."""
    batches, order = case
    acker = Acker(RecordingCheckpoints(state_dir), where)
    give_up = threading.Event()
    give_up.set()  # wait_turn answers at once: True inside the window, False outside
    done: set[int] = set()
    for seq in [*order, None]:
        if seq is not None:
            acker.done(batches[seq])
            done.add(seq)
        oldest = acked_prefix(done)
        for batch in batches:
            assert acker.wait_turn(batch, window, give_up) == (batch.seq < oldest + window), (
                f"seq {batch.seq}, oldest unacknowledged {oldest}, window {window}")


def test_a_sender_outside_the_window_waits_until_the_oldest_is_acknowledged(state_dir: Path) -> None:
    acker = Acker(RecordingCheckpoints(state_dir), where)
    batches = [Batch(i, positions={"a": i + 1}) for i in range(3)]
    never = threading.Event()
    turns: list[int] = []
    waiter = threading.Thread(target=lambda: turns.append(2) if acker.wait_turn(batches[2], 2, never) else None)
    waiter.start()
    acker.done(batches[1])  # a later batch finishing does not open the window
    waiter.join(0.5)
    assert waiter.is_alive() and not turns
    acker.done(batches[0])
    waiter.join(10)
    assert turns == [2]


def test_concurrent_senders_stay_in_the_window_and_in_order(state_dir: Path) -> None:
    """Real threads finishing in random order: in flight never beyond the window, and the
    checkpoint only ever moves forward through every batch."""
    window, n = 4, 400
    checkpoints = RecordingCheckpoints(state_dir)
    acker = Acker(checkpoints, where)
    batches = [Batch(i, positions={"a": i + 1}) for i in range(n)]
    todo: Iterator[Batch] = iter(batches)
    lock = threading.Lock()
    finished: set[int] = set()
    violations: list[str] = []
    never = threading.Event()

    def sender(rng: random.Random) -> None:
        while True:
            with lock:
                batch = next(todo, None)
            if batch is None:
                return
            acker.begin(batch)
            assert acker.wait_turn(batch, window, never)
            with lock:
                oldest = acked_prefix(finished)
                if batch.seq >= oldest + window:
                    violations.append(f"{batch.seq} in flight while {oldest} is not acknowledged")
            if rng.random() < 0.3:
                never.wait(rng.random() / 1000)
            with lock:
                finished.add(batch.seq)
            acker.done(batch)

    threads = [threading.Thread(target=sender, args=(random.Random(i),)) for i in range(window)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not violations, violations[:5]
    assert checkpoints.applied == [b.positions for b in batches]
    assert acker.oldest_opened() is None


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.sampled_from(["add", "mark", "take"]), max_size=60), size=st.integers(1, 5))
def test_batch_numbers_are_gap_free(ops: list[str], size: int) -> None:
    """Batches leave the batcher numbered 0, 1, 2, ... (the acker waits for every number);
    an empty batch never leaves, one holding only positions does."""
    batcher = Batcher(size, 10**9, 3600)
    shipped: list[Batch] = []
    offset = 0
    for op in ops:
        if op == "add":
            offset += 10
            if batcher.add(StatsigEvent("e", 0), 10):
                batcher.mark("a", offset)
                shipped.append(batcher.take())  # type: ignore[arg-type]  # full: never None
        elif op == "mark":
            offset += 1
            batcher.mark("a", offset)
        elif (batch := batcher.take()) is not None:
            shipped.append(batch)
    assert [b.seq for b in shipped] == list(range(len(shipped)))
    assert all(b.events or b.positions for b in shipped)


def test_a_batch_goes_only_once_the_checkpoint_file_passes_everything_outside_the_window(tmp_path: Path) -> None:
    """Real threads, real files: when a sender is let through, the checkpoint journal (in the
    kernel) already passes every batch more than `window` behind it and counts it in flight, so a
    kill -9 at any moment re-sends at most the window."""
    window, n = 3, 200
    checkpoints = Checkpoints(tmp_path)
    acker = Acker(checkpoints, where)
    batches = [Batch(i, events=[StatsigEvent(eventName=f"e{i}", time=i)], positions={"a": i + 1}) for i in range(n)]
    todo: Iterator[Batch] = iter(batches)
    lock = threading.Lock()
    violations: list[str] = []
    never = threading.Event()

    def sender(rng: random.Random) -> None:
        while True:
            with lock:
                batch = next(todo, None)
            if batch is None:
                return
            acker.begin(batch)
            assert acker.wait_turn(batch, window, never)
            # What kill -9 leaves: the last whole line (another sender's append may be half read).
            data = checkpoints.journal_path.read_bytes()
            doc = orjson.loads(data[:data.rindex(b"\n")].rsplit(b"\n", 1)[-1])
            passed = doc["files"]["a"]["offset"] if "a" in doc["files"] else 0
            if passed < batch.seq - window + 1:
                violations.append(f"batch {batch.seq} let through with the file at {passed}")
            if not 1 <= doc["in_flight"]["batches"] <= window:
                violations.append(f"batch {batch.seq}: file says {doc['in_flight']} in flight")
            if rng.random() < 0.3:
                never.wait(rng.random() / 1000)
            acker.done(batch)

    threads = [threading.Thread(target=sender, args=(random.Random(i),)) for i in range(window)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not violations, violations[:5]


def test_while_the_checkpoint_cannot_be_written_only_the_window_goes(tmp_path: Path) -> None:
    """A full disk: batches inside the window still go (their in-flight record unwritten), the
    next one waits until the acknowledgement that freed its slot is in the kernel."""
    checkpoints = Checkpoints(tmp_path)
    failing = threading.Event()
    failing.set()

    def publish(version: int) -> bool:
        if failing.is_set():
            return False
        checkpoints.publish(version)
        return True

    acker = Acker(checkpoints, where, publish)
    never = threading.Event()
    batches = [Batch(i, events=[StatsigEvent(eventName=f"e{i}", time=i)], positions={"a": i + 1}) for i in range(3)]
    assert acker.wait_turn(batches[0], 2, never) and acker.wait_turn(batches[1], 2, never)
    acker.done(batches[0])
    acker.done(batches[1])
    turns: list[bool] = []
    waiter = threading.Thread(target=lambda: turns.append(acker.wait_turn(batches[2], 2, never)))
    waiter.start()
    waiter.join(0.6)
    assert waiter.is_alive() and not turns, "batch 0's position is not in the kernel: batch 2 waits"
    failing.clear()  # space again
    waiter.join(5)
    assert turns == [True]
    assert checkpoints.get("a").offset == 2  # type: ignore[union-attr]
    assert orjson.loads(checkpoints.journal_path.read_bytes().splitlines()[-1])["files"]["a"]["offset"] == 2
