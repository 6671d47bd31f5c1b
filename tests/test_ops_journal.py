"""Journal priorities: on systemd's journal stream every log line carries its syslog priority."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import orjson
from fake_statsig import FakeStatsig
from kit import SECRET, append, cli_env, event_line, fast_args

from forwarder.logs import JournalFormatter, JsonFormatter, TextFormatter, is_journal_stream, syslog_priority


def record(level: int, msg: str, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("x", level, __file__, 1, msg, None, info)


def test_priorities_follow_syslog_and_every_line_is_prefixed() -> None:
    assert [syslog_priority(x) for x in (50, 40, 30, 20, 10, 5, 35)] == [2, 3, 4, 6, 7, 7, 4]
    journal = JournalFormatter(TextFormatter())
    lines = journal.format(record(logging.ERROR, "bad", exc=True)).split("\n")
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert "Traceback" in lines[1] and "ValueError: boom" in lines[-1]
    json_line = JournalFormatter(JsonFormatter()).format(record(logging.WARNING, "careful"))
    assert json_line.startswith("<4>{") and orjson.loads(json_line[3:])["level"] == "warning"


def test_journal_stream_must_match_the_descriptor(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as f, open(tmp_path / "g", "w") as g:
        st = os.fstat(f.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert is_journal_stream(f.fileno(), env)
        assert not is_journal_stream(g.fileno(), env)  # inherited variable, stderr redirected elsewhere
        assert not is_journal_stream(f.fileno(), {})
        assert not is_journal_stream(f.fileno(), {"JOURNAL_STREAM": "garbage"})


def run_once(tmp_path: Path, fake: FakeStatsig, name: str, journal: bool) -> list[str]:
    """`run --once` with stderr in a file, JOURNAL_STREAM naming that file (or not)."""
    events = tmp_path / f"{name}.ndjson"
    append(events, event_line(1) + event_line(77))
    err_path = tmp_path / f"{name}.stderr"
    with open(err_path, "wb") as err:
        st = os.fstat(err.fileno())
        env = cli_env(STATSIG_SERVER_SECRET_KEY=SECRET, FORWARDER_LOG_FORMAT="json")
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        else:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino + 1}"  # someone else's stream
        done = subprocess.run([sys.executable, "-m", "forwarder", "run", "--once", str(events),
                               *fast_args(fake, tmp_path / f"state-{name}")],
                              stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=60, cwd=tmp_path)
    assert done.returncode == 0
    return err_path.read_text().splitlines()


def test_cli_on_the_journal_stream_prefixes_priorities(fake: FakeStatsig, tmp_path: Path) -> None:
    fake.reject_if = lambda e: e["metadata"].get("seq") == 77  # 400: an error-level log line
    lines = run_once(tmp_path, fake, "journal", journal=True)
    prios = {}
    for line in lines:
        assert line[0] == "<" and line[2] == ">", line
        prios[orjson.loads(line[3:])["msg"]] = int(line[1])
    assert prios["event rejected by Statsig, dead-lettered"] == 3
    assert prios["stopped"] == 6

    plain = run_once(tmp_path, fake, "plain", journal=False)
    assert plain and all(line.startswith("{") for line in plain)
