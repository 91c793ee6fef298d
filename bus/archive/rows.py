"""An archived event: the row both stores keep, made from a journal record, and the queries on it (pure)."""
from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ..filters import EventFilter

if TYPE_CHECKING:
    from ..journal.archiving import Due

# The columns of a row, in the order both stores write and read them.
COLUMNS = ("id", "tag", "route", "status", "received", "attempts", "last", "round", "replayed",
           "body", "headers", "attempt_log", "copies", "request")
SUMMARY_COLUMNS = ("id", "tag", "route", "status", "attempts", "last", "received")
# Tag characters are [A-Za-z0-9_.-], all below DEL: `prefix <= tag < prefix + DEL` is "tag starts with prefix".
_AFTER_EVERY_TAG_CHAR = "\x7f"


@dataclass(frozen=True)
class ArchivedEvent:
    """Everything `bus events ID` shows of a delivered event, as it was when it left Redis.
    attempt_log and copies are the JSON arrays of the journal's attempt and copy records."""

    id: str
    tag: str
    route: str
    status: str
    received: float
    attempts: int
    last: str
    round: int
    replayed: float | None
    body: bytes
    headers: bytes
    attempt_log: bytes
    copies: bytes
    # A request captured by `bus proxy` (method, path, headers, body as JSON), kept for its replay.
    request: bytes | None = None

    def values(self) -> tuple[Any, ...]:
        return _values(self)


# One C call for the row's tuple: a generator of getattr was ~4 us a row of the mover's write.
_values = attrgetter(*COLUMNS)


def from_due(due: Due) -> ArchivedEvent:
    """The row of a delivered event as the mover read it (journal.read_due), its arrays as they came."""
    f = due.fields
    replayed, request = f["replayed"], f["request"]
    return ArchivedEvent(
        id=due.id, tag=_text(f["tag"]), route=_text(f["route"]), status=_text(f["status"]),
        received=float(f["received"] or 0), attempts=int(f["attempts"] or 0), last=_text(f["last"]),
        round=int(f["round"] or 0), replayed=float(replayed) if replayed is not None else None,
        body=f["body"] or b"", headers=f["headers"] or b"", attempt_log=due.attempt_log, copies=due.copies,
        request=request,
    )


def _text(raw: bytes | None) -> str:
    return raw.decode() if raw is not None else ""


def append_copy(copies: bytes, copy: bytes) -> bytes:
    """A row's JSON array of copies with one more record at its end."""
    return copies[:-1] + (b"," if copies != b"[]" else b"") + copy + b"]"


def from_values(values: tuple[Any, ...] | list[Any]) -> ArchivedEvent:
    """A row read back in COLUMNS order (drivers hand blobs back as bytes or memoryview)."""
    row = dict(zip(COLUMNS, values))
    for k in ("body", "headers", "attempt_log", "copies", "request"):
        if row[k] is not None:
            row[k] = bytes(row[k])
    return ArchivedEvent(**row)


def summary(values: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    """What a listing shows of a row read in SUMMARY_COLUMNS order: the same keys as the journal's."""
    return {**dict(zip(SUMMARY_COLUMNS, values)), "tier": "archive"}


@dataclass(frozen=True)
class Scan:
    """One read of a listing from the archive: rows newest first (received, then id, descending),
    strictly after `after` in that order, narrowed by what an index can answer. A tag pattern is
    narrowed to its literal start here and matched in full by the caller, as the Redis side does."""

    limit: int
    after: tuple[float, str] | None = None
    routes: tuple[str, ...] = ()  # any route when empty
    since: float | None = None
    until: float | None = None
    tag_exact: str | None = None
    tag_prefix: str | None = None


def scan_for(f: EventFilter, limit: int, after: tuple[float, str] | None) -> Scan:
    exact, prefix = _tag_bounds(f.tag)
    return Scan(limit=limit, after=after, routes=f.routes, since=f.since, until=f.until,
                tag_exact=exact, tag_prefix=prefix)


def _tag_bounds(pattern: str | None) -> tuple[str | None, str | None]:
    """(the tag itself, for a pattern without wildcards), or (None, its literal start) for the index."""
    if pattern is None:
        return None, None
    cut = min((i for i in (pattern.find("*"), pattern.find("{")) if i >= 0), default=-1)
    if cut < 0:
        return pattern, None
    # 'a.**' matches 'a' itself, so the dot before a wildcard is not part of the literal start.
    prefix = pattern[:cut].removesuffix(".")
    return None, prefix or None


def where(scan: Scan, mark: str) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters of a Scan; `mark` is the driver's placeholder ('?' or '%s')."""
    # Every row is a delivered event (dead ones stay in Redis until replayed or purged), so status
    # needs no clause: a listing of another status does not read the archive at all.
    clauses: list[str] = ["1 = 1"]
    params: list[Any] = []
    if scan.after is not None:
        clauses.append(f"(received < {mark} OR (received = {mark} AND id < {mark}))")
        params += [scan.after[0], scan.after[0], scan.after[1]]
    if scan.routes:
        clauses.append(f"route IN ({', '.join([mark] * len(scan.routes))})")
        params += list(scan.routes)
    if scan.since is not None:
        clauses.append(f"received >= {mark}")
        params.append(scan.since)
    if scan.until is not None:
        clauses.append(f"received <= {mark}")
        params.append(scan.until)
    if scan.tag_exact is not None:
        clauses.append(f"tag = {mark}")
        params.append(scan.tag_exact)
    elif scan.tag_prefix is not None:
        clauses.append(f"tag >= {mark} AND tag < {mark}")
        params += [scan.tag_prefix, scan.tag_prefix + _AFTER_EVERY_TAG_CHAR]
    return " AND ".join(clauses), params
