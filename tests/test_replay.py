"""`replay`: whole files (plain and .gz) delivered once, oldest first, resumable, filtered, paced."""

from __future__ import annotations

import gzip
import os
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from kit import event_line, fast_args, seqs

T0 = 1760000000000  # event_line(seq) has time T0 + seq


def write(path: Path, lines: list[bytes], mtime_ago: float = 0) -> Path:
    data = b"".join(lines)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    if mtime_ago:
        t = path.stat().st_mtime - mtime_ago
        os.utime(path, (t, t))
    return path


def three_files(tmp: Path, per_file: int) -> list[Path]:
    """Oldest first by mtime; names sort the other way, so order comes from mtime."""
    n = per_file
    return [
        write(tmp / "z-oldest.ndjson", [event_line(i) for i in range(0, n)], mtime_ago=300),
        write(tmp / "m-middle.ndjson.gz", [event_line(i) for i in range(n, 2 * n)], mtime_ago=200),
        write(tmp / "a-newest.ndjson", [event_line(i) for i in range(2 * n, 3 * n)]),
    ]


def finished(cli: Any) -> dict[str, Any]:
    return next(r for r in cli.logs() if r.get("msg") in ("replay finished", "replay interrupted"))


def test_replay_three_files_with_gz_delivers_each_event_once_oldest_first(spawn, fake, tmp_path):
    three_files(tmp_path, 100)
    state = tmp_path / "state"
    args = [*fast_args(fake, state), "--max-in-flight", "1"]
    cli = spawn("replay", str(tmp_path / "*.ndjson"), str(tmp_path / "*.gz"), *args)
    assert cli.wait() == 0, cli.stderr.decode()
    assert seqs(fake) == list(range(300))  # every event once, files oldest first
    ids = [e["metadata"]["forwarder_event_id"] for e in fake.events]
    assert len(set(ids)) == 300
    summary = finished(cli)
    assert (summary["events_read"], summary["events_delivered"], summary["events_skipped"]) == (300, 300, 0)
    assert b"replay done: 300 events read, 300 delivered" in cli.stderr
    # Its own namespace: `run`'s checkpoints are untouched; replay's sit at each file's end
    # (decompressed size for the .gz).
    assert not (state / "checkpoints.json").exists()
    saved = orjson.loads((state / "replay-checkpoints.json").read_bytes())["files"]
    sizes = {str(p): len(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes())
             for p in tmp_path.glob("*.ndjson*")}
    assert {s["path"]: s["offset"] for s in saved.values()} == sizes

    again = spawn("replay", str(tmp_path / "*.ndjson"), str(tmp_path / "*.gz"), *args)
    assert again.wait() == 0
    assert fake.event_count == 300  # never sent twice by accident
    assert finished(again)["events_read"] == 0

    restart = spawn("replay", str(tmp_path / "*.ndjson*"), *args, "--restart")
    assert restart.wait() == 0
    assert sorted(seqs(fake)) == sorted(list(range(300)) * 2)  # on purpose: all again


def test_replay_interrupted_then_rerun_completes_without_duplicates(spawn, fake, tmp_path):
    files = three_files(tmp_path, 200)
    state = tmp_path / "state"
    cli = spawn("replay", *map(str, files), *fast_args(fake, state), "--rate", "150")
    assert fake.wait_for(150, timeout=20)
    cli.signal(signal.SIGINT)
    assert cli.wait() == 130
    first = Counter(seqs(fake))
    assert 150 <= len(first) < 600
    assert b"replay interrupted" in cli.stderr

    rerun = spawn("replay", *map(str, files), *fast_args(fake, state))
    assert rerun.wait() == 0
    counts = Counter(seqs(fake))
    assert sorted(counts) == list(range(600))
    assert max(counts.values()) == 1, [s for s, c in counts.items() if c > 1][:10]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def test_replay_since_until_boundaries_and_events_without_time(spawn, fake, tmp_path):
    lines = [event_line(i) for i in range(20)]
    lines[7] = event_line(7, time=iso(T0 + 7))  # ISO times are compared too
    lines.insert(10, orjson.dumps({"event_name": "no_time", "metadata": {"seq": 1000}}) + b"\n")
    path = write(tmp_path / "events.ndjson", lines)
    state = tmp_path / "state"
    # since is inclusive, until exclusive: [T0+5, T0+15); given as epoch ms and as ISO.
    window = ["--since", str(T0 + 5), "--until", iso(T0 + 15)]
    cli = spawn("replay", str(path), *fast_args(fake, state), *window)
    assert cli.wait() == 0, cli.stderr.decode()
    assert seqs(fake) == [5, 6, 7, 8, 9, 1000, 10, 11, 12, 13, 14]  # no time: kept, in file order
    assert finished(cli)["events_skipped"] == 10

    fake.events.clear()
    strict = spawn("replay", str(path), *fast_args(fake, state), *window, "--require-time", "--restart")
    assert strict.wait() == 0
    assert seqs(fake) == list(range(5, 15))
    # Skipped events still move the position: nothing left to send.
    again = spawn("replay", str(path), *fast_args(fake, state), *window)
    assert again.wait() == 0
    assert seqs(fake) == list(range(5, 15))


def test_replay_filter_event_and_dry_run(spawn, fake, tmp_path):
    names = ["a", "b", "c"]
    path = write(tmp_path / "e.ndjson", [event_line(i, event_name=names[i % 3]) for i in range(30)])
    state = tmp_path / "state"
    dry = spawn("replay", str(path), *fast_args(fake, state), "--filter-event", "a", "--filter-event", "c",
                "--dry-run")
    assert dry.wait() == 0
    printed = [orjson.loads(line) for line in bytes(dry.stdout).splitlines()]
    assert [e["metadata"]["seq"] for e in printed] == [i for i in range(30) if i % 3 != 1]
    assert fake.event_count == 0
    # A dry run moves no position: the real replay still sends everything selected.
    cli = spawn("replay", str(path), *fast_args(fake, state), "--filter-event", "b")
    assert cli.wait() == 0
    assert seqs(fake) == list(range(1, 30, 3))


def test_replay_rate_is_respected(spawn, fake, tmp_path):
    path = write(tmp_path / "e.ndjson", [event_line(i) for i in range(250)])
    rate = 100.0
    cli = spawn("replay", str(path), *fast_args(fake, tmp_path / "state"), "--rate", str(rate))
    assert cli.wait() == 0
    accepted = fake.accepted_requests()
    assert sum(len(r.events) for r in accepted) == 250
    # Requests are small and spread out (batches of rate/4), not one burst.
    assert max(len(r.events) for r in accepted) <= rate / 4
    span = accepted[-1].received - accepted[0].received
    measured = (250 - len(accepted[0].events)) / span
    assert 0.9 * rate <= measured <= 1.1 * rate, measured


def test_replay_reads_a_plain_file_and_its_gz_copy_once(spawn, fake, tmp_path):
    lines = [event_line(i) for i in range(50)]
    plain = write(tmp_path / "events.ndjson.1", lines, mtime_ago=100)
    write(tmp_path / "events.ndjson.1.gz", lines)
    cli = spawn("replay", str(tmp_path / "events.ndjson.1*"), *fast_args(fake, tmp_path / "state"))
    assert cli.wait() == 0
    assert seqs(fake) == list(range(50))
    assert plain.exists()


def test_replay_of_a_truncated_gz_delivers_the_complete_lines(spawn, fake, tmp_path):
    data = gzip.compress(b"".join(event_line(i) for i in range(2000)))
    (tmp_path / "cut.ndjson.gz").write_bytes(data[: len(data) // 2])
    cli = spawn("replay", "cut.ndjson.gz", *fast_args(fake, tmp_path / "state"))
    assert cli.wait() == 0
    got = seqs(fake)
    assert 0 < len(got) < 2000 and sorted(got) == list(range(len(got)))
    assert any("truncated or corrupt" in r.get("msg", "") for r in cli.logs())
