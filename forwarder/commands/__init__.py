"""CLI commands other than `run`, built on the same stages.

    replay.py       deliver old files again (plain and .gz), resumable
    validate.py     judge files without sending
    checkpoints.py  list / show / set / reset saved positions
    check.py        start-up check with statsig-python-core
"""
