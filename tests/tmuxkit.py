"""A real terminal for tests: a tmux server of our own, one window of a fixed size."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from conftest import cli_env


class Tmux:
    """Start a command in a window, read the screen (`capture-pane`), send keys."""

    def __init__(self, name: str) -> None:
        self.base = ["tmux", "-L", name]
        self.session = "t"

    def start(self, command: str, cwd: Path, width: int = 150, height: int = 40, session: str = "t") -> None:
        """Run `command` in a new session; `screen` and `keys` then address that session."""
        self.session = session
        subprocess.run([*self.base, "new-session", "-d", "-x", str(width), "-y", str(height), "-s", session,
                        "-c", str(cwd), command], check=True, env={**cli_env(), "TERM": "xterm-256color"})

    def screen(self) -> str:
        done = subprocess.run([*self.base, "capture-pane", "-p", "-t", self.session], capture_output=True,
                              text=True)
        return done.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", self.session, *keys], check=True)

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


@contextlib.contextmanager
def tmux_session(tmp_path: Path) -> Iterator[Tmux]:
    assert shutil.which("tmux"), "tmux is required (.ci/run installs it)"
    t = Tmux(f"forwarder-test-{os.getpid()}-{tmp_path.name}")
    try:
        yield t
    finally:
        t.kill()
