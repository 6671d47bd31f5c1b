"""Hostile lines through the decoder and through a running CLI: no crash, every line accounted for.

Each line has one expected fate, computed by `fate()` from `decode_line` alone: delivered,
dead-lettered, or skipped (blank). The Reader (inline fast path) must give the same fate
and the same event; the CLI must deliver exactly the delivered ones and dead-letter exactly
the rest.
"""

from __future__ import annotations

import collections
import queue
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kit import SCALE, Tally, event_line, fast_args, seqs

from forwarder.decode.codec import LineError, decode_line
from forwarder.decode.event import DROPPED_NAME_CHARS
from forwarder.decode.reader import Reader
from forwarder.delivery.batcher import Batcher
from forwarder.model import Chunk
from forwarder.state.deadletter import DeadLetter
from forwarder.stats import Stats

MAX_LINE = 1024 * 1024
JSON_WS = b" \t\r"


def fate(line: bytes, max_line: int = MAX_LINE) -> tuple[str, Any]:
    """("event", wire event) | ("dead", reason) | ("blank", None) for one line (no newline)."""
    if line[:1] == b"\0":  # documented: leading NULs are a copytruncate hole, not content
        line = line.lstrip(b"\0")
    if len(line) > max_line:
        return "dead", "line too long"
    if not line.strip(JSON_WS):
        return "blank", None
    try:
        return "event", decode_line(line).as_dict()
    except LineError as e:
        return "dead", str(e)


def sent_fate(line: bytes) -> tuple[str, Any]:
    """The fate through the CLI: the same (whatever decodes can be sent: depth is decided at decode)."""
    return fate(line)


# -- hostile lines --------------------------------------------------------------------------
def _nest(depth: int, inner: bytes = b"1") -> bytes:
    return b"[" * depth + inner + b"]" * depth


def _event(**fields: Any) -> bytes:
    return orjson.dumps({"event_name": "fuzz", "user_id": "u", **fields})


def _sdk_event(**fields: Any) -> bytes:
    """In Statsig's own shape, as the relay appends what SDKs send."""
    return orjson.dumps({"eventName": "fuzz", "user": {"userID": "u"}, "value": None, "statsigMetadata": None,
                         "secondaryExposures": [{"gate": "g", "gateValue": "true", "ruleID": "r"}], **fields})


hostile_fragments = st.sampled_from([
    b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"123456789012345678901234567890",
    b"18446744073709551616", b"-9223372036854775809", b"1e30", b"0.1e-400", b'"\\ud800"', b'"\\u0000"',
    b"\x00", b"\x01", b"\x1f", b"\x7f", b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\r", b"\x0c",
    b'"' + b"\\" * 3 + b'"', b"true", b"null", b"{}", b"[]", b'""',
])


@st.composite
def hostile_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 10))
    if kind == 0:  # raw bytes, any encoding, no newline
        return draw(st.binary(max_size=200)).replace(b"\n", b"")
    if kind == 1:  # deep nesting, around orjson's depth limit
        depth = draw(st.integers(1000, 1100) | st.integers(1, 50))
        return _event(metadata={"x": 1}).replace(b'{"x":1}', b'{"x":' + _nest(depth) + b"}")
    if kind == 2:  # a hostile token where a value goes
        field = draw(st.sampled_from([b"value", b"time", b"metadata", b"event_name", b"user_id", b"user"]))
        return b'{"event_name":"e","' + field + b'":' + draw(hostile_fragments) + b"}"
    if kind == 3:  # duplicate keys (last one wins in orjson; the model sees that one)
        first, second = draw(st.sampled_from([(b'"a"', b"1"), (b"1", b'"a"'), (b'""', b'"b"'), (b"null", b'"x"')]))
        return b'{"event_name":' + first + b',"event_name":' + second + b"}"
    if kind == 4:  # control characters, raw or escaped, inside strings
        ch = draw(st.integers(0, 31))
        raw = bytes([ch]) if ch != 10 else b"\\n"
        return b'{"event_name":"a' + raw + b'b","metadata":{"k\\u' + f"{ch:04x}".encode() + b'":"v"}}'
    if kind == 5:  # huge or odd numbers in every numeric spot
        number = draw(st.integers() | st.floats(allow_nan=False, allow_infinity=False))
        name = draw(st.sampled_from(["time", "value", "metadata"]))
        return _event(**{name: {"n": number} if name == "metadata" else number}) if -(2**63) <= number < 2**64 \
            else b'{"event_name":"e","' + name.encode() + b'":' + str(number).encode() + b"}"
    if kind == 6:  # NUL bytes at the start (copytruncate hole), inside, at the end
        where = draw(st.sampled_from(["start", "inside", "end", "only"]))
        base = _event()
        return {"start": b"\0" * 5 + base, "inside": base[:10] + b"\0" + base[10:], "end": base + b"\0",
                "only": b"\0" * 3}[where]
    if kind == 7:  # whitespace of every kind
        return draw(st.sampled_from([b"", b" ", b"\t", b"\r", b" \r", b"\x0b", b"\x0c", b"\xa0", b"\x1c"]))
    if kind == 8:  # a valid event of either form, maybe with an ISO time or a truncated tail
        make = _sdk_event if draw(st.booleans()) else _event
        line = make(metadata={"k": draw(st.text(max_size=20))}, time=draw(
            st.integers(0, 2**53) | st.sampled_from(["2025-01-01T00:00:00Z", "garbage", "0001-01-01", ""])))
        cut = draw(st.integers(0, len(line)))
        return line if draw(st.booleans()) else line[:cut]
    if kind == 9:  # Statsig's rules: names it drops, fields around its size limits
        name = draw(st.text(st.sampled_from("ab_:. " + DROPPED_NAME_CHARS), min_size=1, max_size=66))
        pad = draw(st.integers(0, 70) | st.integers(4080, 4100) | st.integers(0, 5000))
        where = draw(st.sampled_from(["value", "metadata", "user", "numbers"]))
        if where == "numbers":  # numbers grow when re-encoded: around the reader's short-line shortcut
            return b'{"event_name":"e","metadata":{"a":[' + b",".join([b"9e15"] * (pad // 20)) + b"]}}"
        values: dict[str, Any] = {"value": "v" * pad, "metadata": {"p": "x" * pad},
                                  "user": {"custom": {"p": "x" * pad}}}
        return orjson.dumps({"event_name": name, where: values[where]})
    # a valid event with one random byte replaced
    line = event_line(draw(st.integers(0, 10**6)))[:-1]
    at = draw(st.integers(0, len(line) - 1))
    return line[:at] + bytes([draw(st.integers(0, 255).filter(lambda b: b != 10))]) + line[at + 1:]


class _NoSource:
    exhausted = True

    def poll(self, budget: int) -> list[Any]:
        return []


def reader_fates(lines: list[bytes], tmp: Path) -> tuple[list[Any], list[dict[str, Any]]]:
    """Run the real Reader over the lines; returns (events batched, dead-letter records)."""
    dead = DeadLetter(tmp / "dead.ndjson")
    batches: queue.Queue[Any] = queue.Queue()
    reader = Reader(_NoSource(), Batcher(10**6, 10**12, 3600), batches, dead, Stats(), threading.Event(),  # type: ignore[arg-type]
                    0.1, MAX_LINE, "metadata")
    reader._chunk(Chunk("key", "fuzz", 0, b"".join(line + b"\n" for line in lines)))
    dead.close()
    records = [orjson.loads(r) for r in (tmp / "dead.ndjson").read_bytes().splitlines()] \
        if (tmp / "dead.ndjson").exists() else []
    return [e.as_dict() for e in reader.batcher.current.events], records


def _same_event(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # A line without "time" gets the time it was read: allow those a minute apart.
    return {**a, "time": 0} == {**b, "time": 0} and abs(a["time"] - b["time"]) < 60_000


@settings(max_examples=500 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(hostile_lines(), min_size=1, max_size=8))
@example(lines=[b"\x0c"]).via("a form feed is not a blank line")
@example(lines=[b'{"event_name":"e","time":1e30}']).via("time beyond 64 bits crashed the sender")
@example(lines=[b'{"event_name":"a#b"}', b'{"event_name":"e","metadata":{"p":"' + b"x" * 4090 + b'"}}']).via(
    "a name Statsig drops is dead-lettered; an oversize object is sent (oversize_fields = send)")
@example(lines=[b'{"event_name":"e","metadata":' + _nest(300) + b"}"]).via("deeper than MAX_DEPTH: invalid")
@example(lines=[b'{"event_name":"e","metadata":{"a":' + _nest(61) + b"}}"]).via("MAX_DEPTH exactly: valid")
@example(lines=[b'{"event_name":"a"}{"event_name":"b"}', b""]).via("two objects on a line, and a blank line")
@example(lines=[b'{"event_name":', b'"a"}']).via("one object over two lines")
def test_reader_fast_path_and_decode_line_agree(tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]) -> None:
    events, dead = reader_fates(lines, tmp_path_factory.mktemp("reader"))
    expected = [fate(line) for line in lines]
    want_events = [out for kind, out in expected if kind == "event"]
    assert len(events) == len(want_events), (lines, expected, events)
    assert all(_same_event(a, b) for a, b in zip(events, want_events, strict=True))
    offsets, at = [], 0
    for line, (kind, _) in zip(lines, expected, strict=True):
        if kind == "dead":
            offsets.append(at)
        at += len(line) + 1
    assert [r["offset"] for r in dead] == offsets, (lines, expected, dead)


# -- through the running CLI ---------------------------------------------------------------
@st.composite
def files(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    """Hostile lines mixed with plain numbered events; maybe no newline at the end."""
    n = draw(st.integers(1, 40))
    lines = [draw(hostile_lines()) if draw(st.booleans()) else b"" for _ in range(n)]
    return lines, draw(st.booleans())


def run_once(spawn: Any, fake: Any, tmp: Path, lines: list[bytes], final_newline: bool,
             *extra: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, Any]]]:
    """Write the file, `run --once`, return (events accepted, dead-letter records, fates)."""
    numbered = [line or event_line(i, event_name="numbered")[:-1] for i, line in enumerate(lines)]
    log = tmp / "events.ndjson"
    data = b"\n".join(numbered) + (b"\n" if final_newline else b"")
    log.write_bytes(data)
    state = tmp / "state"
    before = len(fake.events)
    cli = spawn("run", "--once", str(log), *fast_args(fake, state), *extra)
    assert cli.wait(120) == 0, bytes(cli.stderr).decode(errors="replace")[-3000:]
    assert not [r for r in cli.logs() if r.get("level") == "critical"], "no crash"
    dead_path = state / "dead-letter.ndjson"
    dead = [orjson.loads(r) for r in dead_path.read_bytes().splitlines()] if dead_path.exists() else []
    return fake.events[before:], dead, [sent_fate(line) for line in numbered]


@settings(max_examples=8 * SCALE, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=files())
def test_cli_delivers_or_dead_letters_every_line(fake, spawn, tmp_path_factory: pytest.TempPathFactory,
                                                  tally: Tally, case: tuple[list[bytes], bool]) -> None:
    lines, final_newline = case
    tmp = tmp_path_factory.mktemp("cli")
    events, dead, fates = run_once(spawn, fake, tmp, lines, final_newline)
    kinds = collections.Counter(kind for kind, _ in fates)
    assert len(events) == kinds["event"], (lines, fates, events)
    assert len(dead) == kinds["dead"], (lines, fates, dead)
    numbered = [i for i, line in enumerate(lines) if not line]
    assert sorted(e["metadata"]["seq"] for e in events if e["eventName"] == "numbered") == numbered
    tally.written += len(lines)
    tally.delivered += len(events)
    tally.dead_lettered += len(dead)
    skipped = tally.written - tally.delivered - tally.dead_lettered
    tally.note = f"{8 * SCALE} generated files, blank lines skipped: {skipped}"


def test_cli_huge_lines_nul_bytes_and_no_final_newline(fake, spawn, tmp_path: Path, tally: Tally) -> None:
    ten_mb = 10 * 1024 * 1024
    huge_valid = _event(metadata={"blob": "x" * ten_mb})
    lines = [
        b"",  # becomes a plain numbered event
        b"{" * ten_mb,  # 10 MB of garbage
        huge_valid,  # 10 MB valid event: over max_line_bytes by default
        b"\0" * 64 + b"",  # NULs only
        b'{"event_name":"nul\0inside"}',
        b"",
        b'{"event_name":"dup","event_name":"dup2","metadata":{"a":1,"a":2}}',
        b"",  # the last line, without a newline
    ]
    events, dead, fates = run_once(spawn, fake, tmp_path, lines, False)
    assert len(events) == 4 and seqs(fake)[-3:] == [0, 5, 7]
    assert {e["eventName"] for e in events} == {"numbered", "dup2"}
    assert [r["size"] for r in dead if r.get("truncated")] == [ten_mb, len(huge_valid)]
    assert len(dead) == 3 and all(len(orjson.dumps(r)) < 10_000 for r in dead)
    assert collections.Counter(k for k, _ in fates)["dead"] == 3
    # With room for it, the 10 MB event itself is delivered whole.
    (tmp_path / "again").mkdir()
    events, dead, _ = run_once(spawn, fake, tmp_path / "again", [huge_valid], True,
                               "--max-line-bytes", str(16 * 1024 * 1024))
    assert [len(e["metadata"]["blob"]) for e in events] == [ten_mb] and not dead
    tally.written, tally.delivered, tally.dead_lettered = len(lines) + 1, 5, 3
    tally.note = "10 MB lines (garbage, valid), NUL bytes, duplicate keys, no final newline"
