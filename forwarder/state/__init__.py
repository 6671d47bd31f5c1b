"""What survives a restart: checkpoints, the dead-letter file, the state directory lock.

    checkpoints.py  per-file delivered positions, atomic durable writes
    writer.py       the checkpoint writer thread (dead-letter synced before the checkpoint)
    deadletter.py   rejected lines with reason and position
    lock.py         one process per state directory
"""
