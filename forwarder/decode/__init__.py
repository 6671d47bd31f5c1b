"""Decode and validate: bytes -> Statsig events, or rejections for the dead-letter file.

    event.py   the definition of a valid event: msgspec Structs (FileEvent, SdkEvent), the
               per-event step they cannot say (user_id, times, depth limit, Statsig's rules)
    codec.py   one line, a chunk of lines in one call (per-line fallback), a request body
    reader.py  the reader thread: source -> decode -> batcher -> bounded queue for the senders

Nothing here imports pydantic, fastapi, uvicorn, watchdog or statsig_python_core (codec and
event are used by the client library to validate exactly as the forwarder does); reader.py
imports the rules and the source.
"""
