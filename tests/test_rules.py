"""Event rules in-process: validation, matching, deterministic sampling, exposure safety, counting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.decode.codec import decode_line
from forwarder.errors import ConfigError
from forwarder.model import StatsigEvent
from forwarder.rules import Rule, RuleError, parse_remote
from forwarder.rules.match import RuleSet
from forwarder.settings import load_settings
from forwarder.stats import Stats


def event(doc: dict[str, Any]) -> StatsigEvent:
    return decode_line(orjson.dumps(doc))


def doc(name: str, user: str = "u1", **metadata: Any) -> dict[str, Any]:
    return {"eventName": name, "user": {"userID": user}, "value": 1, "metadata": dict(metadata), "time": 1}


def ev(name: str, user: str = "u1", **metadata: Any) -> StatsigEvent:
    return event(doc(name, user, **metadata))


def rules(*specs: dict[str, Any], origin: str = "local") -> RuleSet:
    return RuleSet([(origin, Rule(**spec)) for spec in specs])


def kept(rs: RuleSet, events: list[StatsigEvent], ids: list[str]) -> list[int]:
    return [i for i, (e, ident) in enumerate(zip(events, ids, strict=True)) if not rs.decide(e, ident)]


def test_config_mistakes_are_reported_one_line_each(tmp_path: Path) -> None:
    toml = tmp_path / "f.toml"
    toml.write_text("""
[[rules]]
event = "a"
action = "sample"
rate = 1.5

[[rules]]
event = "b"
action = "drop"
rate = 0.5

[[rules]]
event = "c"
action = "explode"

[[rules]]
event = "d"
action = "drop"
field = "metadata.source"

[[rules]]
event = "e"
action = "drop"
field = "payload.x"
equals = "y"
""")
    with pytest.raises(ConfigError) as e:
        load_settings(toml)
    lines = str(e.value).splitlines()
    assert lines[0] == "invalid configuration:"
    problems = [line.strip() for line in lines[1:]]
    assert problems == [
        "rules.0.rate: Input should be less than or equal to 1 (got 1.5)",
        "rules.1: action 'drop' takes no rate (use action 'sample')",
        "rules.2.action: Input should be 'drop' or 'sample' (got 'explode')",
        "rules.3: field and equals go together",
        "rules.4: field must be a dotted path starting with one of user, metadata, value, time (got 'payload.x')",
    ], problems


def test_duplicate_names_and_a_good_config(tmp_path: Path) -> None:
    toml = tmp_path / "f.toml"
    toml.write_text('[[rules]]\nevent = "a"\naction = "drop"\n[[rules]]\nevent = "a"\naction = "sample"\nrate = 0.5\n')
    with pytest.raises(ConfigError, match="rules: rules 0 and 1 are both named 'a'; give each a unique name"):
        load_settings(toml)
    toml.write_text('[[rules]]\nevent = "a"\naction = "drop"\n[[rules]]\nname = "a-half"\nevent = "a"\n'
                    'action = "sample"\nrate = 0.5\nper_user = true\n')
    assert [r.label for r in load_settings(toml).rules] == ["a", "a-half"]


def test_remote_value_is_refused_whole() -> None:
    assert parse_remote({}) == []
    assert parse_remote({"rules": [{"event": "x", "action": "drop"}]}) == [Rule(event="x", action="drop")]
    with pytest.raises(RuleError) as e:
        parse_remote({"rules": [{"event": "x", "action": "drop"}, {"event": "y", "action": "sample"}]})
    assert e.value.problems == ["rules.1: action 'sample' needs a rate in (0, 1]"]
    with pytest.raises(RuleError, match="unknown key 'rulez'"):
        parse_remote({"rulez": []})
    with pytest.raises(RuleError):
        parse_remote([{"event": "x", "action": "drop"}])


def test_names_globs_fields_and_first_removing_rule_is_counted() -> None:
    rs = rules({"event": "checkout_*", "action": "drop", "field": "metadata.source", "equals": ["retry", "bot"]},
               {"event": "page_view", "action": "drop"},
               {"event": "*", "action": "drop", "field": "value", "equals": 7, "name": "sevens"})
    assert rs.decide(ev("checkout_done", source="retry"), "f:1")
    assert rs.decide(ev("checkout_start", source="bot"), "f:2")
    assert not rs.decide(ev("checkout_start", source="web"), "f:3")
    assert not rs.decide(ev("checkout_start"), "f:4")  # no such field: no match
    assert not rs.decide(ev("checkout_start", source={"nested": 1}), "f:5")
    assert rs.decide(ev("page_view"), "f:6")
    assert not rs.decide(ev("page_viewed"), "f:7")
    assert rs.decide(event({**doc("other"), "value": 7}), "f:8")
    assert not rs.decide(StatsigEvent("other", 1, value=True), "f:9")  # true is not 7, and not 1 either
    stats = Stats()
    rs.flush(stats)
    assert {(r["rule"], r["events"]) for r in stats.removed_by_rule()} == {
        ("checkout_*[metadata.source=['retry', 'bot']]", 2), ("page_view", 1), ("sevens", 1)}


def test_exposures_are_touched_only_by_rules_that_name_them() -> None:
    exposures = ["statsig::gate_exposure", "statsig::config_exposure", "statsig::layer_exposure"]
    catch_all = rules({"event": "*", "action": "drop"}, {"event": "statsig*", "action": "drop", "name": "s"})
    assert [catch_all.decide(ev(n), "f:1") for n in exposures] == [False, False, False]
    assert catch_all.decide(ev("statsig::diagnostics"), "f:1")  # not an exposure
    named = rules({"event": "statsig::gate_exposure", "action": "drop"})
    assert [named.decide(ev(n), "f:1") for n in exposures] == [True, False, False]
    glob = rules({"event": "statsig::*_exposure", "action": "sample", "rate": 0.5})
    assert 0 < sum(glob.decide(ev("statsig::config_exposure"), f"f:{i}") for i in range(100)) < 100


def test_sampling_100k_events_is_within_bounds_and_deterministic() -> None:
    n, rate = 100_000, 0.1
    events = [ev("chatty", user=f"u{i % 5000}") for i in range(n)]
    ids = [f"crc:0123456789abcdef:{i * 190}" for i in range(n)]
    first = kept(rules({"event": "chatty", "action": "sample", "rate": rate}), events, ids)
    # 5 standard deviations of a binomial(100000, 0.1): 474 events
    assert abs(len(first) - n * rate) < 5 * (n * rate * (1 - rate)) ** 0.5, len(first)
    again = kept(rules({"event": "chatty", "action": "sample", "rate": rate}), events, ids)
    assert again == first  # a replay of the same file keeps the same events
    lower = kept(rules({"event": "chatty", "action": "sample", "rate": 0.05}), events, ids)
    assert set(lower) < set(first)  # a lower rate keeps a subset
    assert len(kept(rules({"event": "chatty", "action": "sample", "rate": 1.0}), events, ids)) == n


def test_per_user_sampling_keeps_whole_users() -> None:
    n = 100_000
    events = [ev("chatty", user=f"u{i % 2000}") for i in range(n)]
    events += [event({**doc("chatty"), "user": {"userID": "anonymous", "customIDs": {"stableID": f"s{i % 10}"}}})
               for i in range(1000)]
    ids = [f"crc:1:{i}" for i in range(len(events))]
    rs = rules({"event": "chatty", "action": "sample", "rate": 0.1, "per_user": True})
    keep = set(kept(rs, events, ids))
    by_user: dict[str, set[bool]] = {}
    for i, e in enumerate(events):
        u = e.as_dict()["user"]
        user = u["userID"] if u["userID"] != "anonymous" else u["customIDs"]["stableID"]
        by_user.setdefault(user, set()).add(i in keep)
    assert all(len(v) == 1 for v in by_user.values())  # all or none of each user's events
    kept_users = sum(1 for v in by_user.values() if True in v)
    assert 140 <= kept_users <= 270, kept_users  # about 10% of 2010 users (5 sd)
    # without a user: sampled per event instead of all-or-nothing for "anonymous"
    anon = rules({"event": "chatty", "action": "sample", "rate": 0.5, "per_user": True})
    assert 300 < len(kept(anon, [ev("chatty", user="anonymous")] * 1000, [f"x:{i}" for i in range(1000)])) < 700


def test_dry_run_counts_without_removing_and_later_rules_still_apply() -> None:
    rs = rules({"event": "a", "action": "drop", "dry_run": True, "name": "try-drop-a"},
               {"event": "a", "action": "sample", "rate": 0.5, "name": "half-a"})
    removed = sum(rs.decide(ev("a"), f"f:{i}") for i in range(1000))
    stats = Stats()
    rs.flush(stats)
    counts = {(r["rule"], r["dry_run"]): r["events"] for r in stats.removed_by_rule()}
    assert counts == {("try-drop-a", True): 1000, ("half-a", False): removed}
    assert 400 < removed < 600


def test_stdin_events_without_id_are_sampled_by_their_line() -> None:
    rs = rules({"event": "a", "action": "sample", "rate": 0.5})
    lines = [b'{"event_name":"a","value":%d}' % i for i in range(1000)]
    first = [rs.decide(ev("a"), line) for line in lines]
    assert first == [rs.decide(ev("a"), line) for line in lines]
    assert 400 < sum(first) < 600
