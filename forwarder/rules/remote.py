"""Fleet-wide rules: a Statsig dynamic config, evaluated by statsig-python-core for this forwarder.

The SDK downloads config specs every `remote_rules_sync_interval` seconds; this thread
evaluates the config for a user describing the forwarder (userID = pod or host name, custom
fields from `remote_rules_user_custom` and the environment), so Statsig's own targeting can
send a rule to one service or to a share of pods first. A changed value is validated whole
(a malformed one is refused, logged and counted; the rules in force stay), applied, and
saved in the state directory, from where the next start takes it while Statsig is unreachable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .. import __version__
from ..settings import Settings
from ..state.checkpoints import _atomic_write
from ..stats import Stats
from .model import Rule, RuleError, parse_remote

log = logging.getLogger(__name__)

STATE_FILE = "remote-rules.json"
FORMAT_VERSION = 1
# Kubernetes downward-API names (and the host) that describe this forwarder by default.
ENV_FIELDS = {"namespace": "POD_NAMESPACE", "node": "NODE_NAME", "pod": "POD_NAME"}


def forwarder_user(settings: Settings) -> tuple[str, dict[str, str]]:
    """(userID, custom fields) of the Statsig user this forwarder evaluates the config as."""
    host = socket.gethostname()
    user_id = settings.remote_rules_user_id or os.environ.get("POD_NAME") or host
    custom = {"host": host, "version": __version__}
    custom.update({k: os.environ[v] for k, v in ENV_FIELDS.items() if os.environ.get(v)})
    custom.update(settings.remote_rules_user_custom)
    return user_id, custom


class SavedRules:
    """The last good remote value, `{"version": 1, "config": name, "value": {...}}`, written atomically."""

    def __init__(self, state_dir: Path, config: str) -> None:
        self.path = state_dir / STATE_FILE
        self.config = config

    def load(self) -> dict[str, Any] | None:
        try:
            doc = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as e:
            log.warning("saved remote rules unreadable; ignored", extra={"path": str(self.path), "error": str(e)})
            return None
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION or doc.get("config") != self.config:
            log.warning("saved remote rules are for another config or format; ignored",
                        extra={"path": str(self.path), "config": self.config})
            return None
        value = doc.get("value")
        return value if isinstance(value, dict) else None

    def save(self, value: dict[str, Any]) -> None:
        data = orjson.dumps({"version": FORMAT_VERSION, "config": self.config, "value": value,
                             "saved_at_ms": int(time.time() * 1000)})
        try:
            _atomic_write(self.path, self.path.with_name(STATE_FILE + ".tmp"), data)
        except OSError as e:  # the rules still apply; only the next start without Statsig misses them
            log.error("cannot save remote rules", extra={"path": str(self.path), "error": str(e)})


class RemoteRules:
    """A stoppable thread: SDK initialize, then evaluate the config every poll until stopped."""

    def __init__(self, settings: Settings, apply: Callable[[list[Rule], str], object], stats: Stats) -> None:
        assert settings.remote_rules is not None
        self.settings = settings
        self.config = settings.remote_rules
        self.apply = apply
        self.stats = stats
        self.saved = SavedRules(settings.state_dir, self.config)
        self.stopped = threading.Event()
        self.first = threading.Event()  # set after the first evaluation (or its failure)
        self._last: bytes | None = None  # canonical JSON of the last value seen (good or refused)
        self._thread: threading.Thread | None = None

    def start(self) -> RemoteRules:
        saved = self.saved.load()
        if saved is not None:
            try:
                self.apply(parse_remote(saved), f"saved ({self.saved.path})")
                self._last = _canonical(saved)
            except RuleError as e:  # written by an older, laxer version: do not half-apply it
                log.error("saved remote rules refused", extra={"problems": e.problems})
        if self.settings.secret_key is None:
            log.warning("remote_rules needs STATSIG_SERVER_SECRET_KEY; only local and saved rules apply",
                        extra={"config": self.config})
            return self
        self._thread = threading.Thread(target=self._run, name="remote-rules", daemon=True)
        self._thread.start()
        # Reading starts once Statsig answered or could not (SDK init_timeout): a first start, or
        # `run --once`, then already honours the fleet's rules.
        if not self.first.wait(self.settings.check_timeout + 2):
            log.warning("remote event rules not evaluated yet; starting with the rules in force")
        return self

    def stop(self) -> None:
        self.stopped.set()
        if self._thread is not None:
            # statsig-python-core aborts the process if the interpreter exits under it.
            self._thread.join(10)

    def _run(self) -> None:
        from statsig_python_core import DynamicConfigEvaluationOptions, Statsig, StatsigOptions, StatsigUser

        s = self.settings
        key = s.secret_key
        assert key is not None
        options = StatsigOptions()
        if s.check_specs_url is not None:
            options.specs_url = s.check_specs_url
        options.specs_sync_interval_ms = int(s.remote_rules_sync_interval * 1000)
        options.init_timeout_ms = int(s.check_timeout * 1000)
        options.disable_all_logging = True  # no exposures: events go only through the forwarder's own path
        options.disable_country_lookup = True
        options.output_log_level = "none"
        user_id, custom = forwarder_user(s)
        log.info("remote event rules: evaluating the dynamic config", extra={
            "config": self.config, "user_id": user_id, "custom": custom,
            "sync_interval_s": s.remote_rules_sync_interval})
        user = StatsigUser(user_id=user_id, custom=dict(custom))
        no_exposure = DynamicConfigEvaluationOptions(disable_exposure_logging=True)
        statsig = Statsig(key, options)
        try:
            statsig.initialize().wait(s.check_timeout + 5)
            poll = min(max(s.remote_rules_sync_interval / 4, 0.05), 1.0)
            while not self.stopped.is_set():
                try:
                    config = statsig.get_dynamic_config(user, self.config, no_exposure)
                    self.offer(config.details.reason, config.value)
                except Exception:  # never let the control plane stop delivery
                    log.exception("remote rules evaluation failed; keeping the rules in force")
                self.first.set()
                self.stopped.wait(poll)
        finally:
            self.first.set()
            with contextlib.suppress(Exception):
                statsig.shutdown().wait(3)

    def offer(self, reason: str, value: Any) -> None:
        """One evaluation: apply the value if it came from Statsig and changed."""
        if not reason.endswith((":Recognized", ":Unrecognized")):
            return  # nothing downloaded yet (NoValues, Uninitialized): keep what is in force
        if reason.endswith(":Unrecognized"):
            value = {}  # the config does not exist (any more): no remote rules
        canonical = _canonical(value)
        if canonical == self._last:
            return
        self._last = canonical
        try:
            rules = parse_remote(value)
        except RuleError as e:
            self.stats.add(remote_rules_refused=1)
            log.error("remote event rules refused: the value is malformed; keeping the rules in force",
                      extra={"config": self.config, "problems": e.problems})
            return
        self.stats.add(remote_rules_applied=1)
        if reason.endswith(":Unrecognized"):
            log.warning("dynamic config not found in Statsig: no remote rules", extra={"config": self.config})
        self.apply(rules, f"statsig ({reason})")
        self.saved.save(value)


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
