"""bus: a guaranteed-delivery HTTP event bus. Public API: emit, emit_many, Producer and the exception types."""
from __future__ import annotations

from typing import Any

from .errors import (
    BacklogFull,
    BodyTooLarge,
    BusError,
    ConfigError,
    IdempotencyConflict,
    InvalidBody,
    InvalidTag,
    NoRoute,
    RedisFull,
    RouteError,
    SpoolError,
    SpoolFull,
    SpoolLocked,
    Unavailable,
    Unconfirmed,
)

__all__ = [
    "emit", "emit_many", "BacklogFull", "BusError", "BodyTooLarge", "ConfigError", "InvalidBody",
    "InvalidTag", "NoRoute", "RedisFull", "RouteError", "Unavailable", "Unconfirmed", "IdempotencyConflict",
    "Producer", "SpoolError", "SpoolFull", "SpoolLocked",
]


def __getattr__(name: str) -> Any:
    # bus.Producer on first use: importing bus alone stays light (no Redis client, no routes).
    if name == "Producer":
        from .spool import Producer

        return Producer
    raise AttributeError(f"module 'bus' has no attribute {name!r}")


def emit(tag: str, record: dict[str, Any]) -> str:
    """Hand one event to the bus; returns its id once it is in Redis, raises a BusError otherwise."""
    return emit_many(tag, [record])[0]


def emit_many(tag: str, records: list[dict[str, Any]]) -> list[str]:
    """Hand several events with one tag to the bus, all or nothing; returns their ids."""
    from . import intake

    return intake.accept(intake.default(), tag, list(records))
