"""Checkpoint writes failing at run time, and torn or garbage checkpoint files at start."""

from __future__ import annotations

import collections
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kit import SCALE, SECRET, Cli, Tally, append, cli_env, event_line, fast_args, seqs, wait_until

from forwarder.source.fingerprint import fingerprint_fd
from forwarder.state.checkpoints import Checkpoints, FileState

CKPT = "checkpoints.json"


def file_key(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        key = fingerprint_fd(fd)
    finally:
        os.close(fd)
    assert key is not None
    return key


def checkpoint_offset(state: Path) -> int | None:
    try:
        files = orjson.loads((state / CKPT).read_bytes())["files"]
    except FileNotFoundError:
        return None
    return max((f["offset"] for f in files.values()), default=0)


def spawn_fsize_capable(tmp_path: Path, args: list[str]) -> Cli:
    """The CLI with SIGXFSZ ignored, so a lowered RLIMIT_FSIZE makes writes fail with EFBIG."""
    def ignore_sigxfsz() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "-m", "forwarder", "run", *args], cwd=tmp_path,
                            env=cli_env(STATSIG_SERVER_SECRET_KEY=SECRET, FORWARDER_LOG_FORMAT="json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=ignore_sigxfsz)
    return Cli(proc)


def _efbig(cli: Cli, state: Path) -> Callable[[], object]:
    """Disk 'full' for files: any write past 16 bytes fails (a checkpoint is ~250 bytes)."""
    resource.prlimit(cli.proc.pid, resource.RLIMIT_FSIZE, (16, resource.RLIM_INFINITY))
    return lambda: resource.prlimit(cli.proc.pid, resource.RLIMIT_FSIZE,
                                    (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _dir_in_the_way(cli: Cli, state: Path) -> Callable[[], None]:
    """A non-empty directory where the temp file goes: open() fails with EISDIR."""
    blocker = state / (CKPT + ".tmp")
    blocker.mkdir()
    (blocker / "x").write_bytes(b"x")
    return lambda: shutil.rmtree(blocker)


@pytest.mark.parametrize("fault", [_efbig, _dir_in_the_way], ids=["efbig", "dir_in_the_way"])
def test_failing_checkpoint_writes_keep_the_previous_checkpoint(
    fake, tmp_path: Path, tally: Tally, fault: Callable[[Cli, Path], Callable[[], None]]
) -> None:
    log = tmp_path / "events.ndjson"
    state = tmp_path / "state"
    n = 200
    log.write_bytes(b"".join(event_line(i) for i in range(n)))
    args = [str(log), *fast_args(fake, state)]
    cli = spawn_fsize_capable(tmp_path, args)
    try:
        assert fake.wait_for(n)
        assert wait_until(lambda: checkpoint_offset(state) == log.stat().st_size)
        good = (state / CKPT).read_bytes()

        # 1. Writes fail: reported once, delivery goes on, the previous checkpoint stays whole.
        clear = fault(cli, state)
        append(log, b"".join(event_line(i) for i in range(n, 2 * n)))
        rec = cli.wait_log("cannot write checkpoint, will retry")
        assert rec["level"] == "error" and rec["error"]
        assert fake.wait_for(2 * n)
        assert (state / CKPT).read_bytes() == good
        # 2. The fault clears: the next interval writes the delivered position.
        clear()
        cli.wait_log("checkpoint writes recovered")
        assert wait_until(lambda: checkpoint_offset(state) == log.stat().st_size)
        good = (state / CKPT).read_bytes()

        # 3. Failing again, then kill -9. With the disk full the journal cannot be written either:
        # the restart resumes at the last good checkpoint. With only the temp file blocked, the
        # journal still reaches the kernel and the restart resumes there.
        fault(cli, state)
        append(log, b"".join(event_line(i) for i in range(2 * n, 3 * n)))
        assert fake.wait_for(3 * n)
        assert wait_until(lambda: sum(1 for r in cli.logs() if "cannot write checkpoint" in r.get("msg", "")) >= 2)
        assert (state / CKPT).read_bytes() == good
        cli.kill9()
    finally:
        if cli.proc.poll() is None:
            cli.kill9()
    blocker = state / (CKPT + ".tmp")
    if blocker.is_dir():
        shutil.rmtree(blocker)
    cli = spawn_fsize_capable(tmp_path, args)
    assert fake.wait_for(4 * n)
    assert wait_until(lambda: checkpoint_offset(state) == log.stat().st_size)
    assert cli.stop() == 0
    assert not any(r.get("level") == "error" for r in cli.logs() if "checkpoint" in r.get("msg", ""))
    counts = collections.Counter(seqs(fake))
    tally.written, tally.delivered = 3 * n, len(counts)
    tally.duplicated = sum(counts.values()) - len(counts)
    tally.note = "failing writes, recovery, kill -9 while failing"
    assert set(counts) == set(range(3 * n))
    if fault is _efbig:
        assert tally.duplicated == n, "exactly what was delivered after the last good checkpoint is re-sent"
    else:
        assert tally.duplicated <= 2 * 500, "at most the batches in flight (max_in_flight x batch_size)"


N_AT_START = 50
RESUME_AT = 20  # line a valid checkpoint points at


def _valid(log: Path) -> bytes:
    offset = sum(len(event_line(i)) for i in range(RESUME_AT))
    doc = {"version": 1, "files": {file_key(log): {"offset": offset, "path": str(log), "dev": 0, "ino": 0,
                                                   "updated": 0.0}}}
    return orjson.dumps(doc)


# name -> (how to damage the state dir, reported at level, first line expected to be re-sent)
DAMAGE: dict[str, tuple[Callable[[Path, Path], object], str | None, int]] = {
    "empty": (lambda s, log: (s / CKPT).write_bytes(b""), "error", 0),
    "torn": (lambda s, log: (s / CKPT).write_bytes(_valid(log)[:37]), "error", 0),
    "garbage": (lambda s, log: (s / CKPT).write_bytes(os.urandom(300)), "error", 0),
    "nul_filled": (lambda s, log: (s / CKPT).write_bytes(b"\0" * 4096), "error", 0),
    "future_version": (lambda s, log: (s / CKPT).write_bytes(b'{"version": 2, "files": {}}'), "error", 0),
    "files_not_object": (lambda s, log: (s / CKPT).write_bytes(b'{"version": 1, "files": [1]}'), "error", 0),
    "negative_offset": (lambda s, log: (s / CKPT).write_bytes(_valid(log).replace(b'"offset":', b'"offset":-')),
                        "error", 0),
    "a_directory": (lambda s, log: (s / CKPT).mkdir(), "error", 0),
    "offset_past_eof": (lambda s, log: (s / CKPT).write_bytes(_valid(log).replace(b'"offset":', b'"offset":9')),
                        "warning", 0),
    "torn_tmp_valid_main": (lambda s, log: ((s / CKPT).write_bytes(_valid(log)),
                                            (s / (CKPT + ".tmp")).write_bytes(b'{"vers')), "warning", RESUME_AT),
    "valid_tmp_garbage_main": (lambda s, log: ((s / CKPT).write_bytes(b"{{{"),
                                               (s / (CKPT + ".tmp")).write_bytes(_valid(log))), None, RESUME_AT),
}


@pytest.mark.parametrize("start_at", ["beginning", "end"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoint_at_start_is_reported_and_nothing_is_lost(
    fake, spawn, tmp_path: Path, tally: Tally, damage: str, start_at: str
) -> None:
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(N_AT_START)))
    state = tmp_path / "state"
    state.mkdir()
    make, level, first = DAMAGE[damage]
    make(state, log)
    cli = spawn("run", "--once", str(log), *fast_args(fake, state), "--start-at", start_at)
    assert cli.wait(60) == 0, bytes(cli.stderr).decode(errors="replace")
    logs = [r for r in cli.logs() if "checkpoint" in r.get("msg", "") or "shorter than" in r.get("msg", "")]
    if level is None:
        assert not any(r["level"] in ("warning", "error") for r in logs), logs
    else:
        assert any(r["level"] == level for r in logs), logs
    counts = collections.Counter(seqs(fake))
    tally.written, tally.delivered = N_AT_START, len(counts)
    tally.duplicated = sum(counts.values()) - len(counts)
    tally.note = f"resumed at line {min(counts, default=-1)}"
    # Never loss: everything after the last trustworthy position arrives, exactly once.
    assert sorted(counts) == list(range(first, N_AT_START))
    assert max(counts.values()) == 1
    assert checkpoint_offset(state) == log.stat().st_size


@settings(max_examples=200 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(main=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
       tmp=st.none() | st.binary(max_size=100), seed_valid=st.booleans())
def test_any_bytes_in_the_checkpoint_files_load_without_crashing(
    tmp_path_factory: pytest.TempPathFactory, main: bytes, tmp: bytes | None, seed_valid: bool
) -> None:
    state = tmp_path_factory.mktemp("state")
    if seed_valid:  # a plausible prefix, so the parser gets past "not JSON" sometimes
        main = b'{"version": 1, "files": {"k": {"offset": ' + main
    (state / CKPT).write_bytes(main)
    if tmp is not None:
        (state / (CKPT + ".tmp")).write_bytes(tmp)
    checkpoints = Checkpoints(state)  # never raises
    for entry in checkpoints.snapshot().values():
        assert entry.offset >= 0
    checkpoints.set("k", FileState(7, "p"))
    checkpoints.flush()
    reloaded = Checkpoints(state)  # and what it writes next is valid
    k = reloaded.get("k")
    assert reloaded.load_problem is None and k is not None and k == FileState(7, "p", updated=k.updated)


def test_dead_letter_write_failing_for_a_statsig_rejection_holds_and_recovers(
    fake, tmp_path: Path, tally: Tally
) -> None:
    """Statsig refuses an event (400) while the disk is full: the sender keeps the batch and retries."""
    log = tmp_path / "events.ndjson"
    state = tmp_path / "state"
    log.write_bytes(b"".join(event_line(i) for i in range(50)))
    fake.reject_if = lambda e: e.get("eventName") == "poison"
    cli = spawn_fsize_capable(tmp_path, [str(log), *fast_args(fake, state)])
    try:
        assert fake.wait_for(50)
        assert wait_until(lambda: checkpoint_offset(state) == log.stat().st_size)
        restore = _efbig(cli, state)
        append(log, event_line(50) + orjson.dumps({"event_name": "poison"}) + b"\n"
               + b"".join(event_line(i) for i in range(51, 100)))
        cli.wait_log("cannot write dead-letter file")
        time.sleep(1)  # a few retries; the batch is held, not dropped, the sender alive
        assert (checkpoint_offset(state) or 0) < log.stat().st_size
        restore()
        assert fake.wait_for(100)
        assert wait_until(lambda: checkpoint_offset(state) == log.stat().st_size), "the batch is acknowledged"
        assert cli.proc.poll() is None
    finally:
        assert cli.stop() == 0
    dead = [orjson.loads(r) for r in (state / "dead-letter.ndjson").read_bytes().splitlines()]
    assert [d["reason"].startswith("rejected by Statsig") for d in dead] == [True]
    counts = collections.Counter(seqs(fake))
    tally.written, tally.delivered, tally.dead_lettered = 101, len(counts), len(dead)
    tally.duplicated = sum(counts.values()) - len(counts)
    tally.note = "400 for one event while the dead-letter file cannot be written"
    assert set(counts) == set(range(100))
