"""Hypothesis stateful test of the real FileTailer, polled in-process, against a model.

A writer appends numbered lines (sometimes in two halves) to `events.ndjson` while rules
rotate it by rename, copytruncate it, truncate it, delete the rotated file and restart
the tailer from its saved checkpoints. Positions are acknowledged as soon as lines are
read (an in-process stand-in for the acker). The model: every complete line arrives
exactly once, except the cases the README documents as unavoidable: lines a plain
truncation destroys before they were read, and lines only in a file deleted before the
tailer ever saw it.
"""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from forwarder.model import Chunk, Item
from forwarder.settings import load_settings
from forwarder.source.tailer import FileTailer
from forwarder.state.checkpoints import Checkpoints

SCALE = max(1, int(os.environ.get("TORTURE_SCALE", "1")))
BUDGET = 1 << 20


def line(seq: int) -> bytes:
    return orjson.dumps({"event_name": "e", "metadata": {"seq": seq}, "pad": "x" * (seq % 7)}) + b"\n"


class TailerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tailer-sm-"))
        self.live = self.dir / "events.ndjson"
        self.rotated = self.dir / "events.ndjson.1"
        self.state_dir = self.dir / "state"
        self.state_dir.mkdir()
        self.settings = load_settings(paths=[str(self.dir / "events.ndjson*")], state_dir=self.state_dir,
                                 rotate_wait=0.0)
        self.seq = 0
        self.partial: bytes = b""  # the second half of a line half-written to the live file
        self.files: dict[int, list[int]] = {}  # inode -> seqs of the complete lines in it
        self.written: set[int] = set()  # every complete line written
        self.seen: set[int] = set()  # inodes that existed while the tailer polled
        self.orphans: list[list[int]] = []  # lines of deleted files the tailer may still hold open
        self.optional: set[int] = set()  # lines the tailer may miss (documented, unavoidable)
        self.delivered: collections.Counter[int] = collections.Counter()
        self._start()

    # -- the system under test ------------------------------------------------------------
    def _start(self) -> None:
        self.checkpoints = Checkpoints(self.state_dir)
        self.tailer = FileTailer(list(self.settings.paths), self.checkpoints, self.settings)

    def _deliver(self, items: list[Item]) -> None:
        for item in items:
            assert isinstance(item, Chunk), item  # nothing here is invalid: no rejection
            assert item.key is not None
            for raw in item.data.splitlines():
                self.delivered[orjson.loads(raw)["metadata"]["seq"]] += 1
            self.checkpoints.advance({item.key: item.start + len(item.data)},
                                     {item.key: self.tailer.location(item.key)})

    def _poll(self, times: int = 3) -> None:
        for _ in range(times):
            self.seen.update(ino for ino in self._inodes())
            self.tailer.rescan = True  # every poll is a glob_interval sweep (polls are sub-millisecond)
            self._deliver(self.tailer.poll(BUDGET))

    # -- the model ------------------------------------------------------------------------
    def _inodes(self) -> list[int]:
        return [p.stat().st_ino for p in (self.live, self.rotated) if p.exists()]

    def _ino(self, path: Path) -> int:
        return path.stat().st_ino

    def _complete_partial(self) -> None:
        if self.partial:
            with open(self.live, "ab") as f:
                f.write(self.partial)
            self.partial = b""
            self.files.setdefault(self._ino(self.live), []).append(self.seq - 1)
            self.written.add(self.seq - 1)

    def _lose_unread(self, ino: int) -> None:
        self.optional.update(s for s in self.files.pop(ino, []) if not self.delivered[s])

    def _drop_rotated(self) -> None:
        """The rotated file goes away (deleted, or replaced by the next rotation)."""
        if self.rotated.exists():
            ino = self._ino(self.rotated)
            if ino not in self.seen:
                self._lose_unread(ino)  # deleted before the tailer ever looked: nobody can read it
            self.orphans.append(self.files.pop(ino, []))
            self.seen.discard(ino)  # the inode number may be reused by the next new file
            self.rotated.unlink()

    # -- rules --------------------------------------------------------------------------------
    @rule(n=st.integers(1, 5), half=st.booleans())
    def append(self, n: int, half: bool) -> None:
        self._complete_partial()
        new = list(range(self.seq, self.seq + n))
        data = b"".join(line(s) for s in new)
        self.seq += n
        if half:  # the last line only half written for now
            cut = len(data) - len(line(new[-1])) // 2
            data, self.partial = data[:cut], data[cut:]
            new = new[:-1]
        with open(self.live, "ab") as f:
            f.write(data)
        self.files.setdefault(self._ino(self.live), []).extend(new)
        self.written.update(new)

    @rule()
    def poll(self) -> None:
        self._poll()

    @precondition(lambda self: self.live.exists())
    @rule()
    def rename_rotation(self) -> None:
        self._complete_partial()
        self._drop_rotated()
        os.rename(self.live, self.rotated)
        self.live.touch()
        self.files.setdefault(self._ino(self.live), [])

    @precondition(lambda self: self.live.exists())
    @rule()
    def copytruncate(self) -> None:
        self._complete_partial()
        self._drop_rotated()
        shutil.copyfile(self.live, self.rotated)
        ino = self._ino(self.live)
        self.files[self._ino(self.rotated)] = self.files.pop(ino, [])
        os.truncate(self.live, 0)
        self.files[ino] = []

    @precondition(lambda self: self.live.exists())
    @rule()
    def truncate(self) -> None:
        self._complete_partial()
        ino = self._ino(self.live)
        self._lose_unread(ino)
        os.truncate(self.live, 0)
        self.files[ino] = []

    @precondition(lambda self: self.rotated.exists())
    @rule()
    def delete_rotated(self) -> None:
        self._drop_rotated()

    @rule()
    def restart(self) -> None:
        self.tailer.close()
        self.checkpoints.flush()
        self.seen.clear()  # the new tailer has opened nothing yet
        for seqs in self.orphans:  # deleted files die with the descriptors holding them
            self.optional.update(s for s in seqs if not self.delivered[s])
        self.orphans.clear()
        self._start()

    # -- checks ---------------------------------------------------------------------------------
    @invariant()
    def nothing_twice_nothing_invented(self) -> None:
        dups = [s for s, c in self.delivered.items() if c > 1]
        assert not dups, f"delivered twice: {dups}"
        assert all(s < self.seq for s in self.delivered)

    def teardown(self) -> None:
        try:
            self._complete_partial() if self.live.exists() else None
            for _ in range(5):
                self._poll()
            missing = sorted(self.written - set(self.delivered) - self.optional)
            assert not missing, f"never delivered: {missing}"
            self.nothing_twice_nothing_invented()
        finally:
            self.tailer.close()
            shutil.rmtree(self.dir, ignore_errors=True)


TailerMachine.TestCase.settings = settings(
    max_examples=40 * SCALE, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_tailer_against_model = TailerMachine.TestCase
