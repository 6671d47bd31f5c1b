"""CLI commands other than `run`, built on the same stages.

    replay.py       deliver old files again (plain and .gz), resumable
    validate.py     judge files without sending
    checkpoints.py  list / show / set / reset saved positions
    reload.py       SIGHUP a running forwarder and wait for its verdict (systemd ExecReload)
    status.py       one screen about a running or stopped forwarder (`--json`)
    top.py          the same, live, in the terminal
    progress.py     the progress display of `replay` and `run --once`
"""
