"""Unit tests of single modules: line splitting, checkpoints, batching, HTTP answers, settings."""

from __future__ import annotations

import gzip
import os
import queue
import re
import threading
from pathlib import Path

import msgspec
import orjson
import pytest

from forwarder.decode.reader import Reader
from forwarder.delivery.batcher import Batcher
from forwarder.delivery.sink import StatsigSink, classify
from forwarder.errors import AuthError, ConfigError, RejectedError, RetryableError, StateLockedError
from forwarder.model import Batch, Chunk, Item, Rejection, StatsigEvent
from forwarder.settings import load_settings
from forwarder.source.fingerprint import fingerprint_bytes
from forwarder.source.lines import LineBuffer
from forwarder.state.checkpoints import Checkpoints, FileState
from forwarder.state.deadletter import DeadLetter
from forwarder.state.lock import StateDirLock
from forwarder.stats import Stats


def _feed(buf: LineBuffer, *parts: bytes, finish: bool = False) -> list[Item]:
    out: list[Item] = []
    for p in parts:
        buf.feed(p, out)
    if finish:
        buf.finish(out)
    return out


def test_line_buffer_emits_whole_lines_with_offsets() -> None:
    out = _feed(LineBuffer("k", "f", 100, 1000), b"ab", b"c\nde", b"f\ng\n", b"tail")
    assert [(c.start, c.data) for c in out if isinstance(c, Chunk)] == [(100, b"abc\n"), (104, b"def\ng\n")]
    final = _feed(LineBuffer("k", "f", 0, 1000), b"x\ntail", finish=True)
    assert isinstance(final[-1], Chunk) and final[-1].final and final[-1].data == b"tail"


def test_line_buffer_skips_a_huge_line_in_bounded_memory() -> None:
    buf = LineBuffer("k", "f", 0, 100)
    out = _feed(buf, b"ok\n", b"x" * 80, b"x" * 80, b"x" * 5000, b"xx\nafter\n")
    assert buf.pending == 0
    rej = [r for r in out if isinstance(r, Rejection)]
    assert len(rej) == 1
    assert (rej[0].offset, rej[0].size, rej[0].end) == (3, 5162, 3 + 5163)
    assert "line too long: 5162 bytes" in rej[0].reason and len(rej[0].raw) <= 4096
    chunks = [c for c in out if isinstance(c, Chunk)]
    assert chunks[-1].start == 3 + 5163 and chunks[-1].data == b"after\n"


def test_fingerprint_waits_for_a_first_line() -> None:
    assert fingerprint_bytes(b'{"event_name"') is None
    a = fingerprint_bytes(b'{"a":1}\nmore')
    assert a == fingerprint_bytes(b'{"a":1}\nother') and a is not None
    assert fingerprint_bytes(b"y" * 300) == fingerprint_bytes(b"y" * 256 + b"z")


def test_checkpoint_format_is_pinned(tmp_path: Path) -> None:
    cp = Checkpoints(tmp_path)
    cp.set("crc:0011", FileState(offset=42, path="/var/log/a.ndjson", dev=1, ino=2, updated=3.5))
    assert cp.flush() is True
    doc = orjson.loads((tmp_path / "checkpoints.json").read_bytes())
    assert isinstance(doc.pop("written"), float) and isinstance(doc.pop("boot_id"), str)
    assert doc == {
        "version": 1, "serial": 1, "in_flight": {"batches": 0, "events": 0, "sent": {}},
        "files": {"crc:0011": {"offset": 42, "path": "/var/log/a.ndjson", "dev": 1, "ino": 2, "updated": 3.5}},
    }
    assert cp.flush() is False, "unchanged state is not rewritten"
    again = Checkpoints(tmp_path)
    assert again.get("crc:0011") == FileState(42, "/var/log/a.ndjson", 1, 2, 3.5)


def test_checkpoint_prefers_a_valid_tmp_and_survives_garbage(tmp_path: Path) -> None:
    (tmp_path / "checkpoints.json").write_bytes(b'{"version": 1, "files": {"a": {"offset": 1}}}')
    (tmp_path / "checkpoints.json.tmp").write_bytes(b'{"version": 1, "files": {"a": {"offset": 9}}}')
    cp = Checkpoints(tmp_path)
    assert cp.get("a") is not None and cp.get("a").offset == 9  # type: ignore[union-attr]
    assert cp.flush()
    (tmp_path / "checkpoints.json").write_bytes(b"")
    cp = Checkpoints(tmp_path)
    assert cp.load_problem is not None and cp.snapshot() == {}
    (tmp_path / "checkpoints.json").write_bytes(b'{"version": 99, "files": {}}')
    assert "unsupported checkpoint format version 99" in (Checkpoints(tmp_path).load_problem or "")


def test_checkpoint_write_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    cp = Checkpoints(tmp_path)
    cp.set("a", FileState(1, "p"))
    cp.flush()
    before = (tmp_path / "checkpoints.json").read_bytes()
    cp.set("a", FileState(2, "p"))
    blocker = tmp_path / "checkpoints.json.tmp"
    blocker.mkdir()  # the temp file cannot be created: stands in for EROFS/ENOSPC
    with pytest.raises(OSError):
        cp.flush()
    blocker.rmdir()
    assert (tmp_path / "checkpoints.json").read_bytes() == before
    assert cp.flush() is True, "still dirty: retried on the next flush"


def test_state_dir_lock_is_exclusive(tmp_path: Path) -> None:
    a, b = StateDirLock(tmp_path), StateDirLock(tmp_path)
    a.acquire()
    with pytest.raises(StateLockedError, match=f"pid {os.getpid()}"):
        b.acquire()
    a.release()
    b.acquire()
    b.release()


def test_batcher_closes_on_count_bytes_and_age() -> None:
    b = Batcher(batch_size=3, batch_bytes=100, flush_interval=10)
    assert b.seconds_until_due() is None
    e = StatsigEvent("e", 1)
    assert not b.add(e, 10) and not b.add(e, 10)
    assert b.add(e, 10)
    batch = b.take()
    assert batch is not None and len(batch.events) == 3 and batch.seq == 0
    assert b.add(e, 150), "bytes limit"
    assert b.take() is not None
    b.mark("k", 5)
    due = b.seconds_until_due()
    assert due is not None and 9 < due <= 10
    only_positions = b.take()
    assert only_positions is not None and only_positions.positions == {"k": 5} and only_positions.seq == 2


class _NoSource:
    exhausted = True


@pytest.mark.parametrize(("batch_size", "batch_bytes"), [(3, 10**6), (100, 60)])
def test_reader_ships_full_batches_with_the_positions_they_complete(
        tmp_path: Path, batch_size: int, batch_bytes: int) -> None:
    lines = [orjson.dumps({"event_name": f"e{i}", "time": i}) for i in range(7)]
    lines.insert(4, b"not json")  # dead-lettered: its position still travels with the batch
    assert {len(x) for x in lines if x != b"not json"} == {28}  # so 60 bytes close a batch at 3 events too
    ends = [100 + sum(len(x) + 1 for x in lines[: i + 1]) for i in range(len(lines))]
    batches: queue.Queue[Batch | None] = queue.Queue()
    reader = Reader(_NoSource(), Batcher(batch_size, batch_bytes, 3600), batches,  # type: ignore[arg-type]
                    DeadLetter(tmp_path / "dead.ndjson"), Stats(), threading.Event(), 0.1, 10**6, "metadata")
    reader._chunk(Chunk("key", "p", 100, b"".join(x + b"\n" for x in lines)))
    shipped = [b for _ in range(batches.qsize()) if (b := batches.get_nowait()) is not None]
    assert [[e.eventName for e in b.events] for b in shipped] == [["e0", "e1", "e2"], ["e3", "e4", "e5"]]
    assert [b.positions for b in shipped] == [{"key": ends[2]}, {"key": ends[6]}]
    rest = reader.batcher.take()
    assert rest is not None and [e.eventName for e in rest.events] == ["e6"]
    assert rest.positions == {"key": ends[7]} and reader.stats.events_read == 7


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (202, b'{"success": true}', None),
        (200, b"{}", None),
        (200, b'{"success": false}', RetryableError),
        (204, b"", RetryableError),
        (400, b"bad", RejectedError),
        (413, b"", RejectedError),
        (401, b"", AuthError),
        (403, b"", AuthError),
        (408, b"", RetryableError),
        (429, b"", RetryableError),
        (500, b"", RetryableError),
        (503, b"", RetryableError),
    ],
)
def test_statsig_answers_are_classified(status: int, body: bytes, error: type[Exception] | None) -> None:
    if error is None:
        classify(status, body)
    else:
        with pytest.raises(error) as e:
            classify(status, body)
        assert type(e.value) is error


@pytest.mark.parametrize("level", range(1, 10))
def test_request_body_is_plain_gzip_at_every_level(level: int) -> None:
    events = [StatsigEvent(f"e{i}", i, msgspec.Raw(b'{"userID":"u"}')) for i in range(2000)]
    body = StatsigSink("http://127.0.0.1:1/v1", "secret-x", gzip_level=level).encode(events)
    assert body[:4] == b"\x1f\x8b\x08\x00" and body[4:8] == b"\0\0\0\0"  # gzip, deflate, no name, mtime 0
    doc = orjson.loads(gzip.decompress(body))  # what the stdlib (and Statsig) reads
    assert doc["events"] == [e.as_dict() for e in events] and doc["statsigMetadata"]["sdkType"] == "statsig-forwarder"


def test_retry_after_is_read() -> None:
    with pytest.raises(RetryableError) as e:
        classify(429, b"", "7")
    assert e.value.retry_after == 7.0


def test_settings_precedence_flags_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("batch_size = 10\nflush_interval = 3.0\nmax_in_flight = 3\n")
    monkeypatch.setenv("FORWARDER_FLUSH_INTERVAL", "2.0")
    monkeypatch.setenv("FORWARDER_MAX_IN_FLIGHT", "4")
    s = load_settings(toml, max_in_flight=5)
    assert (s.batch_size, s.flush_interval, s.max_in_flight) == (10, 2.0, 5)


def test_secret_is_never_in_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATSIG_SERVER_SECRET_KEY", "secret-abcdefghijklmnop")
    with pytest.raises(ConfigError) as e:
        load_settings(batch_size=0)
    assert "secret-abc" not in str(e.value)
    assert "secret-abcdefghijklmnop" not in repr(load_settings())


def test_example_config_lists_every_option_and_loads(tmp_path: Path) -> None:
    from forwarder.settings import ReceiverSettings, RelaySettings, Settings

    example = Path(__file__).parent.parent / "config" / "forwarder.example.toml"
    text = example.read_text()
    top, _, receiver = text.partition("\n[receiver]\n")
    for name in Settings.model_fields:
        assert re.search(rf"^(# )?{name} =", top, re.M) or name in ("receiver", "relay"), f"{name} missing"
    receiver, _, relay = receiver.partition("\n[relay]\n")
    for name in ReceiverSettings.model_fields:
        assert re.search(rf"^(# )?{name} =", receiver, re.M), f"receiver.{name} missing"
    for name in RelaySettings.model_fields:
        assert re.search(rf"^(# )?{name} =", relay, re.M), f"relay.{name} missing"
    load_settings(example)
    # the commented examples are valid too, once switched on (secrets stay commented)
    enabled = re.sub(r"^# (?!statsig_server_secret_key|token)(\w+ = )", r"\1", text, flags=re.M)
    (tmp_path / "all.toml").write_text(enabled)
    load_settings(tmp_path / "all.toml")


@pytest.mark.parametrize(("batch_size", "batch_bytes"), [(3, 10**6), (100, 60), (4, 100), (1000, 10**6)])
def test_one_call_chunk_batches_like_line_by_line(tmp_path: Path, batch_size: int, batch_bytes: int) -> None:
    """An all-good chunk (decoded in one call) closes batches on count and bytes exactly where the
    per-line path does, with the same positions and event ids."""
    lines = [orjson.dumps({"event_name": f"e{i}", "time": i, "metadata": {"n": "x" * (i % 5)}}) for i in range(11)]
    data = b"".join(x + b"\n" for x in lines)
    shipped: list[list[tuple[str, dict[str, int], int]]] = []
    for one_call in (True, False):
        batches: queue.Queue[Batch | None] = queue.Queue()
        reader = Reader(_NoSource(), Batcher(batch_size, batch_bytes, 3600), batches,  # type: ignore[arg-type]
                        DeadLetter(tmp_path / f"dead{one_call}.ndjson"), Stats(), threading.Event(), 0.1, 10**6,
                        "metadata")
        if not one_call:
            reader.decoder.decode = lambda *a, **k: None  # type: ignore[method-assign]
        reader._chunk(Chunk("key", "p", 100, data))
        got = [b for _ in range(batches.qsize()) if (b := batches.get_nowait()) is not None]
        rest = reader.batcher.take()
        assert rest is not None
        shipped.append([(",".join(orjson.dumps(e.as_dict()).decode() for e in b.events), b.positions, b.nbytes)
                        for b in [*got, rest]])
    assert shipped[0] == shipped[1]


@pytest.mark.parametrize("one_call", [True, False])
@pytest.mark.parametrize(("per_chunk", "batch_size"), [(25, 50), (25, 75), (3, 3), (10, 4)])
def test_a_batch_position_never_passes_a_line_whose_event_is_in_a_later_batch(
        tmp_path: Path, one_call: bool, per_chunk: int, batch_size: int) -> None:
    """Chunks arriving one by one (one write each): every shipped batch's position covers only
    lines whose events are in it or an earlier batch, also when a chunk fills a batch exactly (a
    batch left full and open once took the next chunk's position without its events, and a kill -9
    after its acknowledgement lost that chunk)."""
    batches: queue.Queue[Batch | None] = queue.Queue()
    reader = Reader(_NoSource(), Batcher(batch_size, 10**6, 3600), batches,  # type: ignore[arg-type]
                    DeadLetter(tmp_path / "dead.ndjson"), Stats(), threading.Event(), 0.1, 10**6, "metadata")
    if not one_call:
        reader.decoder.decode = lambda *a, **k: None  # type: ignore[method-assign]
    ends: list[int] = []  # the end offset of line i
    offset = 0
    for c in range(8):
        lines = [orjson.dumps({"event_name": f"e{c * per_chunk + i}", "time": 1}) + b"\n" for i in range(per_chunk)]
        data = b"".join(lines)
        start = offset
        for line in lines:
            offset += len(line)
            ends.append(offset)
        reader._chunk(Chunk("key", "p", start, data))
    shipped = [b for _ in range(batches.qsize()) if (b := batches.get_nowait()) is not None]
    rest = reader.batcher.take()
    shipped += [rest] if rest is not None else []
    sent: set[int] = set()
    for b in shipped:
        sent.update(int(e.eventName[1:]) for e in b.events)
        if "key" in b.positions:
            passed = {i for i, end in enumerate(ends) if end <= b.positions["key"]}
            assert passed <= sent, f"batch {b.seq} passes lines {sorted(passed - sent)[:5]} not sent yet"
    assert sent == set(range(8 * per_chunk)) and shipped[-1].positions["key"] == offset
