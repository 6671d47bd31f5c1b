"""`check` exits cleanly: no `StatsigSafeGil: GIL Unavailable` from the SDK at interpreter exit."""

from __future__ import annotations

from collections.abc import Callable

from fake_statsig import FakeStatsig
from kit import Cli

RUNS = 4  # the noise came from a race at exit: about every other run printed it


def test_check_exits_without_the_sdks_gil_noise(spawn: Callable[..., Cli], fake: FakeStatsig) -> None:
    ok = [spawn("check", "--statsig-api", fake.url) for _ in range(RUNS)]
    refused = [spawn("check", "--statsig-api", "http://127.0.0.1:1/v1", "--check-timeout", "1")
               for _ in range(RUNS)]
    assert [cli.wait() for cli in ok] == [0] * RUNS
    assert [cli.wait() for cli in refused] == [1] * RUNS
    assert all("key accepted" in cli.stdout.decode() for cli in ok)
    noisy = [cli.stderr.decode() for cli in ok + refused if "GIL Unavailable" in cli.stderr.decode()]
    assert not noisy, noisy[0]
