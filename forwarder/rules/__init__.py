"""Event controls: drop and sample rules, from the TOML config and from a Statsig dynamic config.

    model.py   the Rule type and its validation (one message per mistake)
    match.py   a rule list compiled into per-event-name plans; deterministic sampling
    active.py  the rules in force (local, then remote), swapped whole; counts per rule
    remote.py  statsig-python-core evaluating the dynamic config; the last good value on disk

The reader asks the active RuleSet about each valid event; an event a rule removes is
counted (per rule and action) and passed by the checkpoint like a replay filter's skip.
"""

from .active import ActiveRules
from .model import Rule, RuleError, parse_remote

__all__ = ["ActiveRules", "Rule", "RuleError", "parse_remote"]
