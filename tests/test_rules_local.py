"""Local event rules through the real CLI: `run --once`, `replay`, SIGHUP, metrics; counts add up."""

from __future__ import annotations

import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from fake_statsig import FakeStatsig
from kit import Cli, Http, P, append, cli_env, event_line, fast_args, seqs, wait_until

from forwarder.decode.codec import decode_line
from forwarder.rules import Rule
from forwarder.rules.match import RuleSet

RULES = """
[[rules]]
name = "no-spam"
event = "spam"
action = "drop"

[[rules]]
name = "batch-checkout"
event = "checkout_*"
action = "drop"
field = "metadata.source"
equals = ["batch", "backfill"]

[[rules]]
name = "bots"
event = "*"
action = "drop"
field = "metadata.bot"
equals = true

[[rules]]
name = "chatty-30"
event = "chatty"
action = "sample"
rate = 0.3

[[rules]]
name = "would-drop-keep"
event = "keep"
action = "drop"
dry_run = true
"""


def mixed_file(path: Path) -> list[bytes]:
    """600 events of every kind plus 2 invalid lines; returns the lines."""
    kinds: list[dict[str, Any]] = [
        {"event_name": "keep"},
        {"event_name": "spam"},
        {"event_name": "checkout_done", "metadata": {"source": "batch"}},
        {"event_name": "checkout_done", "metadata": {"source": "web"}},
        {"event_name": "chatty"},
        {"event_name": "statsig::gate_exposure", "metadata": {"bot": True}},  # protected from "*"
        {"event_name": "keep", "metadata": {"bot": True}},
        {"event_name": "chatty"},
    ]
    lines = []
    for i in range(600):
        kind = kinds[i % len(kinds)]
        meta = {**kind.get("metadata", {}), "seq": i}
        lines.append(event_line(i, event_name=kind["event_name"], metadata=meta))
        if i in (100, 400):
            lines.append(b'{"event_name": ""}\n')  # invalid: dead-lettered
    path.write_bytes(b"".join(lines))
    return lines


def expected(lines: list[bytes], fingerprint: str, rules_toml: str) -> tuple[list[int], dict[str, int]]:
    """What the rules keep, computed in-process from the same stable ids."""
    rs = RuleSet([("local", Rule(**r)) for r in tomllib.loads(rules_toml)["rules"]])
    keep, offset = [], 0
    for line in lines:
        doc = orjson.loads(line)
        if doc["event_name"]:
            event = decode_line(line.rstrip(b"\n"))
            if not rs.decide(event, f"{fingerprint}:{offset}"):
                keep.append(doc["metadata"]["seq"])
        offset += len(line)
    counts = {c.key[1]: c.pending for c in rs.rules}
    return keep, counts


def stopped(cli: Cli) -> dict[str, Any]:
    return next(r for r in cli.logs() if r.get("msg") == "stopped")


def test_run_once_drops_samples_protects_exposures_and_counts_add_up(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    log = tmp_path / "events.ndjson"
    lines = mixed_file(log)
    config = tmp_path / "f.toml"
    config.write_text(RULES)
    state = tmp_path / "state"
    cli = spawn("run", "--once", str(log), "--config", str(config), *fast_args(fake, state))
    assert cli.wait() == 0, cli.stderr.decode()
    fingerprint = fake.events[0]["metadata"]["forwarder_event_id"].rsplit(":", 1)[0]
    keep, counts = expected(lines, fingerprint, RULES)
    assert seqs(fake) == keep  # exactly the events no rule removed, in order
    names = {(e["eventName"], (e.get("metadata") or {}).get("source")) for e in fake.events}
    assert ("spam", None) not in names and ("checkout_done", "batch") not in names
    assert ("checkout_done", "web") in names and ("statsig::gate_exposure", None) in names
    chatty = [e for e in fake.events if e["eventName"] == "chatty"]
    assert 20 < len(chatty) < 70  # 150 chatty events sampled at 0.3

    s = stopped(cli)
    assert s["events_read"] == 600 and s["events_dead_lettered"] == 2
    assert s["events_read"] + 2 == s["events_delivered"] + s["events_dead_lettered"] + s["events_removed"]
    by_rule = {r["rule"]: (r["action"], r["dry_run"], r["events"]) for r in s["removed_by_rule"]}
    assert by_rule == {
        "no-spam": ("drop", False, 75), "batch-checkout": ("drop", False, 75), "bots": ("drop", False, 75),
        "chatty-30": ("sample", False, 150 - len(chatty)), "would-drop-keep": ("drop", True, 75)}
    assert {k: v[2] for k, v in by_rule.items()} == counts
    # removed events advance the checkpoint like any other line: nothing left to read
    saved = orjson.loads((state / "checkpoints.json").read_bytes())["files"]
    assert [f["offset"] for f in saved.values()] == [log.stat().st_size]
    assert not any(b"spam" in line for line in (state / "dead-letter.ndjson").read_bytes().splitlines())


def test_replay_keeps_the_same_sampled_events_and_reports_rules(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(event_line(i, event_name="chatty" if i % 2 else "keep") for i in range(2000)))
    config = tmp_path / "f.toml"
    config.write_text('[[rules]]\nevent = "chatty"\naction = "sample"\nrate = 0.1\n')
    runs = []
    for _ in range(2):
        fake.events.clear()
        cli = spawn("replay", str(log), "--restart", "--config", str(config), *fast_args(fake, tmp_path / "s"))
        assert cli.wait() == 0, cli.stderr.decode()
        runs.append(sorted(seqs(fake)))
        summary = next(r for r in cli.logs() if r.get("msg") == "replay finished")
        assert summary["events_read"] == summary["events_delivered"] + summary["events_removed"] == 2000
        kept_chatty = len(runs[-1]) - 1000
        assert summary["events_removed"] == 1000 - kept_chatty
        assert f"0 skipped, {1000 - kept_chatty} removed by rules in".encode() in cli.stderr
        assert f"rule local:chatty (sample) {1000 - kept_chatty}".encode() in cli.stderr
    assert runs[0] == runs[1]  # the same file replayed: the same events kept
    assert 60 < len(runs[0]) - 1000 < 140


def test_sighup_changes_local_rules_and_refuses_bad_ones(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    log = tmp_path / "events.ndjson"
    log.touch()
    config = tmp_path / "f.toml"
    config.write_text("")
    cli = spawn("run", str(log), "--config", str(config), *fast_args(fake, tmp_path / "state"),
                "--metrics-listen", "127.0.0.1:0")
    http = Http(cli)
    n = [0]

    def batch(count: int = 20) -> list[int]:
        first = n[0]
        n[0] += count
        append(log, b"".join(event_line(i, event_name="ab"[i % 2]) for i in range(first, n[0])))
        return list(range(first, n[0]))

    def delivered_after(sent: list[int], want: list[int]) -> None:
        assert wait_until(lambda: set(want) <= set(seqs(fake)))
        assert wait_until(lambda: http.value(P + "lines_read_total", source="file") == n[0])
        assert set(seqs(fake)) & set(sent) == set(want)

    sent = batch()
    delivered_after(sent, sent)
    config.write_text('[[rules]]\nname = "no-a"\nevent = "a"\naction = "drop"\n')
    cli.signal(signal.SIGHUP)
    changed = cli.wait_log("local event rules changed")
    assert changed["added"] == ["no-a: drop 'a'"]
    sent = batch()
    delivered_after(sent, [i for i in sent if i % 2])  # only the b events

    config.write_text('[[rules]]\nevent = "b"\naction = "sample"\nrate = 2\n[[rules]]\nevent = "a"\n')
    cli.signal(signal.SIGHUP)
    failed = cli.wait_log("reload failed")
    assert failed["error"].splitlines()[1:] == [
        "  rules.0.rate: Input should be less than or equal to 1 (got 2)", "  rules.1.action: Field required"]
    sent = batch()
    delivered_after(sent, [i for i in sent if i % 2])  # the rules in force stay

    removed = http.value(P + "events_removed_total", source="file", origin="local", rule="no-a", action="drop")
    assert removed == 20
    shown = subprocess.run([sys.executable, "-m", "forwarder", "status", "--state-dir", str(tmp_path / "state"),
                            "--interval", "0.1"], capture_output=True, text=True, timeout=30, env=cli_env())
    assert "removed by event rules: 20 " in shown.stdout, shown.stdout + shown.stderr
    config.write_text("")
    cli.signal(signal.SIGHUP)
    assert wait_until(lambda: len([r for r in cli.logs() if r.get("msg") == "local event rules changed"]) == 2)
    sent = batch()
    delivered_after(sent, sent)  # a resumes
    assert cli.stop() == 0
    s = stopped(cli)
    assert (s["events_read"], s["events_delivered"], s["events_removed"]) == (80, 60, 20)
