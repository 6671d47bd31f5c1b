"""The rules in force: local ones (TOML, SIGHUP) first, then remote ones (Statsig)."""

from __future__ import annotations

import logging
import threading

from ..stats import Stats
from .match import RuleSet
from .model import Rule

log = logging.getLogger(__name__)

LOCAL, REMOTE = "local", "remote"


class ActiveRules:
    """Holds the current RuleSet; `set_local`/`set_remote` replace it whole (one reference swap,
    taken by the reader at its next chunk), and log what changed.

    `current` is None while there is no rule at all: the reader then pays nothing per event.
    """

    def __init__(self, local: list[Rule], stats: Stats) -> None:
        self.stats = stats
        self._lock = threading.Lock()
        self._lists: dict[str, list[Rule]] = {LOCAL: [], REMOTE: []}
        self.current: RuleSet | None = None
        self.set_local(local)

    def rules(self, origin: str) -> list[Rule]:
        return list(self._lists[origin])

    def set_local(self, rules: list[Rule]) -> bool:
        return self._set(LOCAL, rules)

    def set_remote(self, rules: list[Rule], source: str) -> bool:
        return self._set(REMOTE, rules, source)

    def _set(self, origin: str, rules: list[Rule], source: str | None = None) -> bool:
        """Replace one list; True when it changed."""
        with self._lock:
            old = self._lists[origin]
            if old == rules:
                return False
            self._lists[origin] = list(rules)
            both = [(LOCAL, r) for r in self._lists[LOCAL]] + [(REMOTE, r) for r in self._lists[REMOTE]]
            self.current = RuleSet(both) if both else None
        log.info(f"{origin} event rules changed", extra={"origin": origin, **_diff(old, rules),
                                                         **({"from": source} if source else {})})
        return True


def _diff(old: list[Rule], new: list[Rule]) -> dict[str, list[str]]:
    before = {r.label: r for r in old}
    after = {r.label: r for r in new}
    return {
        "added": [r.describe() for k, r in after.items() if k not in before],
        "removed": [r.describe() for k, r in before.items() if k not in after],
        "changed": [f"{before[k].describe()} -> {r.describe()}" for k, r in after.items()
                    if k in before and before[k] != r],
        "rules": [r.describe() for r in new],
    }
