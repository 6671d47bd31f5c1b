"""Logs of the real CLI: JSON lines that parse, text on a terminal, never the secret key."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
from fake_statsig import FakeStatsig
from kit import SECRET, Cli, append, cli_env, event_line, fast_args, wait_until

from forwarder.logs import Scrubber, redact

SHOWN = redact(SECRET)


def assert_no_secret(text: str) -> None:
    assert SECRET not in text
    # No more of the key than its redacted prefix, in any form (SDK masks included).
    assert SECRET[: len(SHOWN) - 2] not in text, text


def json_lines(raw: bytes) -> list[dict[str, object]]:
    """Every line must be one JSON object."""
    records = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    assert all(isinstance(r, dict) and {"ts", "level", "msg"} <= set(r) for r in records)
    return records


def test_redact_shows_at_most_ten_characters() -> None:
    key = "secret-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    assert redact(key) == "secret-abc..."
    scrub = Scrubber([key])
    assert scrub(f"key={key}!") == "key=secret-abc...!"
    # statsig-python-core's own masking shows more than we allow
    assert scrub("specs/secret-abcde*****.json") == "specs/secret-abc....json"
    assert scrub("nothing secret-ab here") == "nothing secret-ab here"


def test_json_logs_parse_and_hide_the_key_through_401_and_failed_startup_check(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    fake.expected_key = "secret-the-right-one-0000000"  # our key gets 401 for every batch
    log = tmp_path / "events.ndjson"
    append(log, event_line(1) + b"{broken json\n" + event_line(2, event_name=SECRET) + b"\n")
    cli = spawn(
        "run", str(log), *fast_args(fake, tmp_path / "state"),
        # the SDK start-up check cannot reach its specs URL: its failure message names the key
        "--specs-url", "http://127.0.0.1:1/v1/download_config_specs", "--check-timeout", "0.5",
        env={"FORWARDER_LOG_FORMAT": "auto"},  # stderr is a pipe: auto means JSON
    )
    cli.wait_log("Statsig check failed")
    assert wait_until(lambda: any("401" in str(r.get("error", "")) for r in cli.logs()))
    fake.expected_key = None
    assert fake.wait_for(2)
    assert cli.stop() == 0
    stderr = bytes(cli.stderr)
    records = json_lines(stderr)
    assert_no_secret(stderr.decode())
    assert any(r.get("key") == SHOWN for r in records), "the redacted key is shown at start-up"
    check = next(r for r in records if "Statsig check failed" in str(r["msg"]))
    assert check["level"] == "error" and SHOWN in str(check["msg"])
    assert any(r["level"] == "error" and "401" in str(r.get("error")) for r in records)
    assert any(r["msg"] == "stopped" for r in records)


def test_check_command_output_hides_the_key(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "forwarder", "check", "--statsig-api", "http://127.0.0.1:1/v1",
         "--check-timeout", "0.5"],
        env=cli_env(STATSIG_SERVER_SECRET_KEY=SECRET), capture_output=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 1
    out = (proc.stdout + proc.stderr).decode()
    assert "Statsig check failed" in out
    assert_no_secret(out)


def test_text_logs_on_a_terminal_and_with_log_format_text(tmp_path: Path, fake: FakeStatsig) -> None:
    log = tmp_path / "events.ndjson"
    append(log, event_line(1))
    args = [sys.executable, "-m", "forwarder", "run", str(log), "--once", *fast_args(fake, tmp_path / "s")]
    env = cli_env(STATSIG_SERVER_SECRET_KEY=SECRET)

    # auto on a terminal: text
    primary, replica = os.openpty()
    try:
        proc = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=replica, timeout=60,
                              cwd=tmp_path)
        os.close(replica)
        out = b""
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO once the child side is closed
                break
            if not data:
                break
            out += data
    finally:
        os.close(primary)
    assert proc.returncode == 0
    text = out.decode()
    assert "forwarding to Statsig" in text and "INFO" in text
    assert not text.lstrip().startswith("{")
    assert_no_secret(text)

    # explicit --log-format text on a pipe
    proc = subprocess.run([*args, "--log-format", "text"], env=env, capture_output=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0
    lines = proc.stderr.decode().splitlines()
    assert lines and all(not line.startswith("{") for line in lines)
    assert any("stopped" in line for line in lines)
    assert_no_secret(proc.stderr.decode())
