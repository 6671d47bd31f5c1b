"""Start-up check with statsig-python-core: do the key and the configured endpoints answer?

`run` starts it in the background (`check_in_background`); the `check` command runs it in
the foreground. It lives outside commands/ so that app.py imports nothing from commands/.

Uses the SDK's `initialize_with_details()` (success, source, failure reason) pointed at
the configured API. It never carries forwarded events, and its own event logging is off.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    source: str
    reason: str | None
    duration_ms: int

    def describe(self) -> str:
        if self.ok:
            return f"Statsig answered: key accepted (source={self.source}, {self.duration_ms} ms)"
        return f"Statsig check failed: {self.reason or 'unknown reason'} (source={self.source})"


def check_statsig(settings: Settings) -> CheckResult:
    """Initialize the SDK against the configured endpoints and report what happened."""
    from statsig_python_core import Statsig, StatsigOptions

    key = settings.secret_key
    if key is None:
        return CheckResult(False, "none", "no secret key configured (STATSIG_SERVER_SECRET_KEY)", 0)
    options = StatsigOptions()
    options.log_event_url = f"{settings.statsig_api}/log_event"
    if settings.check_specs_url is not None:
        options.specs_url = settings.check_specs_url
    options.init_timeout_ms = int(settings.check_timeout * 1000)
    options.disable_all_logging = True
    options.disable_country_lookup = True
    options.output_log_level = "none"
    started = time.monotonic()
    statsig = Statsig(key, options)
    try:
        details = statsig.initialize_with_details().result(timeout=settings.check_timeout + 5)
        failure = details.failure_details
        ok = bool(details.init_success and details.is_config_spec_ready)
        reason = None if ok else (failure.reason if failure else "config specs not ready")
        if failure is not None and failure.error and failure.error not in (reason or ""):
            reason = f"{reason}: {failure.error}"
        result = CheckResult(ok, str(details.source), reason, int((time.monotonic() - started) * 1000))
    except Exception as e:  # the SDK is advisory here; never let it stop delivery
        result = CheckResult(False, "error", f"{type(e).__name__}: {e}", int((time.monotonic() - started) * 1000))
    finally:
        _shutdown(statsig, 3.0)
    return result


def _shutdown(statsig: Any, timeout: float) -> None:
    """Stop the SDK and wait for it: its threads still running at interpreter exit print
    `StatsigSafeGil: GIL Unavailable`. `shutdown()` returns a threading.Event in
    statsig-python-core 0.24 (a future in some other versions)."""
    with contextlib.suppress(Exception):
        done = statsig.shutdown()
        if hasattr(done, "result"):
            done.result(timeout=timeout)
        elif hasattr(done, "wait"):
            done.wait(timeout)


def check_in_background(settings: Settings) -> threading.Thread:
    """Run the check without blocking start-up; the outcome is logged."""

    def run() -> None:
        result = check_statsig(settings)
        if result.ok:
            log.info(result.describe())
        else:
            log.error(result.describe() + "; delivery continues and retries on its own")

    thread = threading.Thread(target=run, name="statsig-check", daemon=True)
    thread.start()
    return thread
