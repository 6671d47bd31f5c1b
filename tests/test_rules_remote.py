"""Remote event rules: the real statsig-python-core evaluating a dynamic config served by the fake.

Rules appear, change and disappear while the forwarder runs; a malformed value is refused
whole; targeting by a custom field sends different rules to two forwarders; with the fake
down, the last rules stay, also across a restart (saved in the state directory).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from fake_statsig import FakeStatsig
from kit import Cli, Http, P, append, event_line, fast_args, seqs, wait_until

CONFIG = "forwarder_event_rules"
DROP_A = {"rules": [{"name": "no-a", "event": "a", "action": "drop"}]}
DROP_B = {"rules": [{"name": "no-b", "event": "b", "action": "drop"}]}


def remote_args(fake: FakeStatsig, state: Path) -> list[str]:
    return [*fast_args(fake, state), "--remote-rules", CONFIG, "--remote-rules-sync-interval", "1",
            "--shutdown-timeout", "1"]


class Feed:
    """Appends numbered `a`/`b` events to a followed file and checks which of them arrived."""

    def __init__(self, log: Path, fake: FakeStatsig) -> None:
        self.log, self.fake, self.n = log, fake, 0
        log.touch()

    def append(self, count: int = 20) -> list[int]:
        first, self.n = self.n, self.n + count
        append(self.log, b"".join(event_line(i, event_name="ab"[i % 2]) for i in range(first, self.n)))
        return list(range(first, self.n))

    def expect(self, names: str, count: int = 20) -> None:
        """Append a batch; exactly its events called one of `names` arrive."""
        sent = self.append(count)
        want = {i for i in sent if "ab"[i % 2] in names}
        assert wait_until(lambda: want <= set(seqs(self.fake))), sorted(want - set(seqs(self.fake)))[:5]
        # a removed event is decided when read, before the next batch is even written
        marker = self.append(2)
        assert wait_until(lambda: {m for m in marker if "ab"[m % 2] in names} <= set(seqs(self.fake)))
        assert set(seqs(self.fake)) & set(sent) == want


def changes(cli: Cli) -> list[dict[str, Any]]:
    return [r for r in cli.logs() if r.get("msg") == "remote event rules changed"]


def stopped(cli: Cli) -> dict[str, Any]:
    return next(r for r in cli.logs() if r.get("msg") == "stopped")


def test_remote_rules_appear_change_refuse_malformed_and_disappear(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    feed = Feed(tmp_path / "events.ndjson", fake)
    cli = spawn("run", str(feed.log), *remote_args(fake, tmp_path / "state"))
    feed.expect("ab")  # no such config yet: no remote rules

    fake.set_dynamic_config(CONFIG, DROP_A)
    assert wait_until(lambda: len(changes(cli)) == 1)
    assert changes(cli)[0]["added"] == ["no-a: drop 'a'"]
    feed.expect("b")

    fake.set_dynamic_config(CONFIG, DROP_B)
    assert wait_until(lambda: len(changes(cli)) == 2)
    assert (changes(cli)[1]["added"], changes(cli)[1]["removed"]) == (["no-b: drop 'b'"], ["no-a: drop 'a'"])
    feed.expect("a")

    # valid first rule, broken second: nothing of it applies, the rules in force stay
    fake.set_dynamic_config(CONFIG, {"rules": [DROP_A["rules"][0], {"event": "b", "action": "sample"}]})
    refused = cli.wait_log("remote event rules refused")
    assert refused["problems"] == ["rules.1: action 'sample' needs a rate in (0, 1]"]
    feed.expect("a")

    fake.remove_dynamic_config(CONFIG)
    assert wait_until(lambda: len(changes(cli)) == 3)
    feed.expect("ab")
    assert cli.stop() == 0
    s = stopped(cli)
    assert (s["remote_rules_refused"], s["events_read"]) == (1, feed.n)
    assert s["events_read"] == s["events_delivered"] + s["events_dead_lettered"] + s["events_removed"]
    assert {(r["origin"], r["rule"]): r["events"] for r in s["removed_by_rule"]} == {
        ("remote", "no-a"): 11, ("remote", "no-b"): 22}
    assert not [e for e in fake.events if e["eventName"].startswith("statsig::")]  # the SDK logged nothing


def test_targeting_by_a_custom_field_sends_different_rules_to_two_forwarders(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    fake.set_dynamic_config(CONFIG, {"rules": []}, targets=[("service", ["checkout"], DROP_A)])
    clis = {}
    for service in ("checkout", "search"):
        log = tmp_path / f"{service}.ndjson"
        log.write_bytes(b"".join(event_line(i, event_name="ab"[i % 2], metadata={"seq": i, "svc": service})
                                 for i in range(40)))
        env = {"FORWARDER_REMOTE_RULES_USER_CUSTOM": orjson.dumps({"service": service}).decode()}
        clis[service] = spawn("run", "--once", str(log), *remote_args(fake, tmp_path / service), env=env)
    for service, cli in clis.items():
        assert cli.wait() == 0, cli.stderr.decode()
        assert cli.wait_log("evaluating the dynamic config")["custom"]["service"] == service
    names = {svc: sorted({e["eventName"] for e in fake.events if e["metadata"]["svc"] == svc})
             for svc in ("checkout", "search")}
    assert names == {"checkout": ["b"], "search": ["a", "b"]}
    assert fake.event_count == 60
    assert stopped(clis["checkout"])["events_removed"] == 20


def test_statsig_down_keeps_the_last_rules_also_across_a_restart(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    feed = Feed(tmp_path / "events.ndjson", fake)
    fake.set_dynamic_config(CONFIG, DROP_A)
    cli = spawn("run", str(feed.log), *remote_args(fake, state), "--metrics-listen", "127.0.0.1:0")
    http = Http(cli)
    assert wait_until(lambda: len(changes(cli)) == 1)
    feed.expect("b")
    saved = orjson.loads((state / "remote-rules.json").read_bytes())
    assert (saved["version"], saved["config"], saved["value"]) == (1, CONFIG, DROP_A)

    fake.stop()  # Statsig unreachable: config specs and events alike
    sent = feed.append(20)
    assert wait_until(lambda: http.value(P + "lines_read_total", source="file") == feed.n)
    cli.signal(signal.SIGTERM)
    assert cli.wait() == 0
    assert stopped(cli)["events_removed"] == 11 + 10  # the a events read while Statsig was down
    assert len(changes(cli)) == 1

    again = spawn("run", str(feed.log), *remote_args(fake, state))
    rec = again.wait_log("remote event rules changed")
    assert rec["from"].startswith("saved") and rec["added"] == ["no-a: drop 'a'"]
    fake.start()  # same port
    feed.expect("b")
    assert set(seqs(fake)) >= {i for i in sent if i % 2}  # read before the restart, delivered after
    assert not {i for i in sent if i % 2 == 0} & set(seqs(fake))
    assert again.stop() == 0
    assert len(changes(again)) == 1  # Statsig, once back, serves the same rules: no change
