"""A producer's own spool: bus.Producer, whose emit() returns once the event is on local disk.

- frames.py    the record format: an event as a length+CRC frame (pure)
- layout.py    the directory's files: segment names, the lock, the cursor's slots, inspect()
- store.py     the open directory: group commit, fsync, reading and acknowledging for the sender
- sender.py    the background thread moving spooled events to Redis in batches
- producer.py  bus.Producer, tying them to intake.prepare (the same checks and ids as bus.emit)
"""
from __future__ import annotations

from .layout import Waiting, inspect
from .producer import Producer

__all__ = ["Producer", "Waiting", "inspect"]
