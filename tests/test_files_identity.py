"""One identity for every reader: `run`, `checkpoints` and `replay` identify files the same way
(fingerprint_bytes), and `replay` discovers files as `run` does (exclude)."""

from __future__ import annotations

import orjson
from kit import event_line, fast_args, logs_dir, seqs

FP = "1024"


def long_first_line_file(d):
    """A file whose first line (300 bytes) is longer than the 256-byte default fingerprint."""
    path = d / "events.ndjson"
    first = event_line(0, padding="x" * (300 - len(event_line(0, padding=""))))
    assert len(first) == 300
    path.write_bytes(first + b"".join(event_line(i) for i in range(1, 20)))
    return path


def cmd(spawn, *args, env=None):
    cli = spawn(*args, key=None, env=env)
    rc = cli.wait()
    return rc, bytes(cli.stdout).decode(), bytes(cli.stderr).decode()


def test_checkpoints_use_the_fingerprint_bytes_run_uses(spawn, fake, tmp_path):
    path = long_first_line_file(logs_dir(tmp_path))
    state = tmp_path / "state"
    run = spawn("run", "--once", str(path), "--fingerprint-bytes", FP, *fast_args(fake, state))
    assert run.wait() == 0, run.stderr.decode()
    assert sorted(seqs(fake)) == list(range(20))

    env = {"FORWARDER_FINGERPRINT_BYTES": FP}  # as `run` would get it from its environment
    rc, out, err = cmd(spawn, "checkpoints", "list", "--state-dir", str(state), "--json", env=env)
    assert rc == 0, err
    [row] = orjson.loads(out)
    assert row["status"] == "ok" and row["lag"] == 0  # not "(replaced)": the same identity as run's
    rc, out, err = cmd(spawn, "checkpoints", "list", "--state-dir", str(state), "--fingerprint-bytes", FP)
    assert rc == 0 and "(replaced)" not in out, out + err

    rc, out, err = cmd(spawn, "checkpoints", "set", str(path), "start", "--state-dir", str(state),
                       "--fingerprint-bytes", FP)
    assert rc == 0, err
    assert out.startswith(row["fingerprint"] + ":")  # the key run reads, not a second one
    run = spawn("run", "--once", str(path), "--fingerprint-bytes", FP, *fast_args(fake, state))
    assert run.wait() == 0, run.stderr.decode()
    assert sorted(seqs(fake)) == sorted([*range(20), *range(20)])  # delivered again from the start


def test_replay_honours_exclude(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    (logs / "a.ndjson").write_bytes(b"".join(event_line(i) for i in range(10)))
    (logs / "a.ndjson.tmp").write_bytes(b"".join(event_line(i) for i in range(100, 110)))
    cli = spawn("replay", str(logs / "*"), "--exclude", "*.tmp", *fast_args(fake, tmp_path / "state"))
    assert cli.wait() == 0, cli.stderr.decode()
    assert sorted(seqs(fake)) == list(range(10))


def test_replay_restart_forgets_the_position_under_the_identity_it_reads(spawn, fake, tmp_path):
    path = long_first_line_file(logs_dir(tmp_path))
    args = [str(path), "--fingerprint-bytes", FP, *fast_args(fake, tmp_path / "state")]
    assert spawn("replay", *args).wait() == 0
    assert spawn("replay", *args).wait() == 0  # resumes at its end: nothing again
    assert sorted(seqs(fake)) == list(range(20))
    assert spawn("replay", "--restart", *args).wait() == 0
    assert sorted(seqs(fake)) == sorted([*range(20), *range(20)])
