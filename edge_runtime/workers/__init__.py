"""Cameras in worker processes: planning (plan.py), the worker (process.py), results as
bytes (codec.py), frames in shared memory (shm.py) and supervision (supervisor.py).

Importing this package loads nothing heavy: the server imports the pool only when the
plan asks for workers.
"""
