"""Decode and validate: lines of bytes -> Statsig events, or rejections for the dead-letter file.

    event.py   the pydantic Event model (the one place that decides and explains) and its fast path
    codec.py   orjson parsing + the model: one line -> one Statsig event or a LineError
    reader.py  the reader thread: source -> decode -> batcher -> bounded queue for the senders
"""
