"""`bus events`, `bus replay` and `bus purge`: the journal on the command line."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from .. import archive, fanout, filters, journal, lifecycle, replay, replay_pace, settings, shards
from ..archive import tiers
from ..errors import BadFilter, BusError
from ..routes import Router, load_configured


def add_filter_args(p: argparse.ArgumentParser, status_default: str | None, many_statuses: bool) -> None:
    if many_statuses:
        p.add_argument("--status", action="append", choices=filters.STATUSES,
                       help=f"repeat for several (default: {status_default})")
    else:
        p.add_argument("--status", choices=filters.STATUSES, default=status_default)
    p.add_argument("--tag", help="Fluentd-style tag pattern, e.g. 'api.**'")
    p.add_argument("--route", help="route name")
    p.add_argument("--destination", help="one destination of a fan-out route (with --route when several routes "
                                         "have one of that name)")
    p.add_argument("--since", help="e.g. 1h, 30m, 2026-11-22T10:00:00Z, Unix seconds")
    p.add_argument("--until", help="same forms as --since")


def _filters(args: argparse.Namespace, statuses: list[str | None], router: Router | None = None
             ) -> list[filters.EventFilter]:
    now = time.time()
    route = args.route
    if args.destination is not None:
        if router is None:  # the routes did not load: no way to tell which route a destination is
            raise BadFilter(f"--destination {args.destination}: the routes in BUS_ROUTES do not load; "
                                    "run `bus routes` to see why, or filter by --route ROUTE.DESTINATION")
        route = fanout.destination_route(router, args.route, args.destination)
    return [filters.build(s, args.tag, route, args.since, args.until, now=now) for s in statuses]


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    """Columns padded to fit; the last one is left ragged."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _client(config: settings.Settings, router: Router | None = None) -> shards.Shards:
    """Every shard's Redis (one without BUS_REDIS_SHARDS); with `router`, which shard holds each route."""
    return shards.for_reading(config, router.routes if router else ())


def cmd_events(args: argparse.Namespace, config: settings.Settings) -> int:
    client, store = _client(config), archive.store_for(config)
    router = _routes_if_any(config) if args.id or args.destination or args.route else None
    if args.id:
        record = fanout.show(client, store, router, args.id)
        if args.json:
            print(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
        else:
            _print_event(record)
        return 0
    (f,) = _filters(args, [args.status], router)
    page = fanout.find(client, store, router, f, limit=args.limit, cursor=args.cursor, retention=config.retention)
    for tier, why in page.unavailable.items():
        rest = "Redis holds" if tier == "archive" else "the shards that answered hold"
        print(f"warning: {why}; showing only what {rest}", file=sys.stderr)
    if args.json:
        missing = {"unavailable": page.unavailable} if page.unavailable else {}
        print(orjson.dumps({"events": page.events, "cursor": page.cursor, **missing}).decode())
        return 0
    # A fan-out route's events (listed by its own name) say each destination's status beside their own.
    fanned = any("destinations" in e for e in page.events)
    rows = [("ID", "TAG", "ROUTE", "STATUS", *(("DESTINATIONS",) if fanned else ()), "ATTEMPTS", "RECEIVED", "LAST")]
    rows += [(e["id"], e["tag"], e["route"], e["status"], *((_destinations(e),) if fanned else ()), str(e["attempts"]),
              _when(e["received"]), e["last"]) for e in page.events]
    if page.events:
        print_table(rows)
    else:
        print("no matching events")
    if page.cursor:
        print(f"more: add --cursor {page.cursor}", file=sys.stderr)
    return 0


def _destinations(e: dict[str, Any]) -> str:
    return " ".join(f"{d['name']}={d['status']}" for d in e.get("destinations", ()))


def _routes_if_any(config: settings.Settings) -> Router | None:
    """The routes, to show a fan-out event by its own id; None when they do not load (a record is still shown)."""
    try:
        return load_configured(config)
    except BusError:
        return None


def _print_event(e: dict[str, Any]) -> None:
    print(f"id        {e['id']}\ntag       {e['tag']}\nroute     {e['route']}\nstatus    {e['status']}")
    print(f"received  {_when(e['received'])}\nattempts  {e['attempts']}")
    if e.get("request"):  # captured by bus proxy
        request = e["request"]
        print(f"request   {request['method']} {request['path']}{'?' + request['query'] if request['query'] else ''}")
        for name, value in request["headers"]:
            print(f"  {name}: {value}")
    if e.get("lane") is not None:  # an ordered route's: its order key's lane and place in acceptance order
        print(f"order     lane {e['lane']!r}, seq {e['seq']}")
    if e.get("tier"):
        print(f"kept in   {'Redis' if e['tier'] == 'redis' else 'the archive'}")
    if e.get("destinations"):
        print("destinations:")
        print_table([("  NAME", "STATUS", "ATTEMPTS", "LAST", "ID")] + [
            (f"  {d['name']}", d["status"], str(d["attempts"]), d["last"], d["id"]) for d in e["destinations"]])
    print("headers:")
    for k, v in e["headers"].items():
        print(f"  {k}: {v}")
    print("body:")
    print("  " + orjson.dumps(e["body"], option=orjson.OPT_INDENT_2).decode().replace("\n", "\n  "))
    for title, log in (("attempts:", e["attempt_log"]), ("copies sent elsewhere (replay --to):", e["copies"])):
        if not log:
            continue
        print(title)
        for a in log:
            result = a.get("status_code") or a.get("error")
            print(f"  #{a['attempt']} {_when(a['at'])} {a.get('duration', 0):.3f}s {result} {a.get('url', '')}")
            if a.get("reason"):
                print(f"     {a['reason']}")
            if a.get("response"):
                print(f"     response: {a['response'][:200]!r}")


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        width = 30
        filled = width * done // max(total, 1)
        print(f"\rreplaying [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)
    elif done == total or done % 10_000 < replay.CHUNK:
        print(f"replayed {done}/{total}", file=sys.stderr)


def _select(args: argparse.Namespace, config: settings.Settings, default_status: str
            ) -> tuple[Any, Router, replay.Plan]:
    router = load_configured(config)
    client = _client(config, router)
    chosen = replay.Plan()
    ids = replay.check_ids(args.ids) if getattr(args, "ids", None) else None
    limit = getattr(args, "limit", None)
    for f in _filters(args, args.status or [default_status], router):
        if limit is not None and len(chosen.events) >= limit:  # --limit counts across the statuses asked
            break
        part = replay.plan(client, router, f, config.retention, None if limit is None else limit - len(chosen.events),
                           ids, archive=archive.store_for(config))
        chosen.events += part.events
        chosen.unroutable += part.unroutable
    return client, router, chosen


def cmd_replay(args: argparse.Namespace, config: settings.Settings) -> int:
    if args.to:
        replay.check_target(args.to)
    rate = replay_pace.parse_rate(args.rate) if args.rate else None  # a bad one is refused before anything is sent
    speed = replay_pace.parse_pace(args.pace) if args.pace else None
    client, router, chosen = _select(args, config, journal.DEAD)
    where = f"copies to {args.to}" if args.to else "to their routes"
    if chosen.unroutable:
        print(f"skipping {len(chosen.unroutable)} events whose route no longer exists "
              f"(e.g. {chosen.unroutable[0]['id']} of route {chosen.unroutable[0]['route']!r})", file=sys.stderr)
    if not chosen.events:
        print("no matching events: nothing to replay")
        return 0
    if args.dry_run:
        for e in chosen.events[:20]:
            print(f"would send {e['id']} {e['tag']} ({e['status']}, route {e['route']})")
        if len(chosen.events) > 20:
            print(f"... and {len(chosen.events) - 20} more")
        print(f"dry run: {len(chosen.events)} events would be sent {where}")
        return 0
    started = time.time()
    if rate or speed:
        events = sorted(chosen.events, key=lambda e: e["received"])  # in the order they first arrived
        n = replay.run_paced(client, router, events, replay_pace.offsets(events, rate, speed), to=args.to,
                             progress=_progress, archive=archive.store_for(config))
    else:
        n = replay.run(client, router, chosen.events, to=args.to, progress=_progress, archive=archive.store_for(config))
    print(f"replayed {n} events {where}")
    if args.to and args.wait > 0:
        _copy_summary(client, [e["id"] for e in chosen.events], started, args.wait, archive.store_for(config))
    return 0


def _copy_summary(client: Any, ids: list[str], since: float, wait: float, store: Any = None) -> None:
    """Wait (up to `wait` s) for the copies' final answers, then print how many of each status came back."""
    deadline = time.monotonic() + wait
    while True:
        copies = [c if c and c["at"] >= since and c.get("verdict") != lifecycle.Verdict.RETRY else None
                  for c in tiers.last_copies(client, store, ids)]
        missing = sum(c is None for c in copies)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    counts: dict[str, int] = {}
    for c in copies:
        if c is not None:
            answer = str(c.get("status_code") or "no answer")
            counts[answer] = counts.get(answer, 0) + 1
    shown = ", ".join(f"{answer}: {n}" for answer, n in sorted(counts.items())) or "nothing yet"
    print(f"the copies' answers: {shown}")
    if missing:
        print(f"{missing} copies had no final answer within {wait:g}s (are workers running for their routes?); "
              "`bus events ID` shows each one's copies", file=sys.stderr)


def cmd_purge(args: argparse.Namespace, config: settings.Settings) -> int:
    client, _, chosen = _select(args, config, journal.DEAD)
    events = chosen.events + chosen.unroutable
    if not events:
        print("no matching events: nothing to purge")
        return 0
    if not args.yes:
        print(f"{len(events)} events match; nothing deleted. Add --yes to delete them for good.")
        return 0
    print(f"purged {tiers.purge(client, archive.store_for(config), events)} events")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    events = sub.add_parser("events", help="list journaled events by filter, or show one by id")
    events.add_argument("id", nargs="?", help="an event id: show it with its body, headers and attempts")
    add_filter_args(events, None, many_statuses=False)
    events.add_argument("--limit", type=int, default=50)
    events.add_argument("--cursor", help="continue a listing where the last page stopped")
    events.add_argument("--json", action="store_true", help="machine-readable output")
    events.set_defaults(func=cmd_events)

    rep = sub.add_parser("replay", help="re-send events chosen by filter (dead ones by default)")
    add_filter_args(rep, "dead", many_statuses=True)
    rep.add_argument("--to", help="send copies to this URL instead (a staging service); the events' state is untouched")
    rep.add_argument("--dry-run", action="store_true", help="say what would be sent and how many")
    rep.add_argument("--limit", type=int, help="replay at most this many")
    rep.add_argument("--id", dest="ids", action="append", metavar="ID",
                     help="only this event (repeat for several); the other filters still apply")
    rep.add_argument("--rate", metavar="N/s", help="send at most N events per second (e.g. 200/s), oldest first")
    rep.add_argument("--pace", metavar="original|Nx",
                     help="send them as far apart as they first arrived (original), or N times faster (10x)")
    rep.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                     help="with --to: wait up to this long for the copies' answers and print how many of each "
                          "status came back (0: do not wait; default 60)")
    rep.set_defaults(func=cmd_replay)

    purge = sub.add_parser("purge", help="delete events chosen by filter (dead ones by default) for good")
    add_filter_args(purge, "dead", many_statuses=True)
    purge.add_argument("--yes", action="store_true", help="really delete (without it, only count)")
    purge.set_defaults(func=cmd_purge)
