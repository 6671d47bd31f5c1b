"""Cost of event rules in the reader: CPU per event of decode + rules + batching, in this process.

Feeds the same 1 MB chunks of gen_events.py's file through the real Reader with no rules and
with `bench/rules-10.toml` (or --rules FILE), alternating, and prints ns/event for each run;
the minima's difference is the rules' cost. Then the rules alone, evaluated the way the reader
does over the decoded events (minimum of 15 passes: steadier on a shared machine), beside
the one-call chunk decode of the same lines. Complements `bench/throughput.py --
--config bench/rules-10.toml`, whose whole-process figures move more than 5% on a shared machine.

    python bench/rules.py [--events 200000] [--rounds 5] [--rules bench/rules-10.toml]
"""

from __future__ import annotations

import argparse
import gc
import queue
import statistics
import tempfile
import threading
import time
import tomllib
from pathlib import Path

from _common import ROOT, events_file, hardware

from forwarder.decode.codec import ChunkDecoder
from forwarder.decode.reader import Reader
from forwarder.delivery.batcher import Batcher
from forwarder.model import Batch, Chunk
from forwarder.rules import ActiveRules, Rule
from forwarder.rules.match import RuleSet
from forwarder.state.deadletter import DeadLetter
from forwarder.stats import Stats


def chunks(path: Path, n: int) -> list[Chunk]:
    data = b"".join(path.open("rb").readlines()[:n])
    out, start = [], 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + (1 << 20)) + 1 or len(data)
        out.append(Chunk("crc:0123456789abcdef", str(path), start, data[start:end]))
        start = end
    return out


class Discard(queue.Queue[Batch | None]):
    """The senders' queue, emptied at once: only the reader's work is measured."""

    def put(self, item: Batch | None, block: bool = True, timeout: float | None = None) -> None:
        pass


def per_event_ns(parts: list[Chunk], n: int, rules: list[Rule]) -> float:
    batches = Discard()
    with tempfile.TemporaryDirectory() as tmp:
        stats = Stats()
        reader = Reader(None, Batcher(500, 1_000_000, 1.0), batches, DeadLetter(Path(tmp) / "dl"),  # type: ignore[arg-type]
                        stats, threading.Event(), 0.25, 1 << 20, "metadata",
                        event_id_field="forwarder_event_id", rules=ActiveRules(rules, stats))
        started = time.process_time()
        for chunk in parts:
            reader._chunk(chunk)
        elapsed = time.process_time() - started
    assert stats.events_read == n and stats.events_removed == 0, stats.snapshot()
    return elapsed / n * 1e9


def rules_alone_ns(parts: list[Chunk], rules: list[Rule]) -> tuple[float, float]:
    """(ns per event of the rules alone, ns per event of the one-call chunk decode), minima."""
    decode = []
    for _ in range(5):
        decoder = ChunkDecoder()
        started = time.process_time()
        decoded = [decoder.decode(c.data) for c in parts]
        decode.append(time.process_time() - started)
    events = [e for m in decoded if m is not None for e in m.events]
    ruleset = RuleSet([("local", r) for r in rules])
    plans = ruleset.plans
    extra = []
    for _ in range(15):
        started = time.process_time()
        for i, event in enumerate(events):
            try:
                plan = plans[event.eventName]
            except KeyError:
                plan = ruleset.plan(event.eventName)
            if plan is not None:
                plan(event, "crc:0123456789abcdef:", i, b"")
        with_rules = time.process_time() - started
        started = time.process_time()
        for _i, _event in enumerate(events):  # the same loop without the rules
            pass
        extra.append(with_rules - (time.process_time() - started))
    return min(extra) / len(events) * 1e9, min(decode) / len(events) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rules", type=Path, default=ROOT / "bench" / "rules-10.toml")
    args = parser.parse_args()
    rules = [Rule(**r) for r in tomllib.loads(args.rules.read_text())["rules"]]
    parts = chunks(events_file(1_000_000), args.events)
    gc.freeze()  # as app.run does
    gc.set_threshold(50_000, 20, 100)
    print(f"hardware: {hardware()}; {args.events:,} events; {len(rules)} rules from {args.rules.name}")
    without, with_rules = [], []
    for i in range(args.rounds):
        without.append(per_event_ns(parts, args.events, []))
        with_rules.append(per_event_ns(parts, args.events, rules))
        print(f"round {i + 1}: no rules {without[-1]:6.0f} ns/event   "
              f"{len(rules)} rules {with_rules[-1]:6.0f} ns/event")
    # the minimum is the run least disturbed by other work on the machine
    for what, f in (("min", min), ("median", statistics.median)):
        a, b = f(without), f(with_rules)
        print(f"{what}: no rules {a:.0f} ns/event, {len(rules)} rules {b:.0f} ns/event: {b - a:+.0f} ns "
              f"({100 * (b - a) / a:+.1f}% of the reader's CPU per event)")
    alone, decode = rules_alone_ns(parts, rules)
    print(f"rules alone: {alone:.0f} ns/event; decoding the same chunks: {decode:.0f} ns/event "
          f"(rules = {100 * alone / decode:.0f}% of that)")


if __name__ == "__main__":
    main()
