"""Counters of what the pipeline did, for the exit summary, logs and metrics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class Stats:
    """Monotonic counters; `add` is safe from any thread."""

    lines_read: int = 0
    events_read: int = 0
    events_delivered: int = 0
    events_dead_lettered: int = 0
    events_skipped: int = 0  # read, valid, left out on purpose (replay filters)
    events_removed: int = 0  # read, valid, removed by an event rule (drop, sample)
    remote_rules_applied: int = 0  # rule lists taken from the remote dynamic config
    remote_rules_refused: int = 0  # malformed remote values refused whole
    events_rejected_by_statsig: int = 0
    events_statsig_rules: int = 0  # dead-lettered: Statsig would drop them (name, or oversize = reject)
    # Events with a field over Statsig's documented size limits, sent or dead-lettered.
    over_limit_event_name: int = 0
    over_limit_value: int = 0
    over_limit_metadata: int = 0
    over_limit_user: int = 0
    batches_sent: int = 0
    send_retries: int = 0
    events_retried: int = 0
    checkpoint_writes: int = 0  # into the kernel (checkpoints.json written and renamed)
    checkpoint_syncs: int = 0  # fsync'd (checkpoint_fsync_interval)
    sink_state: str = "ok"  # ok | retrying | auth_failed
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # (origin, rule, action, dry_run) -> events it removed (dry run: would have removed)
    _by_rule: dict[tuple[str, str, str, bool], int] = field(default_factory=dict, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def add_rules(self, counts: dict[tuple[str, str, str, bool], int]) -> None:
        with self._lock:
            for key, n in counts.items():
                self._by_rule[key] = self._by_rule.get(key, 0) + n

    def removed_by_rule(self) -> list[dict[str, str | int | bool]]:
        """Per rule and action: events removed (or, for dry-run rules, that would have been)."""
        with self._lock:
            return [{"origin": o, "rule": r, "action": a, "dry_run": d, "events": n}
                    for (o, r, a, d), n in sorted(self._by_rule.items())]

    def count_statsig_rules(self, over: list[str], rejected: bool) -> None:
        """One event broke Statsig's rules: `over` lists its fields over a size limit."""
        with self._lock:
            for name in over:
                setattr(self, "over_limit_" + name, getattr(self, "over_limit_" + name) + 1)
            if rejected:
                self.events_statsig_rules += 1

    def snapshot(self) -> dict[str, int | str]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
