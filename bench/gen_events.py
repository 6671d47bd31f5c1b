#!/usr/bin/env python3
"""Write N NDJSON events as a backend logs them (about 190 bytes a line), deterministic.

The peer figures in docs/log-shippers.md were measured on lines of this size and nesting, so a
benchmark on this file can be set beside them.   usage: gen_events.py N OUT
"""

from __future__ import annotations

import json
import random
import sys

NAMES = ["page_view", "checkout", "add_to_cart", "login", "search", "click"]
PLANS = ["free", "pro", "team"]


def main() -> None:
    n, out = int(sys.argv[1]), sys.argv[2]
    rnd = random.Random(42)  # the same seed and draw order give the same file every time
    with open(out, "w") as f:
        for i in range(n):
            name = rnd.choice(NAMES)
            user = {"userID": f"u{rnd.randint(1, 50000)}", "custom": {"plan": rnd.choice(PLANS)}}
            value = rnd.randint(0, 1000)
            metadata = {"seq": i, "path": f"/p/{rnd.randint(1, 999)}", "ua": "Mozilla/5.0 (X11; Linux x86_64)"}
            event = {"event_name": name, "user": user, "value": value, "time": 1760000000000 + i,
                     "metadata": metadata}
            f.write(json.dumps(event, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
