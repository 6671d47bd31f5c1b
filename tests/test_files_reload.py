"""SIGHUP that changes `paths` keeps native file events: appends are read at once, not on the sweep."""

from __future__ import annotations

import signal
import time

from kit import append, event_line, fast_args, logs_dir, seqs, wait_until


def test_reload_changing_paths_keeps_append_latency_low(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    (logs / "more").mkdir()
    a = logs / "a.ndjson"
    a.write_bytes(event_line(0))
    config = tmp_path / "forwarder.toml"
    config.write_text(f'paths = ["{a}"]\n')
    args = fast_args(fake, tmp_path / "state")
    i = args.index("--glob-interval")
    del args[i : i + 2]  # the default glob_interval (5 s): a missed event would wait for the sweep
    cli = spawn("run", "--config", str(config), *args)
    assert wait_until(lambda: seqs(fake) == [0], 10)

    config.write_text(f'paths = ["{a}", "{logs / "more" / "*.ndjson"}"]\n')
    cli.signal(signal.SIGHUP)
    cli.wait_log("configuration reloaded")
    time.sleep(0.5)  # past the rescan the reload triggers: from now on only events wake a read
    latencies = []
    for seq in range(1, 5):
        t0 = time.monotonic()
        append(a, event_line(seq))
        assert wait_until(lambda: seq in seqs(fake), 10)  # noqa: B023 - called before seq moves on
        latencies.append(time.monotonic() - t0)
        time.sleep(0.3)
    print(f"append-to-delivery after reload: {[round(x, 2) for x in latencies]} s")
    assert max(latencies) < 1.5, latencies  # flush_interval 0.2 s; the sweep would take up to 5 s
    assert cli.stop() == 0
    assert sorted(seqs(fake)) == list(range(5))
