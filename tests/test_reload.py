"""SIGHUP re-reads the configuration: new globs and batching apply without losing an event."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from fake_statsig import FakeStatsig
from kit import Cli, NotifySocket, append, event_line, fast_args, seqs, wait_until, write_config


def test_sighup_applies_new_globs_and_batching_without_loss(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    a, b = tmp_path / "a.ndjson", tmp_path / "more" / "b.ndjson"
    b.parent.mkdir()
    config = tmp_path / "forwarder.toml"
    write_config(config, [a], batch_size=500)
    ns = NotifySocket(str(tmp_path / "notify.sock"))
    try:
        cli = spawn("run", "--config", str(config), *fast_args(fake, tmp_path / "state"),
                    env={"NOTIFY_SOCKET": ns.address})
        append(a, b"".join(event_line(i) for i in range(10)))
        append(b, b"".join(event_line(i) for i in range(100, 110)))  # not followed yet
        assert fake.wait_for(10)

        write_config(config, [a, tmp_path / "more" / "*.ndjson"], batch_size=3, max_in_flight=5)
        cli.signal(signal.SIGHUP)
        rec = cli.wait_log("configuration reloaded")
        assert set(rec["applied"]) == {"paths", "batch_size"}
        assert cli.wait_log("need a restart")["options"] == ["max_in_flight"]
        append(a, b"".join(event_line(i) for i in range(10, 20)))
        assert fake.wait_for(30)
        append(b, b"".join(event_line(i) for i in range(110, 113)))
        assert fake.wait_for(33)
        assert sorted(seqs(fake)) == [*range(20), *range(100, 113)]
        # the new batch size is in effect: no request after the reload carries more than 3
        assert max(len(r.events) for r in fake.accepted_requests()[-4:]) <= 3

        # a broken config on reload is reported, and the old one keeps working
        config.write_text("paths = [unclosed\n")
        cli.signal(signal.SIGHUP)
        cli.wait_log("reload failed")
        append(a, event_line(20))
        assert fake.wait_for(34)
        assert cli.stop() == 0
        assert wait_until(lambda: "STOPPING" in ns.kinds(), timeout=3)
        assert ns.kinds() == ["READY", "RELOADING", "READY", "RELOADING", "READY", "STOPPING"]
    finally:
        ns.close()
