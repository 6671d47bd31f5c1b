"""Per-command help: each command lists only the options it uses (settings.also)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from kit import cli_env, event_line

BATCHING_AND_RETRY = {"--batch-size", "--batch-bytes", "--flush-interval", "--max-in-flight", "--retry-initial",
                      "--retry-max", "--request-timeout", "--checkpoint-fsync-interval", "--glob-interval"}


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forwarder", *args], capture_output=True, text=True, timeout=30,
                          env=cli_env(**(env or {})), cwd=cwd)


def flags(*command: str) -> set[str]:
    done = cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    return set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", done.stdout)) | set(
        re.findall(r"(?m)^\s+--[a-z0-9-]+, (--[a-z][a-z0-9-]*)", done.stdout))


def test_each_command_lists_only_its_options() -> None:
    run = flags("run")
    assert run >= BATCHING_AND_RETRY and {"--listen", "--metrics-listen", "--max-line-bytes"} <= run

    receive = flags("receive")
    assert {"--listen", "--receiver-listen", "--max-body-bytes", "--durability", "--receiver-read-timeout",
            "--max-line-bytes", "--unknown-fields", "--log-level", "--config"} <= receive
    assert not receive & (BATCHING_AND_RETRY | {"--statsig-api", "--state-dir", "--metrics-listen", "--once"})

    validate = flags("validate")
    assert validate == {"--json", "--config", "--max-line-bytes", "--unknown-fields", "--oversize-fields",
                        "--help"}

    check = flags("check")
    assert check == {"--config", "--statsig-api", "--specs-url", "--check-timeout", "--log-level", "--log-format",
                     "--help"}

    assert flags("checkpoints", "list") == {"--config", "--state-dir", "--namespace", "--json", "--fingerprint-bytes",
                                            "--help"}
    assert flags("replay") >= BATCHING_AND_RETRY  # replay is run over whole files: it takes them all


def test_options_left_out_of_a_command_are_refused_as_flags_but_env_still_applies(tmp_path: Path) -> None:
    (tmp_path / "e.ndjson").write_bytes(event_line(1))
    refused = cli("validate", "e.ndjson", "--batch-size", "5", cwd=tmp_path)
    assert refused.returncode == 2 and "No such option '--batch-size'" in refused.stderr
    ok = cli("validate", "e.ndjson", env={"FORWARDER_BATCH_SIZE": "5"}, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    bad = cli("validate", "e.ndjson", env={"FORWARDER_BATCH_SIZE": "0"}, cwd=tmp_path)
    assert bad.returncode == 2 and "batch_size" in bad.stderr  # still one validated configuration
