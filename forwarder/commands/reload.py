"""`reload --pid PID`: SIGHUP a running forwarder and wait for it to apply or refuse its configuration.

For systemd's ExecReload=, which otherwise returns as soon as `kill` does, before the reload
happened, and succeeds whatever the outcome. The forwarder answers each SIGHUP in
<state_dir>/reload-status.json (control.py); the state directory is found from the lock file
the process holds open (/proc/PID/fd), so the command needs no configuration of its own,
not even a readable one.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from ..control import RELOAD_FILE, ReloadOutcome, pid_alive
from ..state.lock import LOCK_FILE

EXIT_APPLIED, EXIT_REFUSED, EXIT_UNKNOWN = 0, 1, 2


@dataclass(frozen=True)
class Answer:
    code: int
    message: str
    outcome: ReloadOutcome | None = None


def state_dir_of(pid: int) -> Path | None:
    """The state directory whose lock `pid` holds open, or None (not a forwarder, or no /proc)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fds.iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            target = Path(os.readlink(entry))
        except OSError:
            continue
        if target.name == LOCK_FILE and target.is_absolute():
            return target.parent
    return None


def reload(pid: int, state_dir: Path | None, timeout: float, poll: float = 0.05) -> Answer:
    """Send SIGHUP to `pid` and wait up to `timeout` seconds for its outcome."""
    if pid <= 0 or not pid_alive(pid):
        return Answer(EXIT_UNKNOWN, f"no process {pid}")
    found = state_dir or state_dir_of(pid)
    if found is None:
        return Answer(EXIT_UNKNOWN, f"cannot find the state directory of process {pid} "
                      "(is it a running forwarder? give --state-dir)")
    sent = time.time()
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        return Answer(EXIT_UNKNOWN, f"cannot signal process {pid}: {e.strerror or e}")
    deadline = time.monotonic() + timeout
    while True:
        outcome = ReloadOutcome.read(found)
        if outcome is not None and outcome.pid == pid and outcome.requested >= sent:
            if outcome.outcome == "applied":
                changed = ", ".join(outcome.applied) or "nothing changed"
                message = f"configuration reloaded (applied: {changed})"
                if outcome.restart:
                    message += f"; needs a restart to take effect: {', '.join(outcome.restart)}"
                return Answer(EXIT_APPLIED, message, outcome)
            return Answer(EXIT_REFUSED, f"reload refused, still running on the previous configuration: "
                          f"{outcome.reason or 'no reason given'}", outcome)
        if not pid_alive(pid):
            return Answer(EXIT_UNKNOWN, f"process {pid} exited before answering the reload")
        if time.monotonic() >= deadline:
            return Answer(EXIT_UNKNOWN, f"no answer from process {pid} within {timeout:g} s "
                          f"(nothing new in {found / RELOAD_FILE})")
        time.sleep(poll)
