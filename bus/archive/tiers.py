"""Reads that see both tiers of the journal: Redis (what waits, and the hot window) and the archive.

Rules every read follows:
- Redis wins: an event with a record in Redis is shown from there, and an archived row of the
  same id is hidden (a replayed event is back in Redis while its old row waits to be rewritten).
- Pages are newest first by (received, id) in both tiers, so one cursor, '<received>:<id>' as
  the Redis listing hands out, continues both. A page takes what each tier has above the lower
  of the two places they stopped reading, so nothing of either is skipped.
- Only delivered events are archived: a listing of another status reads Redis alone.
- An archive that does not answer: a listing answers what Redis has and says which tier is
  missing (`unavailable`); one event not in Redis, a replay or a purge that needs the archive
  raises ArchiveUnavailable (503) rather than act on half of what was asked.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import orjson

from .. import journal
from ..errors import ArchiveUnavailable, EventNotFound
from ..filters import EventFilter
from . import Store
from .rows import ArchivedEvent, scan_for

Position = tuple[float, str]


@dataclass(frozen=True)
class TieredPage:
    events: list[dict[str, Any]]
    cursor: str | None  # pass back to continue; None when there is nothing more
    unavailable: dict[str, str] = field(default_factory=dict)  # tier -> why it did not answer


def find(client: Any, store: Store | None, f: EventFilter, limit: int = 50, cursor: str | None = None,
         retention: int = journal.DEFAULT_RETENTION, max_scan: int = 20_000) -> TieredPage:
    """Events matching `f` from both tiers, newest first, `limit` at most (see the module's rules)."""
    hot = journal.find(client, f, limit=limit, cursor=cursor, retention=retention, max_scan=max_scan)
    for event in hot.events:
        event["tier"] = "redis"
    if store is None or f.status not in (None, journal.DELIVERED):
        return TieredPage(hot.events, hot.cursor)
    score, after_id = journal.cursor_bounds(f, cursor)
    after = (float(score), after_id) if after_id is not None else None
    try:
        archived, archive_stop = _archive_page(store, f, limit, after, max_scan)
    except ArchiveUnavailable as exc:
        return TieredPage(hot.events, hot.cursor, {"archive": str(exc)})
    shadowed = journal.in_redis(client, [e["id"] for e in archived])
    archived = [e for e in archived if e["id"] not in shadowed]
    hot_stop = _position(hot.cursor) if hot.cursor else None
    # Below the higher of the two stops, a tier may hold events it has not read yet.
    stops = [s for s in (hot_stop, archive_stop) if s is not None]
    floor = max(stops) if stops else None
    merged = sorted(hot.events + archived, key=_key, reverse=True)
    if floor is not None:
        merged = [e for e in merged if _key(e) >= floor]
    if len(merged) >= limit:
        merged = merged[:limit]
        return TieredPage(merged, _cursor(_key(merged[-1])))
    return TieredPage(merged, _cursor(floor) if floor is not None else None)


def _archive_page(store: Store, f: EventFilter, limit: int, after: Position | None, max_scan: int
                  ) -> tuple[list[dict[str, Any]], Position | None]:
    """Up to `limit` archived summaries matching `f` after `after`, and where the read stopped
    (None: nothing more below). The tag pattern is matched here: SQL only narrows it to its literal start."""
    found: list[dict[str, Any]] = []
    scanned, chunk = 0, max(limit * 2, 100)
    while scanned < max_scan:
        rows = store.scan(scan_for(f, chunk, after))
        scanned += len(rows)
        for row in rows:
            if f.matches_tag(row["tag"]):
                found.append(row)
                if len(found) == limit:
                    return found, _key(row)
        if len(rows) < chunk:
            return found, None
        after = _key(rows[-1])
        chunk = min(chunk * 2, 2000)
    return found, after


def _key(event: dict[str, Any]) -> Position:
    return (event["received"], event["id"])


def _position(cursor: str) -> Position:
    score, _, event_id = cursor.partition(":")
    return float(score), event_id


def _cursor(position: Position) -> str:
    return f"{position[0]!r}:{position[1]}"


def show(client: Any, store: Store | None, event_id: str) -> dict[str, Any]:
    """One event with its body, headers, attempts and copies, from whichever tier holds it."""
    try:
        record = journal.show(client, event_id)
        record["tier"] = "redis"
        return record
    except EventNotFound:
        if store is None:
            raise
        try:
            row = store.get(event_id)
        except ArchiveUnavailable as exc:
            raise ArchiveUnavailable(f"event {event_id!r} is not in Redis, and {exc}; retry later") from None
        if row is None:
            raise
    return {**journal.readable(_record(row), orjson.loads(row.attempt_log), orjson.loads(row.copies)),
            "tier": "archive"}


def _record(row: ArchivedEvent) -> dict[str, Any]:
    """An archived row as journal.store.decode gives a Redis record."""
    record = {k: getattr(row, k) for k in ("id", "tag", "route", "status", "received", "attempts", "last", "round",
                                           "body", "headers")}
    if row.replayed is not None:
        record["replayed"] = row.replayed
    if row.request is not None:
        record["request"] = row.request
    return record


def summaries(client: Any, store: Store | None, event_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Summaries of these events, in the order given, from whichever tier holds each; ids in
    neither are left out. Raises ArchiveUnavailable when some are not in Redis and the archive is down."""
    event_ids = list(event_ids)
    hot = {e["id"]: {**e, "tier": "redis"} for e in journal.summaries(client, event_ids)}
    missing = [i for i in event_ids if i not in hot]
    if missing and store is not None:
        for row in store.get_many(missing):
            hot[row.id] = {**{k: v for k, v in _record(row).items() if k in journal.SUMMARY_FIELDS},
                           "id": row.id, "tier": "archive"}
    return [hot[i] for i in event_ids if i in hot]


def last_copies(client: Any, store: Store | None, event_ids: list[str]) -> list[dict[str, Any] | None]:
    """Each event's latest copy sent elsewhere (replay --to), from Redis or its archived row (a copy
    of an archived event is recorded there); None for one with none yet, or an archive that is down."""
    found = journal.last_copies(client, event_ids)
    missing = [i for i, c in zip(event_ids, found) if c is None]
    if not missing or store is None:
        return found
    try:
        rows = {row.id: row for row in store.get_many(missing)}
    except ArchiveUnavailable:
        return found
    copies = {i: orjson.loads(row.copies) for i, row in rows.items()}
    return [c if c is not None else (copies.get(i) or [None])[-1] for i, c in zip(event_ids, found)]


def iter_matching(client: Any, store: Store | None, f: EventFilter, retention: int = journal.DEFAULT_RETENTION,
                  page: int = 500) -> Iterator[dict[str, Any]]:
    """Every matching summary from both tiers, page by page (replay, purge). An archive that does
    not answer raises ArchiveUnavailable: a replay or purge of half the matches would surprise."""
    cursor = None
    while True:
        result = find(client, store, f, limit=page, cursor=cursor, retention=retention)
        if result.unavailable:
            raise ArchiveUnavailable(f"{result.unavailable['archive']}: nothing was done; retry when it answers")
        yield from result.events
        if result.cursor is None or result.cursor == cursor:
            return
        cursor = result.cursor


def purge(client: Any, store: Store | None, events: list[dict[str, Any]]) -> int:
    """Delete events for good from both tiers (an event in Redis may have an older archived row)."""
    if store is not None:
        store.delete([e["id"] for e in events])
    return journal.purge(client, events)


def restorable(store: Store | None, events: list[dict[str, Any]]
               ) -> list[tuple[dict[str, Any], list[bytes], list[bytes]]]:
    """What journal.requeue puts back into Redis for the archived events among those replayed
    to their route: their whole records, attempts and copies."""
    archived = [e["id"] for e in events if e.get("tier") == "archive"]
    if not archived or store is None:
        return []
    out = []
    for row in store.get_many(archived):
        fields = {**_record(row), "received": repr(row.received), "task": ""}
        if row.replayed is not None:
            fields["replayed"] = repr(row.replayed)
        out.append((fields, [orjson.dumps(a) for a in orjson.loads(row.attempt_log)],
                    [orjson.dumps(c) for c in orjson.loads(row.copies)]))
    return out
