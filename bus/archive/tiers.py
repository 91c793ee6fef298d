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
- Redis may be several shards (bus/shards.py): each is read like another tier with the same
  cursor. A shard that does not answer is named in `unavailable` ("shard NAME") while the others
  answer; when none answers, the read fails as with one Redis down. A replay or purge that needs
  a shard that is down raises Unavailable naming it.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import journal
from ..errors import ArchiveUnavailable, EventNotFound, Unavailable
from ..filters import EventFilter
from ..shards import Shards, as_shards, down
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
    """Events matching `f` from every shard and the archive, newest first, `limit` at most (see the
    module's rules). `client` is one Redis client or Shards."""
    shards = as_shards(client)
    pages: list[tuple[list[dict[str, Any]], Position | None]] = []
    unavailable: dict[str, str] = {}
    live: list[Any] = []
    for name, shard in _shards_asked(shards, f):
        try:
            hot = journal.find(shard, f, limit=limit, cursor=cursor, retention=retention, max_scan=max_scan)
        except journal.REDIS_DOWN as exc:
            if len(shards.clients) == 1:
                raise
            unavailable[f"shard {name}"] = str(down(shards, name, exc))
            continue
        for event in hot.events:
            event["tier"] = "redis"
        pages.append((hot.events, _position(hot.cursor) if hot.cursor else None))
        live.append(shard)
    if not pages:
        raise Unavailable("; ".join(unavailable.values()))
    if store is not None and f.status in (None, journal.DELIVERED):
        score, after_id = journal.cursor_bounds(f, cursor)
        after = (float(score), after_id) if after_id is not None else None
        try:
            archived, archive_stop = _archive_page(store, f, limit, after, max_scan)
        except ArchiveUnavailable as exc:
            unavailable["archive"] = str(exc)
        else:
            shadowed = set().union(*(journal.in_redis(shard, [e["id"] for e in archived]) for shard in live))
            pages.append(([e for e in archived if e["id"] not in shadowed], archive_stop))
    if len(pages) == 1:
        events, stop = pages[0]
        return TieredPage(events, _cursor(stop) if stop else None, unavailable)
    # Below the highest of the places the sources stopped, a source may hold events it has not read yet.
    stops = [stop for _, stop in pages if stop is not None]
    floor = max(stops) if stops else None
    merged = sorted((e for events, _ in pages for e in events), key=_key, reverse=True)
    if floor is not None:
        merged = [e for e in merged if _key(e) >= floor]
    if len(merged) >= limit:
        merged = merged[:limit]
        return TieredPage(merged, _cursor(_key(merged[-1])), unavailable)
    return TieredPage(merged, _cursor(floor) if floor is not None else None, unavailable)


def _shards_asked(shards: Shards, f: EventFilter) -> list[tuple[str, Any]]:
    """The shards a listing reads: the route's alone when it asks for one the routes know (a fan-out
    route's destinations are all on the route's shard)."""
    if f.routes and f.routes[0] in shards.routes:
        name = shards.name_of(f.routes[0])
        return [(name, shards.clients[name])]
    return list(shards.clients.items())


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
    """One event with its body, headers, attempts and copies, from whichever shard or tier holds it."""
    shards = as_shards(client)
    missing: list[str] = []
    not_found: EventNotFound | None = None
    for name, shard in shards.clients.items():
        try:
            record = journal.show(shard, event_id)
        except EventNotFound as exc:
            not_found = exc
            continue
        except journal.REDIS_DOWN as exc:
            if len(shards.clients) == 1:
                raise
            missing.append(str(down(shards, name, exc)))
            continue
        record["tier"] = "redis"
        return record
    row = None
    if store is not None:
        try:
            row = store.get(event_id)
        except ArchiveUnavailable as exc:
            raise ArchiveUnavailable(f"event {event_id!r} is not in Redis, and {exc}; retry later") from None
    if row is None:
        if missing:
            # It may be on the shard that did not answer: not found would be a wrong answer.
            raise Unavailable(f"event {event_id!r} is not on the shards that answered, and {'; '.join(missing)}")
        raise not_found  # type: ignore[misc]
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
    """Summaries of these events, in the order given, from whichever shard or tier holds each; ids in
    none are left out. Raises ArchiveUnavailable when some are not in Redis and the archive is down,
    Unavailable when a shard does not answer (a replay of some of the ids asked would surprise)."""
    shards, event_ids = as_shards(client), list(event_ids)
    hot: dict[str, dict[str, Any]] = {}
    for name, shard in shards.clients.items():
        wanted = [i for i in event_ids if i not in hot]
        if not wanted:
            break
        try:
            hot.update({e["id"]: {**e, "tier": "redis"} for e in journal.summaries(shard, wanted)})
        except journal.REDIS_DOWN as exc:
            if len(shards.clients) == 1:
                raise
            raise down(shards, name, exc) from exc
    missing = [i for i in event_ids if i not in hot]
    if missing and store is not None:
        for row in store.get_many(missing):
            hot[row.id] = {**{k: v for k, v in _record(row).items() if k in journal.SUMMARY_FIELDS},
                           "id": row.id, "tier": "archive"}
    return [hot[i] for i in event_ids if i in hot]


def last_copies(client: Any, store: Store | None, event_ids: list[str]) -> list[dict[str, Any] | None]:
    """Each event's latest copy sent elsewhere (replay --to), from its shard or its archived row (a copy
    of an archived event is recorded there); None for one with none yet, or a shard or archive that is down."""
    shards = as_shards(client)
    found: list[dict[str, Any] | None] = [None] * len(event_ids)
    for shard in shards.clients.values():
        try:
            copies = journal.last_copies(shard, event_ids)
        except journal.REDIS_DOWN:
            if len(shards.clients) == 1:
                raise
            continue
        found = [f if f is not None else c for f, c in zip(found, copies)]
    missing = [i for i, c in zip(event_ids, found) if c is None]
    if not missing or store is None:
        return found
    try:
        rows = {row.id: row for row in store.get_many(missing)}
    except ArchiveUnavailable:
        return found
    archived = {i: orjson.loads(row.copies) for i, row in rows.items()}
    return [c if c is not None else (archived.get(i) or [None])[-1] for i, c in zip(event_ids, found)]


def iter_matching(client: Any, store: Store | None, f: EventFilter, retention: int = journal.DEFAULT_RETENTION,
                  page: int = 500) -> Iterator[dict[str, Any]]:
    """Every matching summary from both tiers, page by page (replay, purge). An archive that does
    not answer raises ArchiveUnavailable: a replay or purge of half the matches would surprise."""
    cursor = None
    while True:
        result = find(client, store, f, limit=page, cursor=cursor, retention=retention)
        if "archive" in result.unavailable:
            raise ArchiveUnavailable(f"{result.unavailable['archive']}: nothing was done; retry when it answers")
        if result.unavailable:
            raise Unavailable(f"{'; '.join(result.unavailable.values())}: nothing was done")
        yield from result.events
        if result.cursor is None or result.cursor == cursor:
            return
        cursor = result.cursor


def purge(client: Any, store: Store | None, events: list[dict[str, Any]]) -> int:
    """Delete events for good from every tier (an event in Redis may have an older archived row), each
    on its route's shard (every shard for a route no longer configured)."""
    shards = as_shards(client)
    if store is not None:
        store.delete([e["id"] for e in events])
    kept: set[str] = set()  # moved since they were listed (journal.purge): left, on any shard
    for name, shard in shards.clients.items():
        mine = [e for e in events if shards.name_of(e["route"]) == name or e["route"] not in shards.routes]
        if mine:
            kept.update(journal.purge(shard, mine))
    return len(events) - len(kept)


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
