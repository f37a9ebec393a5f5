"""Events: per-frame results turned into durable records with evidence.

    rules.py      config rules -> event starts and ends (debounce, zones, end after absence)
    store.py      SQLite (WAL) records, media files, the outbox and samples
    salvage.py    reading a damaged store in rowid ranges; the checks a row's values pass
    retention.py  keeps the store under its disk budget
    media.py      snapshot and thumbnail JPEGs; clip.py: short MP4s from a ring buffer
    recorder.py   ties them together on a thread of its own (sinks/events.py feeds it)

This package's __init__ imports nothing, so settings can import events.config freely.
"""
