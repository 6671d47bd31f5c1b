"""`validate`: bad lines reported as file:line:offset: reason; exit codes; --json; stdin and .gz."""

from __future__ import annotations

import gzip
import subprocess

import orjson
from kit import event_line

GOOD = event_line(1)
LINES = [
    GOOD,                                  # 1
    b"\n",                                 # 2 blank: fine
    b'{"event_name": "x", oops}\n',        # 3 not JSON
    b"[1, 2]\n",                           # 4 not an object
    b'{"user_id": "u1"}\n',                # 5 no event_name
    b'{"event_name": "' + b"x" * 300 + b'"}\n',  # 6 longer than --max-line-bytes 200
    GOOD,                                  # 7
    b'{"event_name": "last", "value": 1}',  # 8 no final newline: still judged, like --once
]


def offsets() -> list[int]:
    out, pos = [], 0
    for line in LINES:
        out.append(pos)
        pos += len(line)
    return out


def test_validate_reports_each_bad_line_and_exits_1(spawn, tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"".join(LINES))
    cli = spawn("validate", "events.ndjson", "--max-line-bytes", "200", key=None)
    assert cli.wait() == 1
    report = bytes(cli.stdout).decode().splitlines()
    off = offsets()
    assert [r.split(": ", 1)[0] for r in report] == [
        f"events.ndjson:{n}:{off[n - 1]}" for n in (3, 4, 5, 6)
    ]
    assert "invalid JSON" in report[0]
    assert report[1].endswith("not a JSON object: got array")
    assert "event_name" in report[2] and "Field required" in report[2]
    assert report[3].endswith(f"line too long: {len(LINES[5]) - 1} bytes > max_line_bytes 200")
    assert b"FAILED: 1 file(s), 8 lines, 3 valid, 4 bad" in cli.stderr


def test_validate_good_file_exits_0_and_reads_gz_and_stdin(spawn, tmp_path):
    (tmp_path / "good.ndjson.gz").write_bytes(gzip.compress(GOOD * 5))
    ok = spawn("validate", "good.ndjson.gz", key=None)
    assert ok.wait() == 0
    assert bytes(ok.stdout) == b""
    assert b"OK: 1 file(s), 5 lines, 5 valid, 0 bad" in ok.stderr

    stdin = spawn("validate", "-", key=None, stdin=subprocess.PIPE)
    assert stdin.proc.stdin is not None
    stdin.proc.stdin.write(GOOD + b"nope\n")
    stdin.proc.stdin.close()
    assert stdin.wait() == 1
    assert bytes(stdin.stdout).startswith(f"-:2:{len(GOOD)}: invalid JSON".encode())


def test_validate_json_output_and_unreadable_file(spawn, tmp_path):
    (tmp_path / "e.ndjson").write_bytes(b"".join(LINES))
    cli = spawn("validate", "e.ndjson", "missing.ndjson", "--json", "--max-line-bytes", "200", key=None)
    assert cli.wait() == 2  # a file could not be read at all
    docs = [orjson.loads(line) for line in bytes(cli.stdout).splitlines()]
    assert [(d["file"], d["line"], d["offset"]) for d in docs[:-1]] == [
        ("e.ndjson", n, offsets()[n - 1]) for n in (3, 4, 5, 6)
    ]
    summary = docs[-1]["summary"]
    assert (summary["lines"], summary["valid"], summary["bad"], summary["blank"]) == (8, 3, 4, 1)
    assert summary["unreadable"] == 1
    assert b"missing.ndjson: cannot read" in cli.stderr
