"""A rule list compiled for the reader's hot path.

Per event the reader does one dict lookup by event name (`RuleSet.plans`); a name no rule
can touch maps to None and costs nothing more. Names are matched against the globs once
and cached. Every rule that matches is evaluated in order until one removes the event
(dry-run rules count and let evaluation go on), so the outcome does not depend on order;
order decides only which rule an event is counted against.

Sampling is deterministic: an event is kept when a 64-bit BLAKE2b hash of its stable id
(`<fingerprint>:<offset>`, the same as `metadata.forwarder_event_id`) is below rate x 2^64,
so a replay of the same file keeps the same events, and a lower rate keeps a subset of a
higher one. Events without an id (stdin) hash their raw line. Per user, the hash is of the
user (userID, else customIDs.stableID); events without either are sampled per event.
"""

from __future__ import annotations

import fnmatch
import re
from hashlib import blake2b
from typing import Any

from ..model import StatsigEvent
from ..stats import Stats
from .model import Rule

# The relay's exposure events: only a rule whose pattern starts with "statsig::" may touch them.
EXPOSURE = re.compile(r"statsig::.*_exposure", re.S)
PROTECTED_PREFIX = "statsig::"
ANONYMOUS = "anonymous"  # the userID the decoder gives events without one
MAX_CACHED_NAMES = 10_000  # hostile name cardinality must not grow memory without bound
_SPACE = 1 << 64

RuleKey = tuple[str, str, str, bool]  # (origin, label, action, dry_run)


def may_touch(pattern: str, name: str) -> bool:
    """Does a rule with this event pattern apply to events called `name`?"""
    if EXPOSURE.fullmatch(name) and not pattern.startswith(PROTECTED_PREFIX):
        return False
    return pattern == name or fnmatch.fnmatchcase(name, pattern)


def _hash(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def keep_share(rate: float) -> int:
    """The hash threshold below which an event is kept."""
    return min(_SPACE, int(rate * _SPACE))


def user_key(event: StatsigEvent) -> str | None:
    user = event.get("user")
    if type(user) is not dict:
        return None
    uid = user.get("userID")
    if type(uid) is str and uid and uid != ANONYMOUS:
        return "u:" + uid
    ids = user.get("customIDs")
    stable = ids.get("stableID") if type(ids) is dict else None
    return "s:" + str(stable) if stable not in (None, "") else None


class CompiledRule:
    """One rule, ready to evaluate; `pending` counts what it removed since the last flush."""

    __slots__ = ("action", "dry_run", "equals", "key", "path", "pattern", "pending", "per_user", "threshold")

    def __init__(self, origin: str, rule: Rule) -> None:
        self.pattern = rule.event
        self.action = rule.action
        self.dry_run = rule.dry_run
        self.per_user = rule.per_user
        self.threshold = keep_share(rule.rate) if rule.rate is not None else 0
        self.path: tuple[str, ...] | None = tuple(rule.field.split(".")) if rule.field is not None else None
        values = rule.equals if isinstance(rule.equals, list) else [rule.equals]
        self.equals = [v for v in values if v is not None]
        self.key: RuleKey = (origin, rule.label, rule.action, rule.dry_run)
        self.pending = 0

    def field_matches(self, event: StatsigEvent) -> bool:
        assert self.path is not None
        node: Any = event
        for part in self.path:
            if type(node) is not dict:
                return False
            node = node.get(part)
        if node is None or isinstance(node, dict | list):
            return False
        # bool is an int in Python: keep `true` from equalling 1
        return any(v == node and (type(v) is bool) == (type(node) is bool) for v in self.equals)

    def removes(self, event: StatsigEvent, ident: str | bytes) -> bool:
        if self.action == "drop":
            return True
        if self.per_user:
            user = user_key(event)
            if user is not None:
                return _hash(user.encode()) >= self.threshold
        return _hash(ident.encode() if isinstance(ident, str) else ident) >= self.threshold


class Plan:
    """The rules that apply to one event name, in order."""

    __slots__ = ("rules",)

    def __init__(self, rules: list[CompiledRule]) -> None:
        self.rules = rules

    def __call__(self, event: StatsigEvent, ident: str | bytes) -> bool:
        """Remove this event? `ident` is its stable id, or its raw line when it has none."""
        for rule in self.rules:
            if rule.path is not None and not rule.field_matches(event):
                continue
            if rule.removes(event, ident):
                rule.pending += 1
                if not rule.dry_run:
                    return True
        return False


class _Plans(dict[str, Plan | None]):
    def __init__(self, rules: list[CompiledRule]) -> None:
        super().__init__()
        self._rules = rules

    def __missing__(self, name: str) -> Plan | None:
        matching = [r for r in self._rules if may_touch(r.pattern, name)]
        plan = Plan(matching) if matching else None
        if len(self) < MAX_CACHED_NAMES:
            self[name] = plan
        return plan


class RuleSet:
    """Compiled (origin, rule) pairs; used by the reader thread only, replaced whole on change."""

    def __init__(self, rules: list[tuple[str, Rule]]) -> None:
        self.rules = [CompiledRule(origin, rule) for origin, rule in rules]
        self.plans = _Plans(self.rules)

    def decide(self, event: StatsigEvent, ident: str | bytes) -> bool:
        """Remove this event? (The reader inlines this lookup.)"""
        plan = self.plans[event["eventName"]]
        return plan is not None and plan(event, ident)

    def flush(self, stats: Stats) -> None:
        """Move the per-rule counts into `stats`."""
        counts = {}
        for rule in self.rules:
            if rule.pending:
                counts[rule.key] = rule.pending
                rule.pending = 0
        if counts:
            stats.add_rules(counts)
