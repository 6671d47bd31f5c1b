"""Torture-suite fixtures: a row of the session summary per scenario (kit.Tally), printed at the end.

`TORTURE_SCALE` (default 1, kit.SCALE) multiplies the counts (kills, events, examples) for
nightly runs: `TORTURE_SCALE=10 bash .ci/run tests/torture`.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from kit import SCALE, Tally

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
