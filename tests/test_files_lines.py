"""Scenario tests: partial lines, CRLF, long lines, small files, damaged checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from kit import (
    assert_exactly_once,
    assert_no_loss,
    deliver_and_stop,
    event_line,
    read_checkpoints,
    run,
    seqs,
    wait_seqs,
    wait_until,
    write,
)


def _file(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d / "events.ndjson"


def _dead(state: Path) -> list[dict[str, Any]]:
    p = state / "dead-letter.ndjson"
    return [orjson.loads(x) for x in p.read_bytes().splitlines()] if p.exists() else []


def test_crlf_lines_are_accepted(spawn, fake, tmp_path):
    f = _file(tmp_path)
    f.write_bytes(b"".join(event_line(i).replace(b"\n", b"\r\n") for i in range(10)))
    cli = run(spawn, fake, tmp_path / "state", str(f))
    assert_exactly_once(fake, range(10))
    assert cli.stop() == 0


def test_long_line_is_dead_lettered_and_the_file_still_followed(spawn, fake, tmp_path):
    f = _file(tmp_path)
    state = tmp_path / "state"
    write(f, range(5))
    long_at = f.stat().st_size
    with open(f, "ab") as out:
        out.write(b'{"event_name": "x", "pad": "' + b"y" * 50_000 + b'"}\n')
    write(f, range(5, 10))
    cli = run(spawn, fake, state, str(f), "--max-line-bytes", "4096")
    wait_seqs(fake, range(10))
    write(f, range(10, 15))
    assert_exactly_once(fake, range(15))
    assert cli.stop() == 0
    [rec] = _dead(state)
    assert rec["offset"] == long_at and rec["size"] == 50_000 + 30 and rec["truncated"] is True
    assert "line too long" in rec["reason"]


def test_small_file_with_one_short_line_is_not_held_back(spawn, fake, tmp_path):
    f = _file(tmp_path)
    f.write_bytes(b'{"event_name":"tiny","metadata":{"seq":0}}\n')  # far below fingerprint_bytes
    cli = run(spawn, fake, tmp_path / "state", str(f))
    assert_exactly_once(fake, [0])
    assert cli.stop() == 0


def test_short_unterminated_file_is_identified_after_fingerprint_wait_and_resumed(spawn, fake, tmp_path):
    f = _file(tmp_path)
    state = tmp_path / "state"
    f.write_bytes(b'{"event_name":"tiny","metadata":{"seq":0}}')  # no newline, never completed yet
    args = ("--fingerprint-wait", "0.3", "--partial-line-timeout", "0.5")
    cli = run(spawn, fake, state, str(f), *args)
    assert_exactly_once(fake, [0])  # a whole JSON object: delivered once the timeout passed
    assert cli.stop() == 0
    assert next(iter(read_checkpoints(state))).startswith("head")
    with open(f, "ab") as out:  # the writer finishes the line, and goes on
        out.write(b"\n" + event_line(1))
    cli = run(spawn, fake, state, str(f), *args)
    assert_exactly_once(fake, [0, 1])  # same file (its first bytes match): resumed, not re-read
    assert cli.stop() == 0
    assert _dead(state) == []


def test_partial_line_timeout_dead_letters_a_fragment(spawn, fake, tmp_path):
    f = _file(tmp_path)
    state = tmp_path / "state"
    write(f, range(3))
    with open(f, "ab") as out:
        out.write(b'{"event_name": "cut off')
    cli = run(spawn, fake, state, str(f), "--partial-line-timeout", "0.5")
    wait_seqs(fake, range(3))
    assert wait_until(lambda: len(_dead(state)) == 1, 10)
    assert _dead(state)[0]["line"] == '{"event_name": "cut off'
    write(f, range(3, 6))  # the file is still followed
    assert_exactly_once(fake, range(6))
    assert cli.stop() == 0


def test_partial_line_is_held_until_its_newline(spawn, fake, tmp_path):
    f = _file(tmp_path)
    state = tmp_path / "state"
    line = event_line(3)
    write(f, range(3))
    with open(f, "ab") as out:
        out.write(line[:50])
    cli = run(spawn, fake, state, str(f))  # default partial_line_timeout: 30 s
    wait_seqs(fake, range(3))
    with open(f, "ab") as out:
        out.write(line[50:])
    assert_exactly_once(fake, range(4))
    assert cli.stop() == 0
    assert _dead(state) == []


@pytest.mark.parametrize("damage", ["missing", "empty", "corrupt", "old_version"])
def test_damaged_checkpoint_means_rereading_never_loss(spawn, fake, tmp_path, damage):
    f = _file(tmp_path)
    state = tmp_path / "state"
    write(f, range(20))
    deliver_and_stop(spawn, fake, state, range(20), str(f))
    cp = state / "checkpoints.json"
    if damage == "missing":
        cp.unlink()
    elif damage == "empty":
        cp.write_bytes(b"")
    elif damage == "corrupt":
        cp.write_bytes(b'{"version": 1, "files": {"crc:1": {"off')
    else:
        cp.write_bytes(b'{"version": 0, "positions": []}')
    write(f, range(20, 30))
    cli = run(spawn, fake, state, str(f))
    assert_no_loss(fake, range(30))
    assert cli.stop() == 0
    assert sorted(set(seqs(fake))) == list(range(30))
    assert read_checkpoints(state)  # a fresh, valid checkpoint was written
