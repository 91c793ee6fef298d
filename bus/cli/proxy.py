"""`bus proxy`: the command line of the capture proxy (bus/ingress/capture.py)."""
from __future__ import annotations

import argparse

from .. import intake, settings
from ..errors import ConfigError


def _statuses(value: str) -> frozenset[int]:
    try:
        codes = frozenset(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        codes = frozenset({0})
    if not all(100 <= c <= 599 for c in codes):
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of HTTP statuses (e.g. 502,503)")
    return codes


def cmd_proxy(args: argparse.Namespace, config: settings.Settings) -> int:
    from ..ingress.capture import ProxyConfig, serve

    if args.workers < 1:
        raise ConfigError("--workers must be 1 or more")
    proxy = ProxyConfig(tag=args.tag, upstream=args.upstream, retryable=args.retryable,
                        preserve_host=args.preserve_host, require_capture=args.require_capture,
                        keep_headers=frozenset(h.lower() for h in args.keep_header or ()))
    serve(intake.load(config), args.bind, proxy, workers=args.workers)
    return 0


def add_command(sub: argparse._SubParsersAction, hostport: object) -> None:
    p = sub.add_parser("proxy", help="sit in front of an API: journal every request under TAG, then forward it "
                                     "and pass the API's answer back (one listener per command)")
    p.add_argument("--bind", type=hostport, default="127.0.0.1:8081", help="HOST:PORT to listen on (default 127.0.0.1:8081)")
    p.add_argument("--upstream", required=True, help="the API's base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--tag", required=True, help="the tag requests are journaled under; a route must match it "
                                                "(its endpoint is where `bus replay` sends them)")
    p.add_argument("--retryable", type=_statuses, default=frozenset(), metavar="STATUSES",
                   help="statuses (e.g. 502,503) passed to the client and leaving the request dead, for replay")
    p.add_argument("--preserve-host", action="store_true", help="send the client's Host, not the upstream's")
    p.add_argument("--require-capture", action="store_true",
                   help="answer 503 when the journal cannot take a request, instead of forwarding it uncaptured")
    p.add_argument("--keep-header", action="append", metavar="NAME",
                   help="a credential header (Authorization, Cookie, ...) to keep in the journal for replay; repeat")
    p.add_argument("--workers", type=int, default=1, help="processes, one event loop each (default 1)")
    p.set_defaults(func=cmd_proxy)
