"""Schemathesis against the running receiver's /openapi.json: no input may cause a 5xx.

Positive and negative examples (about 30 each) for every operation, sent over real HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from kit import Cli
from schemathesis.core.result import Err, Ok


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode() + b"\n"  # json: generated integers may exceed 64 bits


def test_no_server_errors(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    cli = spawn("receive", "--listen", "127.0.0.1:0", "--max-body-bytes", "65536",
                str(tmp_path / "events.ndjson"), key=None)
    url = "http://" + cli.wait_log("receiver listening")["address"]
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    results = list(schema.get_all_operations())
    assert not [r.err() for r in results if isinstance(r, Err)]
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert {op.path for op in operations} >= {"/v1/analytics/events", "/v1/analytics/batch", "/v1/events"}
    calls: list[int] = []
    cases = [(op, mode) for op in operations for mode in schemathesis.GenerationMode
             if op.method.upper() == "POST" or mode is schemathesis.GenerationMode.POSITIVE]
    for op, mode in cases:  # (a GET without parameters has no negative example)

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_5xx(case: Any) -> None:
            response = case.call(timeout=10)
            calls.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text)

        no_5xx()
    assert len(calls) > 3 * len(operations)
    assert 200 in calls and 422 in calls  # valid events accepted, invalid ones refused
    assert cli.proc.poll() is None, "the receiver died"
