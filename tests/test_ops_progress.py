"""replay's progress display, as seen in a real terminal (tmux), and unchanged without one."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_statsig import FakeStatsig
from kit import Cli, Tmux, event_line, fast_args, seqs, tmux_session, wait_until

COUNTS = re.compile(r"([\d.]+k?) events read, ([\d.]+k?) delivered")
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (INFO|WARNING|ERROR) ")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    with tmux_session(tmp_path) as t:
        yield t


def number(text: str) -> float:
    return float(text[:-1]) * 1000 if text.endswith("k") else float(text)


def test_replay_bar_stays_whole_below_the_log_lines(fake: FakeStatsig, tmp_path: Path, tmux: Tmux) -> None:
    (tmp_path / "events.ndjson").write_bytes(b"".join(event_line(i) for i in range(3000)))
    fake.latency = 0.05  # 30 requests one at a time: a couple of seconds to watch
    done = tmp_path / "exit"
    args = " ".join([*fast_args(fake, tmp_path / "state"), "--batch-size", "100", "--max-in-flight", "1",
                     "--log-format", "text"])
    tmux.start(f"STATSIG_SERVER_SECRET_KEY=secret-test-key-0123456789 {sys.executable} -m forwarder replay "
               f"events.ndjson {args}; echo $? > {done}; sleep 30", tmp_path, width=160)
    frames: list[str] = []

    def bar_shown() -> bool:
        frames.append(tmux.screen())
        return "replay ━" in frames[-1] or "replay ╺" in frames[-1]

    assert wait_until(bar_shown, timeout=20), frames[-1]
    fake.fail_next(1)  # a warning logged while the bar is shown
    assert wait_until(lambda: bar_shown() and "delivery failed, will retry" in frames[-1], timeout=20), frames[-1]
    assert wait_until(done.exists, timeout=30) and wait_until(lambda: done.read_text().strip() != "", timeout=5)
    assert done.read_text().strip() == "0"
    frames.append(tmux.screen())
    assert sorted(seqs(fake)) == list(range(3000))

    for frame in frames:
        lines = [line for line in frame.splitlines() if line.strip()]
        bars = [i for i, line in enumerate(lines) if line.startswith("replay ")
                and not line.startswith("replay done")]
        assert len(bars) <= 1, frame  # one bar, never repeated down the screen
        for i in bars:
            bar = lines[i]
            assert not LOG_LINE.search(bar) and " INFO " not in bar and " WARNING " not in bar, bar
            assert re.search(r" \d+(\.\d)?/\d+(\.\d)? (KiB|MiB) ", bar), bar  # human units
            assert not re.search(r"\b\d{4,}/\d{4,}\b", bar), bar  # never raw byte counts
            read, delivered = (number(x) for x in COUNTS.search(bar).groups())  # type: ignore[union-attr]
            assert delivered <= read, bar
            # while running, everything after the bar is blank: it is the bottom line
            if "replay done" not in frame:
                assert i == len(lines) - 1, frame
    final = [line for line in frames[-1].splitlines() if line.strip()]
    warning_at = next(i for i, line in enumerate(final) if "delivery failed, will retry" in line)
    bar_at = next(i for i, line in enumerate(final) if line.startswith("replay ━"))
    assert LOG_LINE.match(final[warning_at]) and warning_at < bar_at  # the log line went above the bar
    assert "100%" in final[bar_at] and "3000 events read, 3000 delivered" in final[bar_at]
    assert final[-1].startswith("replay done: 3000 events read, 3000 delivered")


def test_replay_without_a_terminal_logs_progress_lines(spawn: Callable[..., Cli], fake: FakeStatsig,
                                                       tmp_path: Path) -> None:
    (tmp_path / "events.ndjson").write_bytes(b"".join(event_line(i) for i in range(2000)))
    fake.latency = 0.05
    cli = spawn("replay", "events.ndjson", *fast_args(fake, tmp_path / "state"), "--batch-size", "100",
                "--max-in-flight", "1", "--progress-interval", "0.2")
    assert cli.wait() == 0
    progress = [r for r in cli.logs() if r.get("msg") == "replay progress"]
    assert len(progress) >= 3
    for r in progress:
        assert r["events_delivered"] <= r["events_read"] <= 2000
        assert 0 <= r["bytes_read"] <= r["bytes_total"] == (tmp_path / "events.ndjson").stat().st_size
    assert "━" not in cli.stderr.decode() and "\x1b[" not in cli.stderr.decode()


def test_run_once_on_a_terminal_shows_the_same_bar(fake: FakeStatsig, tmp_path: Path, tmux: Tmux) -> None:
    (tmp_path / "events.ndjson").write_bytes(b"".join(event_line(i) for i in range(1000)))
    done = tmp_path / "exit"
    args = " ".join([*fast_args(fake, tmp_path / "state"), "--batch-size", "100", "--log-format", "text"])
    tmux.start(f"STATSIG_SERVER_SECRET_KEY=secret-test-key-0123456789 {sys.executable} -m forwarder run --once "
               f"events.ndjson {args}; echo $? > {done}; sleep 30", tmp_path, width=160)
    assert wait_until(lambda: done.exists() and done.read_text().strip() != "", timeout=30)
    assert done.read_text().strip() == "0"
    lines = [line for line in tmux.screen().splitlines() if line.strip()]
    bar = next(line for line in lines if line.startswith("run --once "))
    assert "100%" in bar and "1000 events read, 1000 delivered" in bar
    assert lines.index(bar) > next(i for i, line in enumerate(lines) if " INFO    stopped" in line)
    assert sorted(seqs(fake)) == list(range(1000))
