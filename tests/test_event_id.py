"""Stable event ids: `<fingerprint>:<byte offset of the line>` in metadata, for `run` and `replay`."""

from __future__ import annotations

import gzip

from kit import event_line, fast_args, read_checkpoints


def test_run_and_replay_of_a_gz_copy_give_the_same_ids(spawn, fake, tmp_path):
    lines = [event_line(i) for i in range(30)]
    lines[3] = b'{"event_name": "no_metadata"}\n'
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"".join(lines))
    state = tmp_path / "state"
    cli = spawn("run", "--once", str(path), *fast_args(fake, state))
    assert cli.wait() == 0
    [key] = read_checkpoints(state)
    starts = [sum(len(x) for x in lines[:i]) for i in range(30)]
    ids = [e["metadata"]["forwarder_event_id"] for e in fake.events]
    assert ids == [f"{key}:{s}" for s in starts]
    assert fake.events[0]["metadata"]["seq"] == 0  # other fields map as before

    # The rotated-and-compressed copy has the same identity and offsets: a consumer can
    # drop every event of a repeated delivery by id.
    (tmp_path / "events.ndjson.1.gz").write_bytes(gzip.compress(path.read_bytes()))
    fake.events.clear()
    replay = spawn("replay", str(tmp_path / "events.ndjson.1.gz"), *fast_args(fake, state))
    assert replay.wait() == 0
    assert [e["metadata"]["forwarder_event_id"] for e in fake.events] == ids


def test_event_id_field_is_configurable_and_can_be_disabled(spawn, fake, tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_bytes(event_line(1) + event_line(2))
    cli = spawn("run", "--once", str(path), *fast_args(fake, tmp_path / "s1"), "--event-id-field", "eid")
    assert cli.wait() == 0
    assert [sorted(e["metadata"]) for e in fake.events] == [["eid", "nested", "seq"]] * 2
    fake.events.clear()
    no_id = {"FORWARDER_EVENT_ID_FIELD": ""}
    off = spawn("run", "--once", str(path), *fast_args(fake, tmp_path / "s2"), env=no_id)
    assert off.wait() == 0
    assert [sorted(e["metadata"]) for e in fake.events] == [["nested", "seq"]] * 2
