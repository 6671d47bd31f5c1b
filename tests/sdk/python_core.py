"""Drive the real statsig-python-core: its event URL at the sidecar, its specs at the fake Statsig.

    python python_core.py '{"key": ..., "log_event_url": ..., "specs_url": ..., "users": [...],
                            "events": [{"name", "value", "metadata"}], "gates": [...], "configs": [...],
                            "stream": {"count": N, "per_second": R}, "flush_interval_ms": ...,
                            "options": {StatsigOptions attribute: value}, "linger_s": S}'

Checks every gate and config for every user (the SDK logs one exposure each), logs every
event for every user, then (stream) `count` more events with metadata {"seq": i} at
`per_second` (0: no pause), waits `linger_s`, and shuts down (the SDK's own shutdown flush).
Prints {"logged": n} as JSON.
"""

from __future__ import annotations

import json
import sys
import time

from statsig_python_core import Statsig, StatsigOptions, StatsigUser


def main() -> None:
    spec = json.loads(sys.argv[1])
    options = StatsigOptions()
    options.log_event_url = spec["log_event_url"]
    options.specs_url = spec["specs_url"]
    options.output_log_level = "none"
    options.disable_country_lookup = True
    if "flush_interval_ms" in spec:
        options.event_logging_flush_interval_ms = spec["flush_interval_ms"]
    for name, value in spec.get("options", {}).items():  # any other StatsigOptions attribute
        setattr(options, name, value)
    statsig = Statsig(spec["key"], options)
    statsig.initialize().wait()
    logged = 0
    for uid in spec.get("users", []):
        user = StatsigUser(uid, email=f"{uid}@example.com", custom={"plan": "pro"})
        for gate in spec.get("gates", []):
            statsig.check_gate(user, gate)
            logged += 1
        for config in spec.get("configs", []):
            statsig.get_dynamic_config(user, config)
            logged += 1
        for event in spec.get("events", []):
            statsig.log_event(user, event["name"], event.get("value"), event.get("metadata"))
            logged += 1
    stream = spec.get("stream")
    if stream:
        user = StatsigUser("streamer")
        pause = 1.0 / stream["per_second"] if stream["per_second"] else 0.0  # 0: as fast as it goes
        for i in range(stream["count"]):
            statsig.log_event(user, "stream_event", None, {"seq": str(i)})
            logged += 1
            if pause:
                time.sleep(pause)
    time.sleep(spec.get("linger_s", 0))  # time to send its backlog before shutdown's 3 s limit
    statsig.shutdown().wait()
    print(json.dumps({"logged": logged}), flush=True)


if __name__ == "__main__":
    main()
