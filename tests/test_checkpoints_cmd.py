"""`checkpoints list|show|set|reset`, their effect on the next run, and the state dir lock."""

from __future__ import annotations

import orjson
from kit import event_line, fast_args, seqs, wait_until


def make_file(tmp_path, n=100):
    path = tmp_path / "events.ndjson"
    lines = [event_line(i) for i in range(n)]
    path.write_bytes(b"".join(lines))
    starts, pos = [], 0
    for line in lines:
        starts.append(pos)
        pos += len(line)
    return path, starts


def run_once(spawn, fake, state, path):
    before = len(fake.events)
    cli = spawn("run", "--once", str(path), *fast_args(fake, state))
    assert cli.wait() == 0, cli.stderr.decode()
    return seqs(fake)[before:] if before else seqs(fake)


def ckpt(spawn, *args, key=None):
    cli = spawn("checkpoints", *args, key=key)
    rc = cli.wait()
    return rc, bytes(cli.stdout).decode(), bytes(cli.stderr).decode()


def test_list_show_set_reset_move_the_next_run(spawn, fake, tmp_path):
    path, starts = make_file(tmp_path)
    state = tmp_path / "state"
    assert run_once(spawn, fake, state, path) == list(range(100))

    rc, out, _ = ckpt(spawn, "list", "--state-dir", str(state), "--json")
    assert rc == 0
    [row] = orjson.loads(out)
    size = path.stat().st_size
    got = (row["path"], row["offset"], row["size"], row["lag"], row["status"])
    assert got == (str(path), size, size, 0, "ok")
    assert row["fingerprint"].startswith("crc:") and row["last_delivered"]
    rc, out, _ = ckpt(spawn, "list", "--state-dir", str(state))
    assert rc == 0 and str(path) in out and row["fingerprint"] in out

    # An offset inside line 50 moves to the start of line 51: the next run sends 51..99.
    rc, out, _ = ckpt(spawn, "set", str(path), str(starts[50] + 3), "--state-dir", str(state))
    assert rc == 0, out
    assert out.strip() == f"{row['fingerprint']}: offset {size} -> {starts[51]}"
    rc, out, _ = ckpt(spawn, "show", row["fingerprint"], "--state-dir", str(state))
    assert rc == 0 and orjson.loads(out)[0]["lag"] == size - starts[51]
    assert run_once(spawn, fake, state, path) == list(range(51, 100))

    # Reset: the file counts as new and is read from the start.
    rc, out, _ = ckpt(spawn, "reset", str(path), "--state-dir", str(state))
    assert rc == 0 and "reset" in out
    assert run_once(spawn, fake, state, path) == list(range(100))

    # set ... end: nothing is left to send.
    assert ckpt(spawn, "set", str(path), "end", "--state-dir", str(state))[0] == 0
    assert run_once(spawn, fake, state, path) == []
    assert ckpt(spawn, "show", "nope.ndjson", "--state-dir", str(state))[0] == 1


def test_replay_namespace_is_separate(spawn, fake, tmp_path):
    path, starts = make_file(tmp_path, 20)
    state = tmp_path / "state"
    cli = spawn("replay", str(path), *fast_args(fake, state))
    assert cli.wait() == 0
    _, out, _ = ckpt(spawn, "list", "--state-dir", str(state), "--json")
    assert orjson.loads(out) == []
    replay_ns = ["--state-dir", str(state), "--namespace", "replay"]
    _, out, _ = ckpt(spawn, "list", "--json", *replay_ns)
    assert [r["offset"] for r in orjson.loads(out)] == [path.stat().st_size]
    assert ckpt(spawn, "set", str(path), str(starts[15]), *replay_ns)[0] == 0
    again = spawn("replay", str(path), *fast_args(fake, state))
    assert again.wait() == 0
    assert seqs(fake) == [*range(20), *range(15, 20)]


def test_edits_refused_while_run_holds_the_state_dir(spawn, fake, tmp_path):
    path, _ = make_file(tmp_path, 10)
    state = tmp_path / "state"
    run = spawn("run", str(path), *fast_args(fake, state))
    assert fake.wait_for(10)
    assert wait_until(lambda: (state / "checkpoints.json").exists())

    rc, _, err = ckpt(spawn, "set", str(path), "0", "--state-dir", str(state))
    assert rc == 2
    assert "refusing to change checkpoints" in err and f"in use by pid {run.proc.pid}" in err
    assert ckpt(spawn, "reset", "--all", "--state-dir", str(state))[0] == 2
    assert ckpt(spawn, "list", "--state-dir", str(state))[0] == 0  # reading is always allowed
    assert run.stop() == 0
    assert ckpt(spawn, "reset", "--all", "--state-dir", str(state))[0] == 0


def test_second_run_on_the_same_state_dir_is_refused(spawn, fake, tmp_path):
    path, _ = make_file(tmp_path, 10)
    state = tmp_path / "state"
    first = spawn("run", str(path), *fast_args(fake, state))
    assert fake.wait_for(10)
    second = spawn("run", str(path), *fast_args(fake, state))
    assert second.wait(timeout=15) == 2
    message = f"in use by pid {first.proc.pid}; only one forwarder may own a state directory"
    assert message in second.stderr.decode()
    assert first.proc.poll() is None  # the owner carries on
    with open(path, "ab") as f:
        f.write(event_line(10))
    assert fake.wait_for(11)
    assert first.stop() == 0
    assert sorted(seqs(fake)) == list(range(11))
