"""Torture-suite plumbing: the scale knob, per-scenario tallies and the session summary.

`TORTURE_SCALE` (default 1) multiplies the counts (kills, events, examples) for nightly runs:
`TORTURE_SCALE=10 bash .ci/run tests/torture`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SCALE = max(1, int(os.environ.get("TORTURE_SCALE", "1")))


@dataclass
class Tally:
    """What one scenario wrote and what came out of the forwarder."""

    scenario: str
    written: int = 0
    delivered: int = 0  # distinct events that reached the fake Statsig
    duplicated: int = 0  # extra copies beyond the first
    dead_lettered: int = 0
    lost: int = 0
    note: str = ""
    crashes: list[int] = field(default_factory=list)  # events re-sent after each crash, in order


_TALLIES: list[Tally] = []


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Tally:
    """A row of the end-of-session summary for this test; fill it in as the test goes."""
    t = Tally(re.sub(r"^test_", "", request.node.name))
    _TALLIES.append(t)
    return t


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TALLIES:
        return
    tr = terminalreporter
    tr.section(f"torture summary (TORTURE_SCALE={SCALE})")
    width = max(len(t.scenario) for t in _TALLIES)
    tr.write_line(f"{'scenario':<{width}}  {'written':>9} {'delivered':>9} {'duplicated':>10} "
                  f"{'dup/crash':>9} {'dead-lettered':>13} {'lost':>5}  note")
    for t in _TALLIES:
        per_crash = f"{t.duplicated / len(t.crashes):.0f}" if t.crashes else ""
        tr.write_line(f"{t.scenario:<{width}}  {t.written:>9} {t.delivered:>9} {t.duplicated:>10} "
                      f"{per_crash:>9} {t.dead_lettered:>13} {t.lost:>5}  {t.note}")
    for t in _TALLIES:
        if t.crashes:
            tr.write_line(f"{t.scenario}: re-sent per crash: {' '.join(map(str, t.crashes))}")


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
