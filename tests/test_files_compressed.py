"""Scenario tests: compressed rotated files (.gz) matched by `run`'s globs: read whole, once."""

from __future__ import annotations

import gzip
import os
import time
import zlib
from pathlib import Path
from typing import Any

from kit import assert_exactly_once, fast_args, lines, logs_dir, read_checkpoints, run, wait_seqs, write


def _write_gz_slowly(dest: Path, data: bytes, pieces: int = 8, pause: float = 0.15) -> None:
    """Write a .gz under its final name in pieces, as logrotate's `compress` does (pause < rotate_wait)."""
    packed = gzip.compress(data)
    step = len(packed) // pieces + 1
    with open(dest, "wb") as out:
        for i in range(0, len(packed), step):
            out.write(packed[i : i + step])
            out.flush()
            time.sleep(pause)


def _msgs(cli, text: str) -> list[dict[str, Any]]:
    return [r for r in cli.logs() if text in r.get("msg", "")]


def test_logrotate_compress_of_a_delivered_file_sends_nothing_again(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    state = tmp_path / "state"
    pattern = str(logs / "events.ndjson*")
    write(f, range(50))
    cli = run(spawn, fake, state, pattern)
    wait_seqs(fake, range(50))
    rotated = logs / "events.ndjson.1"
    os.rename(f, rotated)  # logrotate: rename, create, compress, delete the uncompressed copy
    write(f, range(50, 60))
    _write_gz_slowly(logs / "events.ndjson.1.gz", rotated.read_bytes())
    rotated.unlink()
    rec = cli.wait_log("compressed file read; released")
    assert rec["path"].endswith("events.ndjson.1.gz")
    write(f, range(60, 70))
    assert_exactly_once(fake, range(70))
    assert not _msgs(cli, "corrupt")
    assert cli.stop() == 0
    # After a restart the .gz still carries the delivered position of the file it was made from.
    (key,) = [k for k, v in read_checkpoints(state).items() if v["path"].endswith(".gz")]
    assert read_checkpoints(state)[key]["offset"] == len(lines(range(50)))
    cli = run(spawn, fake, state, pattern)
    cli.wait_log("compressed file read; released")
    write(f, range(70, 80))
    assert_exactly_once(fake, range(80))
    assert cli.stop() == 0


def test_new_gz_written_slowly_is_delivered_exactly_once(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    state = tmp_path / "state"
    write(f, range(10))
    (logs / "present.ndjson.gz").write_bytes(gzip.compress(lines(range(2000, 2100))))  # there at start
    cli = run(spawn, fake, state, str(logs / "*.ndjson*"))
    wait_seqs(fake, [*range(10), *range(2000, 2100)])
    # Never seen as plain text, and still being written when first found: read once complete.
    _write_gz_slowly(logs / "old.ndjson.gz", lines(range(10, 1010)))
    expected = [*range(1010), *range(2000, 2100)]
    assert_exactly_once(fake, expected)
    assert not _msgs(cli, "corrupt"), "read before it was complete"
    ids = {e["metadata"]["forwarder_event_id"] for e in fake.events if 10 <= e["metadata"]["seq"] < 1010}
    assert len(ids) == 1000 and all(i.startswith("crc:") for i in ids)
    assert cli.stop() == 0
    cli = run(spawn, fake, state, str(logs / "*.ndjson*"))  # read once: not again after a restart
    write(f, range(3000, 3010))
    assert_exactly_once(fake, [*expected, *range(3000, 3010)])
    assert cli.stop() == 0


def test_restart_midway_through_a_large_gz_resumes_without_loss_or_duplicates(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    state = tmp_path / "state"
    data = lines(range(20000))
    (logs / "big.ndjson.1.gz").write_bytes(gzip.compress(data))
    fake.latency = 0.05  # slow enough to stop it midway
    cli = spawn("run", str(logs / "*.gz"), *fast_args(fake, state), "--batch-size", "100",
                "--max-in-flight", "1")
    assert fake.wait_for(1500, timeout=30)
    assert cli.stop() == 0
    (saved,) = read_checkpoints(state).values()
    assert 0 < saved["offset"] < len(data)  # decompressed offset of a line boundary
    assert data[saved["offset"] - 1 : saved["offset"]] == b"\n"
    fake.latency = 0.0
    cli = run(spawn, fake, state, str(logs / "*.gz"))
    cli.wait_log("resuming file at checkpoint")
    assert_exactly_once(fake, range(20000))
    assert cli.stop() == 0
    (saved,) = read_checkpoints(state).values()
    assert saved["offset"] == len(data)


def test_corrupt_gz_delivers_what_it_can_and_other_files_keep_flowing(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    write(f, range(100))
    packed = gzip.compress(lines(range(1000, 3000)))
    (logs / "cut.ndjson.gz").write_bytes(packed[: len(packed) // 2])  # truncated mid-stream
    (logs / "junk.ndjson.gz").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)  # magic, then garbage
    readable = zlib.decompressobj(wbits=31).decompress(packed[: len(packed) // 2])
    complete = readable.count(b"\n")  # whole lines before the damage
    assert 0 < complete < 2000
    cli = run(spawn, fake, tmp_path / "state", str(logs / "*.ndjson*"))
    damaged = cli.wait_log("truncated or corrupt")
    assert damaged["path"].endswith("cut.ndjson.gz") and damaged["level"] == "error"
    assert cli.wait_log("cannot read gzip file")["path"].endswith("junk.ndjson.gz")
    write(f, range(100, 110))  # the plain file is still followed
    assert_exactly_once(fake, [*range(110), *range(1000, 1000 + complete)])
    time.sleep(1.2)  # several glob_interval sweeps: a damaged file is not read again and again
    assert len(_msgs(cli, "truncated or corrupt")) == 1
    assert len(_msgs(cli, "cannot read gzip file")) == 1
    write(f, range(110, 120))
    assert_exactly_once(fake, [*range(120), *range(1000, 1000 + complete)])
    assert cli.stop() == 0


def test_gz_compressed_before_the_last_writes_sends_nothing_again(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    f = logs / "events.ndjson"
    write(f, range(50))
    cli = run(spawn, fake, tmp_path / "state", str(logs / "events.ndjson*"))
    wait_seqs(fake, range(50))
    rotated = logs / "events.ndjson.1"
    os.rename(f, rotated)
    (logs / "events.ndjson.1.gz").write_bytes(gzip.compress(rotated.read_bytes()))
    write(rotated, range(50, 60))  # the app writes on to its old descriptor after gzip read it
    write(f, range(60, 70))
    wait_seqs(fake, range(70))
    rotated.unlink()  # the .gz holds less than what was read from the plain file
    cli.wait_log("nothing to send")
    cli.wait_log("compressed file read; released")
    write(f, range(70, 80))
    assert_exactly_once(fake, range(80))
    assert cli.stop() == 0


def test_start_at_end_skips_gz_present_at_start_but_reads_new_ones(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    (logs / "history.ndjson.2.gz").write_bytes(gzip.compress(lines(range(100))))
    write(logs / "events.ndjson", range(100, 110))
    cli = run(spawn, fake, tmp_path / "state", str(logs / "*.ndjson*"), "--start-at", "end")
    cli.wait_log("compressed file present at start not read")
    (logs / "events.ndjson.1.gz").write_bytes(gzip.compress(lines(range(200, 220))))  # appears later
    write(logs / "events.ndjson", range(110, 120))
    assert_exactly_once(fake, [*range(110, 120), *range(200, 220)])
    assert cli.stop() == 0


def test_empty_gz_filled_a_moment_after_it_appears_is_read_once_as_gzip(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    state = tmp_path / "state"
    write(logs / "events.ndjson", range(10))
    cli = run(spawn, fake, state, str(logs / "events.ndjson*"))
    wait_seqs(fake, range(10))
    gz = logs / "events.ndjson.1.gz"
    gz.touch()  # logrotate `compress` creates the .gz empty...
    time.sleep(0.8)  # ...the forwarder sees it empty (glob_interval 0.5 s)...
    _write_gz_slowly(gz, lines(range(100, 300)))  # ...then gzip fills it
    assert_exactly_once(fake, [*range(10), *range(100, 300)])
    assert cli.stop() == 0
    assert not (state / "dead-letter.ndjson").exists()
    assert not _msgs(cli, "invalid")
