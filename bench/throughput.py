"""Throughput: `run --once` over a pre-written N-line file to the local fake Statsig.

Measures the forwarder from start until it exits, i.e. after the last checkpoint was
written for everything the fake Statsig accepted; prints events/s, CPU s and peak RSS,
beside the rate at which this process merely reads and orjson-parses the same file, and
the fake Statsig's own ceiling (pre-encoded batches posted as fast as possible).

Also runs `replay` over the same file gzipped (issue: at least as fast as `run`).

With `--baseline DIR` (another checkout of the project, e.g. `git worktree add DIR main`) each
repetition runs that build and then this one, alternating in the same sitting, since the
machine's speed drifts between runs; the parse-only rate is measured again before each pair.

    python bench/throughput.py [--events 1000000] [--repeat 1] [--no-replay] [--stdin] [--sdk] [--baseline DIR]
                               [-- extra flags]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import urllib3
from _common import RemoteFake, events_file, forwarder_cmd, hardware, run_child

SECRET = "secret-bench-0000000000"


def read_and_parse(path: Path) -> tuple[float, float]:
    """(lines/s, CPU s) of reading the file and orjson-parsing each line, in this process."""
    started = time.perf_counter()
    cpu = time.process_time()
    n = 0
    loads = orjson.loads
    rest = b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                loads(line)
                n += 1
    return n / (time.perf_counter() - started), time.process_time() - cpu


def fake_ceiling(fake: RemoteFake, path: Path, seconds: float = 3.0, clients: int = 2) -> float:
    """Events/s the fake accepts from pre-encoded 500-event gzip batches on keep-alive connections."""
    import gzip

    lines = path.open("rb").read(500 * 400).split(b"\n")[:500]
    events = [orjson.loads(x) for x in lines]
    body = gzip.compress(orjson.dumps({"events": events, "statsigMetadata": {}}), 1)
    headers = {"content-type": "application/json", "content-encoding": "gzip", "statsig-api-key": SECRET}
    before = fake.event_count
    stop = time.perf_counter() + seconds

    def client() -> None:
        pool = urllib3.HTTPConnectionPool(fake.host, fake.port, maxsize=1)
        while time.perf_counter() < stop:
            pool.request("POST", "/v1/log_event", body=body, headers=headers)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (fake.event_count - before) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-replay", action="store_true", help="skip the gzip replay run")
    parser.add_argument("--stdin", action="store_true", help="also `run -` with the file on stdin")
    parser.add_argument("--sdk", action="store_true", help="the same events in Statsig's shape, as the relay "
                        "appends them (with secondaryExposures and statsigMetadata)")
    parser.add_argument("--baseline", type=Path, help="another checkout to alternate with, run first")
    parser.add_argument("extra", nargs="*", help="extra flags for `statsig-forwarder run`")
    args = parser.parse_args()

    path = events_file(args.events)
    if args.sdk:
        path = sdk_shaped(path)
    fake = RemoteFake()
    print(f"hardware: {hardware()}")
    print(f"input: {path} ({args.events:,} lines, {path.stat().st_size / args.events:.0f} bytes/line)")
    parse = read_and_parse(path)
    print(f"read + orjson.loads only (this process):   {parse[0]:>12,.0f} lines/s  CPU {parse[1]:.2f} s")
    ceiling = fake_ceiling(fake, path)
    print(f"fake Statsig ceiling (pre-encoded batches): {ceiling:>12,.0f} events/s")

    builds = [("new", Path(__file__).resolve().parent.parent)]
    if args.baseline is not None:
        builds.insert(0, ("old", args.baseline.resolve()))
    gz = None if args.no_replay else gzipped(path)
    for i in range(args.repeat):
        if i:
            parse = read_and_parse(path)
            print(f"read + orjson.loads only (this process):   {parse[0]:>12,.0f} lines/s  CPU {parse[1]:.2f} s")
        for name, root in builds:
            env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_")}
            env.update(STATSIG_SERVER_SECRET_KEY=SECRET, FORWARDER_LOG_FORMAT="json", PYTHONPATH=str(root))
            label = f"{name} " if args.baseline is not None else ""
            run_once(fake, f"{label}run {i + 1}", ["run", "--once", str(path)], args, env, parse, root)
            if args.stdin:
                run_once(fake, f"{label}run - {i + 1}", ["run", "-"], args, env, parse, root, stdin=path)
            if gz is not None:
                run_once(fake, f"{label}replay .gz {i + 1}", ["replay", str(gz)], args, env, parse, root)
    fake.stop()
    sys.exit(0)


def run_once(fake: RemoteFake, label: str, command: list[str], args: argparse.Namespace,
             env: dict[str, str], parse: tuple[float, float], root: Path, stdin: Path | None = None) -> None:
    """One forwarder process over the whole file; prints its rate and CPU (also as ratios to the
    read + parse of the same file in this sitting), CPU per million events and peak RSS."""
    parse_rate, parse_cpu = parse
    state = Path(tempfile.mkdtemp(prefix="fwd-bench-"))
    before = fake.event_count
    usage = run_child([*forwarder_cmd(), *command, "--state-dir", str(state), "--statsig-api", fake.url,
                       *args.extra], env=env, cwd=root, stdin=stdin)  # `-m` imports from the working dir first
    delivered = fake.event_count - before
    shutil.rmtree(state, ignore_errors=True)
    ok = "ok" if usage.returncode == 0 and delivered == args.events else f"FAILED rc={usage.returncode}"
    rate = args.events / usage.wall_s
    print(f"{label}: {rate:>9,.0f} events/s  wall {usage.wall_s:6.2f} s  CPU {usage.cpu_s:6.2f} s "
          f"({usage.cpu_s * 1e6 / args.events:5.2f} per million)  peak RSS {usage.max_rss_mb:6.1f} MB  "
          f"delivered {delivered:,}  rate/parse rate {rate / parse_rate:4.2f}  CPU/parse CPU "
          f"{usage.cpu_s / parse_cpu:4.2f}  [{ok}]", flush=True)


def sdk_shaped(path: Path) -> Path:
    """The file's events as a Statsig SDK logs them (what the relay appends), cached beside it."""
    out = path.with_name(path.stem + "-sdk.ndjson")
    if not out.exists():
        with open(path, "rb") as src, open(str(out) + ".part", "wb") as dst:
            for line in src:
                e = orjson.loads(line)
                dst.write(orjson.dumps({
                    "eventName": e["event_name"], "user": {**e.get("user", {}), "statsigEnvironment": {"tier": "prod"}},
                    "value": e.get("value"), "metadata": e.get("metadata"), "time": e["time"],
                    "secondaryExposures": [{"gate": "g", "gateValue": "true", "ruleID": "r"}],
                    "statsigMetadata": None}) + b"\n")
        os.replace(str(out) + ".part", out)
    return out


def gzipped(path: Path) -> Path:
    import gzip

    gz = path.with_suffix(path.suffix + ".gz")
    if not gz.exists():
        with open(path, "rb") as src, gzip.open(str(gz) + ".part", "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(str(gz) + ".part", gz)
    return gz


if __name__ == "__main__":
    main()
