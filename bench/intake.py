#!/usr/bin/env python3
"""Where the intake's CPU goes, step by step, in this process: the relay's and the receiver's decode.

Builds the bodies bench/relay.py (2,000 SDK events, gzip'd) and bench/receiver.py (100 seed
events) send, and times each step of `forwarder.receiver.bodies` on them (CPU time, best of
--repeat passes), beside `orjson.loads` of the same bodies as the yardstick. The server's
whole CPU per event (HTTP, append, fsync included) is what bench/relay.py and
bench/receiver.py print as us/event.

    python bench/intake.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import gzip
import time
from collections.abc import Callable
from typing import Any

import orjson
from _common import hardware
from receiver import event
from relay import KEY, sdk_event

from forwarder.receiver import bodies
from forwarder.receiver.wire import decompress


def per_event(f: Callable[[], Any], events: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        f()
        best = min(best, time.process_time() - t0)
    return best / events * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    n = args.repeat
    print(f"intake steps: {hardware()}; CPU us per event, best of {n}")
    raw = orjson.dumps({"events": [sdk_event(i) for i in range(2000)],
                        "statsigMetadata": {"sdkType": "statsig-server-core-python"}})
    gz = gzip.compress(raw, 6)
    masks = [(KEY.encode(), b"secret-r...")]
    events = bodies._WIRE_SDK_BODY(raw).events
    now = 1795615408601
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("yardstick: orjson.loads of the body", lambda: orjson.loads(raw)),
        ("gunzip (isal)", lambda: decompress(gz, "gzip", 64 << 20)),
        ("decode into wire(SdkEvent), one call", lambda: bodies._WIRE_SDK_BODY(raw)),
        ("check with checking_twin(SdkEvent), one call", lambda: bodies._CHECK_SDK_BODY(raw)),
        ("per event: nulls, name, depth bound, time", lambda: bodies._prepare(events, now)),
        ("users to clean? (body scans)", lambda: bodies._users_to_clean(raw, 0)),
        ("encode_lines + mask", lambda: bodies.mask(bodies._ENCODE_LINES(events), masks)),
        ("all of sdk_events", lambda: bodies.sdk_events(raw, 10_000, 1 << 20, "metadata", "send", False, masks)),
    ]
    print("relay, 2,000-event body (bench/relay.py's events):")
    for name, f in steps:
        print(f"  {name:<44} {per_event(f, 2000, n):6.3f}")
    seed = orjson.dumps([event(i) for i in range(100)])
    steps = [
        ("yardstick: orjson.loads of the body", lambda: orjson.loads(seed)),
        ("frame: list[Raw], one call", lambda: bodies._frame_seed(seed, "array")),
        ("check with checking_twin(FileEvent), one call", lambda: bodies._check_seed(seed, "array", 100)),
        ("all of seed_events", lambda: bodies.seed_events(seed, "array", 1000, 1 << 20, "metadata", "send")),
    ]
    print("receiver, 100-event batch (bench/receiver.py's events):")
    for name, f in steps:
        print(f"  {name:<44} {per_event(f, 100, n * 10):6.3f}")


if __name__ == "__main__":
    main()
