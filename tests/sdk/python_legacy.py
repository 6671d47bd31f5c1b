"""Drive the legacy `statsig` Python SDK (PyPI `statsig`): events to the sidecar, specs from the fake.

    python python_legacy.py '{"key", "api_for_log_event", "api_for_specs", "users", "events", "gates", "configs"}'

`api_for_log_event` is the sidecar's base (`http://127.0.0.1:8080/v1/`): only events go there.
(`api` would also send spec and id-list requests to the sidecar.) Prints {"logged": n}.
"""

from __future__ import annotations

import json
import sys

from statsig import StatsigEvent, StatsigOptions, StatsigServer, StatsigUser


def main() -> None:
    spec = json.loads(sys.argv[1])
    options = StatsigOptions(api_for_log_event=spec["api_for_log_event"],
                             api_for_download_config_specs=spec["api_for_specs"],
                             api_for_get_id_lists=spec["api_for_specs"], disable_diagnostics=True,
                             init_timeout=5)
    server = StatsigServer()
    server.initialize(spec["key"], options)
    logged = 0
    for uid in spec.get("users", []):
        user = StatsigUser(uid, email=f"{uid}@example.com", custom={"plan": "pro"})
        for gate in spec.get("gates", []):
            server.check_gate(user, gate)
            logged += 1
        for config in spec.get("configs", []):
            server.get_config(user, config)
            logged += 1
        for event in spec.get("events", []):
            server.log_event(StatsigEvent(user, event["name"], event.get("value"), event.get("metadata")))
            logged += 1
    server.shutdown()
    print(json.dumps({"logged": logged}), flush=True)


if __name__ == "__main__":
    main()
