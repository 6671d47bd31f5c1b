"""Logs of the real CLI: JSON lines that parse, text on a terminal, never the secret key."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
from fake_statsig import FakeStatsig
from kit import SECRET, Cli, append, cli_env, event_line, fast_args, wait_until

from forwarder.logs import Scrubber, reason_code, redact

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


# -- reason codes: the bounded label of last_error_info ------------------------------------

def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_reason_code_is_the_first_clause_of_the_template_whatever_the_values() -> None:
    assert reason_code(_record("forwarder.delivery.senders", "delivery failed, will retry")) == "delivery_failed"
    template = "internal error in thread %s; stopping"
    assert reason_code(_record("forwarder.app", template, "x" * 500)) == \
        reason_code(_record("forwarder.app", template, "y")) == "internal_error_in_thread"
    assert reason_code(_record("forwarder.app", "DRY RUN (no key): events are printed")) == "dry_run"
    assert reason_code(_record("forwarder.source.tailer", "cannot open file")) == "cannot_open_file"
    assert reason_code(_record("uvicorn.error", "anything at all %s", "x")) == "library_uvicorn"
    assert reason_code(_record("forwarder", "")) == "unnamed"
    assert len(reason_code(_record("forwarder", "a" * 400))) <= 48


LEVELS = {"warning", "error", "exception", "critical"}
# Warnings whose first clause is computed, each from a fixed set of values: (file, code shape).
COMPUTED = {
    ("forwarder/app.py", "this command serves no {metrics endpoint | receiver}"),
    ("forwarder/startup.py", "Statsig check failed (CheckResult.describe)"),
    ("forwarder/state/writer.py", "cannot write checkpoint (the `what` its callers pass)"),
}


def test_every_warning_in_the_code_has_a_fixed_reason_code() -> None:
    """Bounded series: a warning's code comes from fixed text, so the label has as many values
    as there are warnings in the code (plus COMPUTED, whose few values are listed there)."""
    root = Path(__file__).resolve().parent.parent
    computed = set()
    count = 0
    for path in sorted((root / "forwarder").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr in LEVELS and node.args:
                msg = node.args[0]
            elif node.func.attr == "log" and len(node.args) >= 2 and isinstance(node.func.value, ast.Name) \
                    and node.func.value.id == "log":
                msg = node.args[1]
            else:
                continue
            if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "log"):
                continue
            count += 1
            if isinstance(msg, ast.Constant) and isinstance(msg.value, str):
                continue
            if isinstance(msg, ast.JoinedStr) and isinstance(msg.values[0], ast.Constant) \
                    and any(c in str(msg.values[0].value) for c in ",;:(%"):
                continue  # the first clause ends before any value
            computed.add(str(path.relative_to(root)))
    assert count > 30
    assert computed == {f for f, _ in COMPUTED}
