"""statsig-forwarder: tail NDJSON event logs and deliver every event to Statsig."""

__version__ = "0.1.0"

__all__ = ["__version__"]
