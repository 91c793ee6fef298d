"""The `bus` command line: thin translation of arguments into calls, errors into exit status 1."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from .. import auth, celery_config, intake, journal, local_up, logs, settings, shards, stats
from ..broker.celery_checks import check_broker
from ..errors import BusError, ConfigError, Unavailable
from ..ingress.bodies import parse_records
from ..routes import Route, Router, load_configured
from ..spool import Producer, Waiting, inspect
from ..tags import validate_tag
from . import journal as journal_cli
from . import proxy as proxy_cli

if TYPE_CHECKING:
    from celery import Celery

DEFAULT_FORWARD = "127.0.0.1:24224"


def _router(config: settings.Settings) -> Router:
    return load_configured(config)


def _hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return value


def _listen(value: str) -> str:
    """HOST:PORT, or unix:PATH (a socket file on this host)."""
    if value.startswith("unix:"):
        if len(value) == len("unix:"):
            raise argparse.ArgumentTypeError(f"{value!r} names no path (e.g. unix:/run/bus/http.sock)")
        return value
    return _hostport(value)


def _forward(value: str) -> str:
    return value if value == "off" else _listen(value)


def cmd_routes(args: argparse.Namespace, config: settings.Settings) -> int:
    # `import` as the first word is the import subcommand; --tag looks up any tag, `import` included.
    if args.tag_option is not None and args.tag is not None:
        raise UsageError("give the tag once: `bus routes TAG` or `bus routes --tag TAG`")
    if args.tag == "import":
        return cmd_routes_import(args, config)
    if args.file or args.out or args.dry_run:
        raise UsageError("FILE, --out and --dry-run go with `bus routes import FILE`")
    router = _router(config)
    tag = args.tag_option if args.tag_option is not None else args.tag
    if tag:
        validate_tag(tag)
        route = router.match(tag)
        if not route.destinations:
            print(f"{tag} -> route {route.name} ({route.file}), queue {journal.queue_name(route.name)}")
        else:
            print(f"{tag} -> route {route.name} ({route.file}), {len(route.destinations)} destinations")
        for target in route.destinations or (route,):
            url = target.endpoint.render(tag)
            if route.destinations:
                print(f"destination {target.destination}, queue {journal.queue_name(target.name)}")
            print(f"{target.method} {url}")
            print(_proxy_line(config, target, url))
        return 0
    rows = [("#", "ROUTE", "MATCH", "METHOD", "ENDPOINT", "FILE")]
    rows += [(str(i), r.name, " ".join(r.match), r.method, r.endpoint.template, r.file) for i, r in enumerate(router.routes, 1)]
    journal_cli.print_table(rows)
    return 0


def _proxy_line(config: settings.Settings, route: Route, url: str) -> str:
    from urllib.parse import urlsplit

    from ..proxies import choose

    parts = urlsplit(url)
    choice = choose(config.outbound.proxies, route.proxy, parts.scheme, parts.hostname or "",
                    parts.port or (443 if parts.scheme == "https" else 80))
    via = f"through proxy {choice.proxy.shown}" if choice.proxy else "straight, no proxy"
    return f"{via} ({choice.why})"


def cmd_routes_import(args: argparse.Namespace, config: settings.Settings) -> int:
    from ..fluentd.config import parse
    from ..fluentd.routes import convert

    if not args.file:
        raise UsageError("usage: bus routes import FLUENTD.CONF [--out DIR] [--dry-run] "
                         "(to look up a tag named import: bus routes --tag import)")
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    result = convert(parse(text, str(path)), config.visibility_timeout, path.name)
    out = Path(args.out) if args.out else config.routes_dir
    for note in result.notes:
        print(note)
    targets = [(out / f"{route.name}.toml", route.text) for route in result.routes]
    if args.dry_run:
        for target, route_text in targets:
            print(f"\n# --- {target} (dry run: not written)\n{route_text}", end="")
    else:
        existing = [target for target, _ in targets if target.exists()]
        if existing:
            raise ConfigError(f"{existing[0]} already exists; nothing was written: move it away or use --out")
        others = sorted(out.glob("*.toml")) if out.is_dir() else []
        out.mkdir(parents=True, exist_ok=True)
        for target, route_text in targets:
            target.write_text(route_text, encoding="utf-8")
            print(f"wrote {target}")
        if others:
            print(f"note: {out} already held {len(others)} route file(s); all are tried in file-name order")
    if result.failed:
        print(f"bus routes import: {result.failed} <match> block(s) could not be converted (see NOT converted "
              "above); the tags they take have no route of their own", file=sys.stderr)
        return 1
    return 0


def cmd_emit(args: argparse.Namespace, config: settings.Settings) -> int:
    records = parse_records(args.json.encode(), "application/json")
    for event_id in intake.accept(intake.load(config), args.tag, records):
        print(event_id)
    return 0


def cmd_spool(args: argparse.Namespace, config: settings.Settings) -> int:
    directory = Path(args.dir)
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory; give the spool directory a Producer was made with")
    if not args.flush:
        print(_spool_line(directory, inspect(directory)))
        return 0
    producer = Producer(directory, config=config)  # SpoolLocked while a live Producer holds it
    before = producer.stats()["spooled"]
    if not producer.close(args.timeout):
        left = inspect(directory).count
        raise Unavailable(f"{left} of {before} events still wait in {directory} after {args.timeout:g}s: "
                          f"{producer.stats()['last_error'] or 'Redis did not take them'}; try again once Redis answers")
    print(f"{directory}: sent {before} events; nothing waiting")
    return 0


def _spool_line(directory: Path, waiting: Waiting) -> str:
    if not waiting.count or waiting.oldest is None:
        return f"{directory}: nothing waiting"
    oldest = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(waiting.oldest))
    return (f"{directory}: {waiting.count} events waiting, {waiting.bytes} bytes, oldest emitted {oldest} "
            f"({max(0, time.time() - waiting.oldest):.0f}s ago)")


def cmd_stats(args: argparse.Namespace, config: settings.Settings) -> int:
    routes = _router(config).routes
    client = shards.for_reading(config, routes)
    try:
        _show_stats(args, client, [r.name for r in routes], config)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how --watch ends
    except journal.REDIS_DOWN as exc:
        where = config.redis.shown  # never print a password from the URL
        raise Unavailable(f"Redis at {where} did not answer ({exc.__class__.__name__})") from exc
    return 0


def _show_stats(args: argparse.Namespace, client: shards.Shards, names: list[str], config: settings.Settings) -> None:
    shown = 0
    while True:
        now = time.time()
        current = stats.read(client, names, now)
        archived = (stats.read_archive(client, logs.redact(config.archive_url), config.hot_window, now)
                    if config.archive_url else None)
        if args.watch and sys.stdout.isatty():
            print("\x1b[H\x1b[2J", end="")  # redraw in place, like watch(1)
        if args.json:
            print(orjson.dumps(stats.as_json(current, now, archived)).decode())
        else:
            journal_cli.print_table(stats.table(current, now))
            failing = stats.endpoint_table(current, now)
            if failing:
                print()
                journal_cli.print_table(failing)
            if archived:
                print(stats.archive_text(archived, now))
        shown += 1
        if not args.watch or (args.count and shown >= args.count):
            return
        if not args.json:
            print(f"\nevery {args.watch:g}s; Ctrl-C to stop", flush=True)
        time.sleep(args.watch)


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return number


def cmd_serve(args: argparse.Namespace, config: settings.Settings) -> int:
    from ..ingress.server import serve, serve_with_forward

    # The workers listen on Celery's broker: it must be where intake queues tasks. Read without
    # importing Celery, which the ingress never uses otherwise (celery_config.py).
    check_broker(celery_config.broker_urls(), config.worker_redis.url, config.worker_shard)
    bus = intake.load(config)
    if args.forward != "off":
        if config.tokens_file and not config.forward.shared_key:
            raise ConfigError("BUS_TOKENS guards the HTTP port, but the forward listener has no shared key, so "
                              "anyone reaching it could send any tag: set BUS_FORWARD_SHARED_KEY (and "
                              "BUS_FORWARD_TAGS to scope it), or pass --forward off")
        # With more than one HTTP worker the HTTP side runs as a child `bus serve --forward off`,
        # which warns itself; with one it runs in this process.
        if args.workers == 1:
            _warn_if_open(args.bind, config)
        return serve_with_forward(bus, args.bind, args.forward, workers=args.workers,
                                  threads=args.threads)
    _warn_if_open(args.bind, config)
    serve(bus, args.bind, workers=args.workers, threads=args.threads)
    return 0


def _warn_if_open(bind: str, config: settings.Settings) -> None:
    """An HTTP port anyone can reach, without tokens, is said loudly at start."""
    tokens = auth.load_tokens(config.tokens_file) if config.tokens_file else None
    host = bind.rpartition(":")[0].strip("[]")
    # A unix socket is guarded by its file mode (BUS_UNIX_SOCKET_MODE), not by where it listens.
    if tokens is None and not bind.startswith("unix:") and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"bus serve: WARNING: no BUS_TOKENS and bound to {host}: anyone who reaches this port can send "
              "events and read the journal. Set BUS_TOKENS (see `bus tokens new`).", file=sys.stderr, flush=True)


def cmd_tokens_new(args: argparse.Namespace, config: settings.Settings) -> int:
    token, hexdigest = auth.new_token()
    print(f"token (give it to the producer; it is not stored anywhere): {token}")
    print(f"line for the BUS_TOKENS file:\n{hexdigest}  {args.patterns}  {args.name}")
    return 0


def cmd_secret_new(args: argparse.Namespace, config: settings.Settings) -> int:
    from ..route_secrets import new_signing_secret

    print(new_signing_secret())
    return 0


def _worker_routes(router: Router, names: Sequence[str]) -> list[Route]:
    if not names:
        return list(router.routes)
    try:
        return router.named(list(names))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _celery_app(config: settings.Settings) -> Celery:
    """The Celery app, once its broker is known to be the journal's Redis (celery_checks.py)."""
    from ..celery import app

    check_broker(app.conf, config.worker_redis.url, config.worker_shard)
    return app


def cmd_worker(args: argparse.Namespace, config: settings.Settings) -> int:
    from .. import shard_workers
    from . import worker_exit

    routes = _worker_routes(_router(config), args.routes)
    groups = shard_workers.by_shard(routes)
    options = ["--loglevel", args.loglevel] + (["--concurrency", str(args.concurrency)] if args.concurrency else []) \
        + (["--no-task-events"] if args.no_task_events else [])
    if len(groups) > 1:
        return shard_workers.run(groups, options)
    (shard,) = groups
    if shard != config.worker_shard:
        # Before the Celery app is loaded: its broker (celery_defaults.py) is the worker's shard.
        os.environ["BUS_WORKER_SHARD"] = shard
        config = settings.load()
    app = _celery_app(config)

    argv = []
    if config.log_format == "json":
        # JSON from the first line: no banner, and start-up warnings (before Celery sets up
        # logging) go through a JSON handler too.
        argv.append("--quiet")
        logs.configure("json")
        logging.captureWarnings(True)
    argv += [
        "worker",
        "--queues", ",".join(journal.queue_name(r.name) for r in routes),
        "--hostname", f"{'+'.join(r.name for r in routes)}@%h",
        "--loglevel", args.loglevel,
        # Mingle and gossip are start-up and per-task chatter our workers never use.
        "--without-mingle", "--without-gossip",
    ]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    if args.no_task_events:
        # Three PUBLISHes per task, one of them in the main process before the task reaches the pool,
        # for a monitor nobody runs; heartbeats go on, and Flower's enable_events turns them back on.
        # They go every 10 s instead of 2: each one carries its interval, by which Flower judges a
        # worker online, and an idle worker's main process woke for little else (docs/performance.md).
        app.conf.worker_send_task_events = False
        argv += ["--heartbeat-interval", "10"]
    seen = worker_exit.watch()
    app.worker_main(argv)
    code, line = worker_exit.status(seen)
    if line:
        # Celery left sys.stderr redirected into its log (a WARNING line): the process's own stderr.
        print(f"bus worker: {line}", file=sys.__stderr__, flush=True)
    return code


def cmd_up(args: argparse.Namespace, config: settings.Settings) -> int:
    from ..up import run

    if config.redis_shards:
        raise ConfigError("bus up runs one Redis of its own, and BUS_REDIS_SHARDS is set: unset it (and the "
                          "routes' `shard` keys) for bus up, or run `bus serve` and `bus worker` against your shards")
    _router(config)  # a broken route file stops `bus up` before anything starts
    return run(config, bind=args.bind, redis_port=args.redis_port, flower_port=args.flower_port, forward=args.forward,
               ingress_workers=args.ingress_workers, child_main=main)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bus")
    except PackageNotFoundError:
        return "unknown (not installed: run scripts/setup.sh)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bus", description="Guaranteed-delivery HTTP event bus.")
    p.add_argument("--version", action="version", version=f"bus {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run everything locally: Redis (AOF, ./var), ingress, a worker per route, Flower")
    up.add_argument("--bind", type=_hostport, default="127.0.0.1:8080")
    up.add_argument("--forward", type=_forward, default=DEFAULT_FORWARD,
                    help=f"Fluentd forward listener HOST:PORT, or off (default {DEFAULT_FORWARD})")
    up.add_argument("--redis-port", type=int, default=6380, help="port of the Redis that `bus up` starts (default 6380)")
    up.add_argument("--flower-port", type=int, default=5555, help="0 to run without Flower")
    up.add_argument("--ingress-workers", type=int, default=1,
                    help="HTTP ingress processes (bus serve --workers; default 1: one machine, one loop is enough)")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="run the ingress: HTTP and the Fluentd forward listener")
    serve.add_argument("--bind", type=_listen, default="127.0.0.1:8080",
                       help="HTTP ingress HOST:PORT or unix:PATH (default 127.0.0.1:8080)")
    serve.add_argument("--forward", type=_forward, default=DEFAULT_FORWARD,
                       help="Fluentd forward listener HOST:PORT (tcp events, udp heartbeats), unix:PATH (in_unix), "
                            f"or off (default {DEFAULT_FORWARD})")
    serve.add_argument("--workers", type=int, default=2, help="HTTP worker processes, one event loop each (default 2)")
    serve.add_argument("--threads", type=int, default=8,
                       help="threads per worker process for the journal API, console and metrics (default 8)")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a Celery worker for the given routes (all when none given)")
    worker.add_argument("routes", nargs="*", metavar="ROUTE")
    worker.add_argument("--concurrency", type=int, default=0, help="worker processes (default: Celery's, the CPU count)")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--no-task-events", action="store_true",
                        help="send no Celery task events (Flower's task list) until a monitor asks for them "
                             "(Flower does when it starts); `bus up --flower-port 0` runs its workers so")
    worker.set_defaults(func=cmd_worker)

    routes = sub.add_parser("routes", help="print the route table, or which route takes TAG and its URL; "
                                          "`bus routes import FLUENTD.CONF` converts Fluentd <match> blocks")
    routes.add_argument("tag", nargs="?", help="a tag, or `import` (then FILE: convert a Fluentd config)")
    routes.add_argument("--tag", dest="tag_option", metavar="TAG",
                        help="the tag to look up, whatever it is (`bus routes --tag import`)")
    routes.add_argument("file", nargs="?", help="with `import`: the Fluentd config file")
    routes.add_argument("--out", help="with `import`: where to write the route files (default: BUS_ROUTES)")
    routes.add_argument("--dry-run", action="store_true", help="with `import`: print the routes, write nothing")
    routes.set_defaults(func=cmd_routes)

    emit = sub.add_parser("emit", help="send one event (a JSON object) or a batch (a JSON array); prints the ids")
    emit.add_argument("tag")
    emit.add_argument("json")
    emit.set_defaults(func=cmd_emit)

    st = sub.add_parser("stats", help="per route: backlog, retrying, dead, recent deliveries, oldest waiting, "
                                      "endpoint state")
    st.add_argument("--watch", type=_positive, nargs="?", const=2.0, metavar="SECONDS",
                    help="refresh every SECONDS (default 2) until Ctrl-C")
    st.add_argument("--count", type=int, default=0, help="with --watch, stop after this many refreshes")
    st.add_argument("--json", action="store_true", help="one JSON object per refresh, as GET /stats answers")
    st.set_defaults(func=cmd_stats)

    spool = sub.add_parser("spool", help="what waits in a Producer's spool directory (count, bytes, oldest); "
                                         "--flush sends it to Redis")
    spool.add_argument("dir", metavar="DIR")
    spool.add_argument("--flush", action="store_true", help="send what waits, then exit (1 if some is left)")
    spool.add_argument("--timeout", type=_positive, default=60.0, help="with --flush: seconds to try (default 60)")
    spool.set_defaults(func=cmd_spool)

    journal_cli.add_commands(sub)
    proxy_cli.add_command(sub, _hostport)

    tokens = sub.add_parser("tokens", help="producer tokens for BUS_TOKENS")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True)
    new = tokens_sub.add_parser("new", help="make a token; prints it once, and the line for the tokens file")
    new.add_argument("name", help="who uses it, e.g. orders-service")
    new.add_argument("patterns", help="comma-separated tag patterns it may send, plus @journal to read the journal")
    new.set_defaults(func=cmd_tokens_new)

    secret = sub.add_parser("secret", help="signing secrets for routes")
    secret_sub = secret.add_subparsers(dest="secret_command", required=True)
    secret_sub.add_parser("new", help="print a new Standard Webhooks secret (whsec_...)").set_defaults(func=cmd_secret_new)
    return p


class UsageError(Exception):
    """Arguments argparse accepts but that do not go together: exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = settings.load()
        return args.func(args, config if args.command == "up" else local_up.adopt(config, "bus"))
    except UsageError as exc:
        print(f"bus {args.command}: {exc}", file=sys.stderr)
        return 2
    except BusError as exc:
        print(f"bus {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
