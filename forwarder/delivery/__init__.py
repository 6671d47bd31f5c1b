"""Batch, send, acknowledge: Statsig events -> accepted requests -> positions in file order.

    batcher.py    closes a batch on count, bytes or age
    senders.py    worker threads: POST with retry and backoff, split refused batches
    acker.py      acknowledgements in file order, the in-flight window
    sink.py       the Statsig wire format over HTTP (and the stdout sink of dry runs)
    ratelimit.py  token bucket for `replay --rate`
"""
