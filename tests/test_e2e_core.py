"""End to end: the real CLI against the fake Statsig, counting every event."""

from __future__ import annotations

import base64
import collections
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from kit import SECRET, Cli, append, cli_env, event_line, fast_args, read_checkpoints, seqs, wait_until


def test_appended_events_arrive_with_exact_mapping(fake, spawn, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.touch()
    cli = spawn("run", str(log), *fast_args(fake, tmp_path / "state"))
    cli.wait_log("watching for changes")
    for burst in range(10):
        append(log, b"".join(event_line(i) for i in range(burst * 1000, (burst + 1) * 1000)))
        time.sleep(0.05)
    assert fake.wait_for(10_000, timeout=60), f"only {fake.event_count} arrived"
    assert cli.stop() == 0

    got = seqs(fake)
    assert sorted(got) == list(range(10_000)), "every event exactly once"
    by_seq = {e["metadata"]["seq"]: e for e in fake.events}
    event_id = by_seq[1234]["metadata"].pop("forwarder_event_id")  # <fingerprint>:<offset of the line>
    assert event_id.endswith(f":{sum(len(event_line(i)) for i in range(1234))}")
    assert by_seq[1234] == {
        "eventName": "test_event",
        "user": {"userID": "u70", "email": "u1234@example.com", "custom": {"plan": "pro"}},
        "value": 1234,
        "metadata": {"seq": 1234, "nested": {"ok": True}},
        "time": 1760000001234,
    }
    request = fake.accepted_requests()[0]
    assert request.headers["statsig-api-key"] == SECRET
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == "application/json"
    assert int(request.headers["statsig-event-count"]) == len(request.events)
    assert abs(int(request.headers["statsig-client-time"]) - time.time() * 1000) < 120_000
    assert request.path == "/v1/log_event"
    (entry,) = read_checkpoints(tmp_path / "state").values()
    assert entry["offset"] == log.stat().st_size
    assert entry["path"] == str(log)


def test_restart_after_sigterm_resends_nothing(fake, spawn, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(500)))
    args = [str(log), *fast_args(fake, tmp_path / "state")]
    cli = spawn("run", *args)
    assert fake.wait_for(500)
    assert cli.stop() == 0
    cli = spawn("run", *args)
    cli.wait_log("resuming file at checkpoint")
    append(log, b"".join(event_line(i) for i in range(500, 600)))
    assert fake.wait_for(600)
    time.sleep(0.5)
    assert cli.stop() == 0
    assert sorted(seqs(fake)) == list(range(600))


def test_kill9_mid_stream_loses_nothing(fake, spawn, tmp_path: Path) -> None:
    fake.latency = 0.05  # a slow sink, so the kill lands mid-stream
    total, batch = 20_000, 200
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(total)))
    args = [str(log), *fast_args(fake, tmp_path / "state"), "--batch-size", str(batch)]
    cli = spawn("run", *args)
    assert fake.wait_for(4_000)
    cli.kill9()
    before = fake.event_count
    fake.latency = 0
    cli = spawn("run", *args)
    assert wait_until(lambda: set(seqs(fake)) == set(range(total)), timeout=60)
    assert cli.stop() == 0
    duplicates = fake.event_count - total
    # Bound: what was delivered since the last checkpoint write (0.2 s at ~8k events/s)
    # plus the batches in flight (2 senders + 2 queued).
    assert 0 <= duplicates <= 4 * batch + 2_000, (duplicates, before)


def test_statsig_outage_then_recovery_loses_nothing(fake, spawn, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.touch()
    fake.fail_always(503)
    state = tmp_path / "state"
    cli = spawn("run", str(log), *fast_args(fake, state))
    cli.wait_log("watching for changes")
    append(log, b"".join(event_line(i) for i in range(2_000)))
    cli.wait_log("delivery failed, will retry")
    time.sleep(5)
    assert fake.event_count == 0
    assert not read_checkpoints(state), "nothing may be checkpointed during the outage"
    assert any(r.status == 503 for r in fake.requests)
    fake.clear_faults()
    assert fake.wait_for(2_000, timeout=30)
    cli.wait_log("delivery recovered")
    assert cli.stop() == 0
    assert sorted(seqs(fake)) == list(range(2_000))
    (entry,) = read_checkpoints(state).values()
    assert entry["offset"] == log.stat().st_size


@pytest.mark.parametrize("fault", ["hang", "close", "success_false", "refused", "429"])
def test_transient_faults_are_retried(fake, spawn, tmp_path: Path, fault: str) -> None:
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(300)))
    if fault == "hang":
        fake.hang_next(1, 3)
    elif fault == "close":
        fake.close_next(2)
    elif fault == "success_false":
        fake.success_false_next(2)
    elif fault == "429":
        fake.fail_next(3, 429)
    elif fault == "refused":
        fake.stop()
    cli = spawn("run", str(log), *fast_args(fake, tmp_path / "state"), "--request-timeout", "1")
    if fault == "refused":
        cli.wait_log("delivery failed, will retry")
        fake.start()
    assert fake.wait_for(300, timeout=30)
    assert cli.stop() == 0
    assert set(seqs(fake)) == set(range(300))


def test_bad_lines_are_dead_lettered_and_good_ones_arrive(fake, spawn, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    bad = [
        b"this is not json",
        b"[1, 2, 3]",
        b'{"event_name": "x", "value": true}',
        b'{"user_id": "u1"}',
        b'{"event_name": "\xff\xfe broken utf-8"}',
        b'{"event_name": "' + b"y" * 2000 + b'"}',
        b'{"event_name": "big", "metadata": {"blob": "' + b"z" * 5000 + b'"}}',
        b'{"event_name": "x", "user": {"userID": 42}}',
        b'{"event_name": "x", "time": "yesterday"}',
    ]
    lines, offsets, offset = [], {}, 0
    for i in range(40):
        good = event_line(i)
        lines.append(good)
        offset += len(good)
        if i < len(bad):
            offsets[i] = offset
            lines.append(bad[i] + b"\n")
            offset += len(bad[i]) + 1
    lines.append(b"\n   \n")  # blank lines are skipped silently
    log.write_bytes(b"".join(lines))
    state = tmp_path / "state"
    cli = spawn("run", str(log), *fast_args(fake, state), "--max-line-bytes", "4096")
    assert fake.wait_for(40)
    dead_path = state / "dead-letter.ndjson"
    assert wait_until(lambda: dead_path.exists() and len(dead_path.read_bytes().splitlines()) == len(bad))
    assert wait_until(lambda: [e["offset"] for e in read_checkpoints(state).values()] == [log.stat().st_size])
    assert cli.stop() == 0
    assert sorted(seqs(fake)) == list(range(40))
    dead = [orjson.loads(x) for x in dead_path.read_bytes().splitlines()]
    assert [d["offset"] for d in dead] == [offsets[i] for i in range(len(bad))]
    assert all(d["source"] == str(log) for d in dead)
    reasons = [d["reason"] for d in dead]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "not a JSON object: got array"
    assert reasons[2].startswith("invalid event: value:")
    assert reasons[3].startswith("invalid event: event_name: Field required")
    assert reasons[4] == "invalid UTF-8 at byte 16"
    assert "event_name" in reasons[5] and "128" in reasons[5]
    assert reasons[6] == f"line too long: {len(bad[6])} bytes > max_line_bytes 4096"
    assert reasons[7].startswith("invalid event: user.userID")
    assert reasons[8].startswith("invalid event: time")
    assert base64.b64decode(dead[4]["line_b64"]) == bad[4]
    assert dead[0]["line"] == "this is not json"
    assert dead[6]["truncated"] is True and dead[6]["size"] == len(bad[6])


def test_statsig_400_isolates_the_refused_event(fake, spawn, tmp_path: Path) -> None:
    fake.reject_if = lambda e: e["metadata"].get("seq") == 77
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(200)))
    state = tmp_path / "state"
    cli = spawn("run", str(log), *fast_args(fake, state), "--batch-size", "100")
    assert fake.wait_for(199)
    dead_path = state / "dead-letter.ndjson"
    assert wait_until(dead_path.exists)
    assert cli.stop() == 0
    assert sorted(seqs(fake)) == [i for i in range(200) if i != 77]
    (dead,) = [orjson.loads(x) for x in dead_path.read_bytes().splitlines()]
    assert dead["reason"].startswith("rejected by Statsig: HTTP 400")
    assert orjson.loads(dead["line"])["metadata"]["seq"] == 77
    assert read_checkpoints(state)


def test_wrong_key_is_a_loud_config_error_and_nothing_is_acknowledged(fake, spawn, tmp_path: Path) -> None:
    fake.expected_key = "secret-the-right-one"
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(50)))
    state = tmp_path / "state"
    cli = spawn("run", str(log), *fast_args(fake, state))
    rec = cli.wait_log("delivery failed, will retry")
    assert rec["level"] == "error" and "401" in rec["error"] and "secret key" in rec["error"]
    time.sleep(1)
    assert not read_checkpoints(state)
    fake.expected_key = SECRET  # the operator fixes the key on Statsig's side
    assert fake.wait_for(50, timeout=30)
    assert cli.stop() == 0
    assert SECRET not in bytes(cli.stderr).decode()


def test_stdin_mode_delivers_everything_and_exits_0(fake, spawn, tmp_path: Path) -> None:
    cli = spawn("run", "-", *fast_args(fake, tmp_path / "state"), stdin=subprocess.PIPE)
    assert cli.proc.stdin is not None
    cli.proc.stdin.write(b"".join(event_line(i) for i in range(1000)) + b'{"event_name": "last"}')
    cli.proc.stdin.close()
    assert cli.wait(30) == 0
    assert sorted(seqs(fake)) == list(range(1000))
    assert [e["eventName"] for e in fake.events].count("last") == 1, "a final line without newline is delivered"


def test_no_key_runs_a_dry_run_printing_events(spawn, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(5)))
    state = tmp_path / "state"
    cli = spawn("run", str(log), "--state-dir", str(state), "--flush-interval", "0.1", key=None)
    assert wait_until(lambda: bytes(cli.stdout).count(b"\n") == 5)
    assert cli.stop() == 0
    printed = [orjson.loads(x) for x in bytes(cli.stdout).splitlines()]
    assert [p["metadata"]["seq"] for p in printed] == list(range(5))
    assert printed[0]["eventName"] == "test_event"
    warning = cli.wait_log("DRY RUN")
    assert warning["level"] == "warning" and "no STATSIG_SERVER_SECRET_KEY" in warning["msg"]
    assert not (state / "checkpoints.json").exists(), "a dry run does not advance checkpoints"


def test_dry_run_commit_advances_checkpoints(spawn, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(5)))
    state = tmp_path / "state"
    cli = spawn("run", "--once", "--dry-run", "--commit", str(log), "--state-dir", str(state))
    assert cli.wait(30) == 0
    assert bytes(cli.stdout).count(b"\n") == 5
    (entry,) = read_checkpoints(state).values()
    assert entry["offset"] == log.stat().st_size


def test_partial_last_line_across_restart_is_delivered_once_whole(fake, spawn, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    whole = event_line(1)
    log.write_bytes(event_line(0) + whole[:30])
    args = [str(log), *fast_args(fake, tmp_path / "state")]
    cli = spawn("run", *args)
    assert fake.wait_for(1)
    time.sleep(0.5)
    assert cli.stop() == 0
    append(log, whole[30:])
    cli = spawn("run", *args)
    assert fake.wait_for(2)
    time.sleep(0.5)
    assert cli.stop() == 0
    assert seqs(fake) == [0, 1]
    assert fake.events[1]["metadata"].pop("forwarder_event_id").endswith(f":{len(event_line(0))}")
    assert fake.events[1]["metadata"] == {"seq": 1, "nested": {"ok": True}}


def test_sigterm_while_sink_hangs_is_bounded_and_checkpoints_only_delivered(fake, spawn, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(100)))
    state = tmp_path / "state"
    args = [str(log), *fast_args(fake, state), "--batch-size", "50"]
    cli = spawn("run", *args)
    assert fake.wait_for(100)
    assert wait_until(lambda: bool(read_checkpoints(state)))
    delivered_offset = log.stat().st_size
    fake.hang_next(100, 30)
    sent = len(fake.requests)
    append(log, b"".join(event_line(i) for i in range(100, 200)))
    assert wait_until(lambda: len(fake.requests) >= sent + 2)
    started = time.monotonic()
    cli.signal(signal.SIGTERM)
    assert cli.wait(30) == 0
    assert time.monotonic() - started < 10 + 5, "bounded by shutdown_timeout"
    cli.wait_log("shutdown_timeout reached")
    (entry,) = read_checkpoints(state).values()
    assert entry["offset"] == delivered_offset, "checkpoint holds only what Statsig accepted"
    fake.clear_faults()
    cli = spawn("run", *args)
    assert fake.wait_for(200)
    assert cli.stop() == 0
    assert sorted(seqs(fake)) == list(range(200))


def test_second_signal_stops_at_once(fake, spawn, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(10)))
    fake.fail_always(503)
    cli = spawn("run", str(log), *fast_args(fake, tmp_path / "state"), "--shutdown-timeout", "60")
    cli.wait_log("delivery failed, will retry")
    cli.signal(signal.SIGTERM)
    cli.wait_log("stopping")
    started = time.monotonic()
    cli.signal(signal.SIGTERM)
    assert cli.wait(20) == 0
    assert time.monotonic() - started < 5
    cli.wait_log("second signal")


def test_dead_letter_on_full_disk_holds_position_until_space_returns(fake, spawn, tmp_path: Path) -> None:
    """EFBIG via RLIMIT_FSIZE stands in for a full disk; raising the limit 'frees space'."""
    log = tmp_path / "events.ndjson"
    lines = [event_line(0)] + [b"not json " + b"x" * 200 + b"\n"] * 40 + [event_line(1)]
    log.write_bytes(b"".join(lines))
    state = tmp_path / "state"
    state.mkdir()
    limit = 3000

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    env_args = [str(log), *fast_args(fake, state)]
    proc = subprocess.Popen([sys.executable, "-m", "forwarder", "run", *env_args], cwd=tmp_path,
                            env=cli_env(STATSIG_SERVER_SECRET_KEY=SECRET, FORWARDER_LOG_FORMAT="json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limited)
    cli = Cli(proc)
    try:
        rec = cli.wait_log("cannot write dead-letter file")
        assert "too large" in rec["error"].lower() or "27" in rec["error"]
        time.sleep(0.5)
        assert 1 not in seqs(fake), "nothing after the unrecorded bad line is sent"
        assert not read_checkpoints(state)
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        assert fake.wait_for(2, timeout=60)
        assert wait_until(lambda: [e["offset"] for e in read_checkpoints(state).values()] == [log.stat().st_size])
    finally:
        assert cli.stop() == 0
    dead = (state / "dead-letter.ndjson").read_bytes().splitlines()
    assert len(dead) == 40 and all(orjson.loads(d)["reason"].startswith("invalid JSON") for d in dead)
    assert sorted(seqs(fake)) == [0, 1]


def test_second_run_on_same_state_dir_is_refused(fake, spawn, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.touch()
    args = [str(log), *fast_args(fake, tmp_path / "state")]
    first = spawn("run", *args)
    first.wait_log("watching for changes")
    second = spawn("run", *args)
    assert second.wait(20) == 2
    assert b"in use by pid" in bytes(second.stderr)
    assert first.proc.poll() is None
    assert first.stop() == 0


def test_checkpoint_file_corrupt_at_start_is_reported_and_reread(fake, spawn, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(20)))
    state = tmp_path / "state"
    state.mkdir()
    (state / "checkpoints.json").write_bytes(b'{"version": 1, "files": {"crc:1": {"off')
    cli = spawn("run", str(log), *fast_args(fake, state))
    rec = cli.wait_log("checkpoint file unreadable")
    assert rec["level"] == "error"
    assert fake.wait_for(20)
    assert cli.stop() == 0
    assert list(state.glob("checkpoints.json.corrupt-*"))
    assert sorted(seqs(fake)) == list(range(20))


def test_check_command_uses_the_sdk_against_the_fake(fake, spawn, tmp_path: Path) -> None:
    cli = spawn("check", "--statsig-api", fake.url)
    assert cli.wait(60) == 0, bytes(cli.stderr)
    assert b"key accepted" in bytes(cli.stdout)
    assert any("download_config_specs/" + SECRET in p for _, p in fake.other_requests)
    fake.stop()
    cli = spawn("check", "--statsig-api", fake.url, "--check-timeout", "2")
    assert cli.wait(60) == 1
    assert b"Statsig check failed" in bytes(cli.stderr)
    assert SECRET.encode() not in bytes(cli.stderr)


def test_run_logs_the_startup_check(fake, spawn, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.touch()
    cli = spawn("run", str(log), *fast_args(fake, tmp_path / "state"))
    rec = cli.wait_log("Statsig answered")
    assert rec["level"] == "info"
    assert cli.stop() == 0


@pytest.mark.parametrize(
    ("args", "env", "toml", "message"),
    [
        (["--batch-size", "0"], {}, None, "batch_size: Input should be greater than or equal to 1"),
        ([], {"FORWARDER_BATCH_SIZ": "5"}, None, "unknown environment variable FORWARDER_BATCH_SIZ"),
        ([], {}, "batch_size = 10\nflush_intervall = 2\n", "unknown option 'flush_intervall'"),
        ([], {}, "batch_size = 'many'\n", "batch_size: Input should be a valid integer"),
        ([], {}, "batch_size = [\n", "cannot read config file"),
        (["--config", "missing.toml"], {}, None, "config file not found: missing.toml"),
        (["--statsig-api", "events.statsigapi.net"], {}, None, "statsig_api must be an http(s) URL"),
    ],
)
def test_config_errors_fail_at_start_with_one_clear_line(spawn, tmp_path: Path, args, env, toml, message) -> None:
    if toml is not None:
        (tmp_path / "f.toml").write_text(toml)
        args = [*args, "--config", "f.toml"]
    cli = spawn("run", "events.ndjson", *args, env=env)
    assert cli.wait(20) == 2
    err = bytes(cli.stderr).decode()
    assert message in err, err
    assert "Traceback" not in err


def test_missing_file_is_waited_for(fake, spawn, tmp_path: Path) -> None:
    log = tmp_path / "later.ndjson"
    cli = spawn("run", str(log), *fast_args(fake, tmp_path / "state"))
    rec = cli.wait_log("file does not exist yet")
    assert rec["level"] == "warning"
    log.write_bytes(event_line(0))
    assert fake.wait_for(1)
    assert cli.stop() == 0


def test_many_requests_keep_file_order_of_checkpoints(fake, spawn, tmp_path: Path) -> None:
    """With 4 requests in flight finishing out of order, the checkpoint never passes a gap."""
    fake.latency = 0.01
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(3000)))
    state = tmp_path / "state"
    cli = spawn("run", "--once", str(log), *fast_args(fake, state), "--batch-size", "50", "--max-in-flight", "4")
    assert cli.wait(60) == 0
    counts = collections.Counter(seqs(fake))
    assert set(counts) == set(range(3000)) and max(counts.values()) == 1
    (entry,) = read_checkpoints(state).values()
    assert entry["offset"] == log.stat().st_size


def test_kill9_while_statsig_is_down_loses_nothing(fake, spawn, tmp_path: Path) -> None:
    """The headline case of docs/log-shippers.md: Fluent Bit and Fluentd lost every buffered event here."""
    total = 20_000
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i) for i in range(total)))
    state = tmp_path / "state"
    args = [str(log), *fast_args(fake, state)]
    fake.stop()  # connections refused
    cli = spawn("run", *args)
    cli.wait_log("delivery failed, will retry")
    time.sleep(2)
    cli.kill9()
    assert not read_checkpoints(state), "nothing was delivered, so nothing is checkpointed"
    fake.start()
    cli = spawn("run", *args)
    assert fake.wait_for(total, timeout=60)
    time.sleep(0.5)
    assert cli.stop() == 0
    assert sorted(seqs(fake)) == list(range(total)), "every event exactly once: none was delivered before the crash"
