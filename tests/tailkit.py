"""Helpers for the file-following scenario tests (tests/test_files_*.py)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from conftest import Cli, event_line, fast_args, seqs, wait_until
from fake_statsig import FakeStatsig


def logs_dir(tmp_path: Path) -> Path:
    """A fresh directory for a scenario's log files (apart from the state dir)."""
    d = tmp_path / "logs"
    d.mkdir()
    return d


def lines(seq_range: Iterable[int]) -> bytes:
    return b"".join(event_line(i) for i in seq_range)


def write(path: Path, seq_range: Iterable[int]) -> None:
    with open(path, "ab") as f:
        f.write(lines(seq_range))


def run(spawn: Callable[..., Cli], fake: FakeStatsig, state: Path, *args: str) -> Cli:
    """The real CLI following `args` (paths and extra flags) with quick intervals."""
    return spawn("run", *args, *fast_args(fake, state))


def deliver_and_stop(spawn: Callable[..., Cli], fake: FakeStatsig, state: Path, expected: Iterable[int],
                     *args: str) -> None:
    """A first run that delivers `expected` and stops cleanly (the state then holds its checkpoints)."""
    cli = run(spawn, fake, state, *args)
    wait_seqs(fake, expected)
    assert cli.stop() == 0


def wait_seqs(fake: FakeStatsig, expected: Iterable[int], timeout: float = 30) -> None:
    want = set(expected)
    ok = wait_until(lambda: want <= set(seqs(fake)), timeout)
    missing = sorted(want - set(seqs(fake)))
    assert ok, f"{len(missing)} events missing, first {missing[:10]}"


def assert_exactly_once(fake: FakeStatsig, expected: Iterable[int], settle: float = 0.6) -> None:
    """Every expected event arrived exactly once, and nothing else arrived."""
    wait_seqs(fake, expected)
    time.sleep(settle)  # a duplicate would arrive within a flush or two
    got = seqs(fake)
    dups = sorted(k for k, c in collections.Counter(got).items() if c > 1)
    assert not dups, f"{len(dups)} duplicated, first {dups[:10]}"
    assert sorted(got) == sorted(set(expected))


def assert_no_loss(fake: FakeStatsig, expected: Iterable[int]) -> None:
    """After a kill -9: every event arrived at least once (duplicates allowed)."""
    wait_seqs(fake, expected)
    assert set(seqs(fake)) == set(expected)
