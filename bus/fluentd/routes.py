"""Turn a Fluentd config's `<match>` blocks with `@type http` into bus routes, with a report (pure).

Each top-level http match becomes one route, named NN-name so that file names
sort in match order. One report line each says what a setting became, what bus
does its own way anyway, and what could not be carried over and why; a match
that cannot become a route that loads is reported NOT converted, and so is one
of another @type, which makes the import exit 1. A `@type copy` whose
`<store>`s are all `@type http` becomes one route with a [[destinations]]
table per store (fan-out); a copy with any other store is NOT converted.
"""
from __future__ import annotations

import base64
import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RouteError
from ..routes import MAX_BATCH, Route, parse_route
from ..tags import compile_pattern
from .config import Section, boolean, headers, seconds

# Net::HTTP's timeouts, what out_http uses when open_timeout/read_timeout are unset.
NET_HTTP_TIMEOUT = 60
# Events per request for json_array when the buffer sets no chunk_limit_records.
DEFAULT_JSON_ARRAY_BATCH = 100


@dataclass
class RouteFile:
    name: str  # file stem: NN-name, so file names sort in match order
    text: str  # the TOML


@dataclass
class Conversion:
    routes: list[RouteFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: int = 0  # <match> blocks that could not become a route (not http, copy, or a setting bus cannot take)


# out_http's TLS settings and the route keys they become.
_TLS_FILES = {"tls_ca_cert_path": "ca_file", "tls_client_cert_path": "client_cert", "tls_private_key_path": "client_key"}
_CARRIED_MATCH = {"@type", "@id", "endpoint", "http_method", "content_type", "headers", "open_timeout", "read_timeout",
                  "retryable_response_codes", "json_array", "tls_verify_mode", "proxy", "compress", *_TLS_FILES}
# out_http settings bus has no counterpart for, and why.
_MATCH_NOT_CARRIED = {
    "@log_level": "bus logs per process, not per route",
    "@label": "bus has no labels: a route takes events by tag only",
    "ssl_timeout": "bus has no separate TLS timeout (open_timeout covers the connection)",
    "tls_private_key_passphrase": "bus reads unencrypted client keys only (client_key)",
    "tls_version": "bus uses the TLS versions of the Python ssl module",
    "tls_ciphers": "bus uses the ciphers of the Python ssl module",
    "error_response_as_unrecoverable": "bus parks every non-retryable answer as a dead event (replayable), never drops it",
    "headers_from_placeholders": "header values cannot be templated from the tag in bus",
}
# <buffer> settings whose job bus does its own way, with what it does instead.
_BUFFER_SAME = {
    "@type": "bus keeps every accepted event in Redis (AOF) until it is delivered",
    "path": "bus keeps every accepted event in Redis (AOF) until it is delivered",
    "flush_mode": "bus delivers each event as soon as a worker is free",
    "flush_interval": "bus delivers each event as soon as a worker is free",
    "flush_at_shutdown": "queued events stay in Redis across restarts",
    "chunk_limit_records": "bus sends one event per request unless json_array (then it is batch_max)",
    "chunk_limit_size": "bus sends one event per request, or batch_max events with json_array",
    "queue_limit_length": "events wait in Redis, not in memory",
    "retry_type": "bus always backs off exponentially (1 s doubling up to retry_max_interval)",
    "retry_randomize": "bus always adds jitter (each delay drawn from [d/2, d])",
    "compress": "Redis holds the events as they came",
    "flush_thread_count": "parallel deliveries come from the route's worker: `bus worker ROUTE --concurrency N`",
    "overflow_action": "when Redis is unreachable the ingress answers 503 and the producer retries",
    "retry_secondary_threshold": "events that run out of attempts are parked as dead in the journal (`bus replay`)",
}
_BUFFER_CARRIED = {"retry_forever", "retry_max_times", "retry_max_interval", "total_limit_size", "retry_wait",
                   "retry_exponential_backoff_base", "retry_timeout"}


def convert(root: Section, visibility_timeout: int, source: str = "fluentd.conf") -> Conversion:
    """Routes for the top-level `<match>` blocks with `@type http`, in match order, with a report."""
    result = Conversion()
    matches = [s for s in root.sections if s.name == "match"]
    width = max(2, len(str(len(matches))))
    names: set[str] = set()
    if "@include" in root.params:
        result.notes.append(f"{source}:{root.params['@include'][1]}: @include is not supported: paste the included "
                            "file's <match> blocks into this one and run the import again")
    for section in root.sections:
        if section.name != "match":
            _note_other_section(section, result, source)
            continue
        index = matches.index(section) + 1
        head = f"<match {section.arg}> ({source}:{section.line})"
        kind = section.params.get("@type", ("", 0))[0]
        copy = kind == "copy" and bool(_http_stores(section))
        if kind != "http" and not copy:
            # Not a silent skip: the tags it took would go to the next route that matches them, or be
            # refused with 404, and nothing but this note would say so.
            result.failed += 1
            result.notes.append(f"{head}: NOT converted: {_unconvertible(section, kind)}")
            continue
        name = _unique(f"{index:0{width}d}-{_route_name(section)}", names)
        try:
            text, notes = (_copy_route if copy else _match_route)(section, source)
            parse_route(name, f"{name}.toml", tomllib.loads(text), visibility_timeout)
        except (ValueError, RouteError) as exc:
            result.failed += 1
            result.notes.append(f"{head}: NOT converted: {exc}")
            continue
        result.routes.append(RouteFile(name, text))
        result.notes.extend(f"{head}: {note}" for note in notes)
    if not matches:
        result.notes.append(f"{source}: no top-level <match> blocks")
    return result


def _http_stores(match: Section) -> list[Section]:
    """The copy's stores when every one is @type http (and there is one at least), else []."""
    stores = [s for s in match.sections if s.name == "store"]
    return stores if stores and all(s.params.get("@type", ("", 0))[0] == "http" for s in stores) else []


def _match_route(match: Section, source: str) -> tuple[str, list[str]]:
    """A `<match>` of @type http: the route file's TOML and the report lines."""
    table, notes = _route_table(match)
    return _toml(table, f"Imported from {source}:{match.line} <match {match.arg}> by `bus routes import`."), notes


def _copy_route(match: Section, source: str) -> tuple[str, list[str]]:
    """A `@type copy` of http stores: one route, a destination per store, each from its own store's settings."""
    dests: list[dict[str, Any]] = []
    notes: list[str] = []
    taken: set[str] = set()
    for i, store in enumerate(_http_stores(match)):
        table, store_notes = _delivery_table(store)
        dest = _unique(_store_name(store, i), taken)
        dests.append({"name": dest, **table})
        notes += [f"<store> {dest}: {note}" for note in store_notes]
    notes += [f"{key}: not carried: a copy's own setting; bus sends every event to each destination"
              for key in match.params if key not in ("@type", "@id")]
    text = _toml({"match": _patterns(match.arg)},
                 f"Imported from {source}:{match.line} <match {match.arg}> (@type copy) by `bus routes import`.", dests)
    summary = (f"@type copy of {len(dests)} http stores: converted to destinations "
               f"{', '.join(d['name'] for d in dests)} (each with its own attempts, retries and dead letter)")
    return text, [summary, *notes]


def _store_name(store: Section, index: int) -> str:
    words = re.findall(r"[A-Za-z0-9_]+", store.params.get("@id", ("", 0))[0])
    return "-".join(words)[:40].strip("-") or f"store{index + 1}"


def _unconvertible(match: Section, kind: str) -> str:
    """Why a <match> that is not `@type http` cannot become a route, and what to do about it."""
    after = ("; the tags it takes would go to the next route that matches them, or be refused with 404 if none "
             "does: remove the block or replace its stores by one @type http, then import again")
    if kind == "copy":
        stores = [s.params.get("@type", ("(none)", 0))[0] for s in match.sections if s.name == "store"]
        listed = ", ".join(f"<store> @type {k}" for k in stores) or "no <store>"
        return (f"@type copy ({listed}): only a copy whose stores are all @type http becomes a route with "
                f"destinations; bus delivers to HTTP endpoints only{after}")
    return f"@type {kind or '(none)'} is not http: bus delivers to HTTP endpoints only{after}"


def _note_other_section(section: Section, result: Conversion, source: str) -> None:
    head = f"<{section.name}{' ' + section.arg if section.arg else ''}> ({source}:{section.line})"
    kind = section.params.get("@type", ("", 0))[0]
    if section.name == "source" and kind == "forward":
        bind = section.params.get("bind", ("0.0.0.0", 0))[0]
        port = section.params.get("port", ("24224", 0))[0]
        note = f"served by `bus serve --forward {bind}:{port}`"
        if section.sub("security"):
            note += "; its <security> maps to BUS_FORWARD_SHARED_KEY, BUS_FORWARD_SELF_HOSTNAME (and BUS_FORWARD_USERNAME/PASSWORD)"
        result.notes.append(f"{head}: {note}")
    elif section.name == "source" and kind == "unix":
        # in_unix: the forward protocol on a socket file (its default path is Fluentd's).
        path = section.params.get("path", ("/var/run/fluent/fluent.sock", 0))[0]
        result.notes.append(f"{head}: served by `bus serve --forward unix:{path}` (fluent-logger's unix://; "
                            "BUS_UNIX_SOCKET_MODE sets its permissions, 660 by default)")
    elif section.name == "source" and kind == "http":
        result.notes.append(f"{head}: served by the HTTP ingress (`bus serve --bind`), which reads in_http's forms")
    elif section.name == "source":
        result.notes.append(f"{head}: not carried: bus takes events over HTTP, the forward protocol and emit() only")
    elif section.name == "filter":
        result.notes.append(f"{head}: not carried: bus delivers records unchanged (no filters)")
    elif section.name in ("label", "worker"):
        inner = sum(1 for s in section.sections if s.name == "match")
        result.notes.append(f"{head}: not carried ({inner} <match> inside): bus routes by tag only, "
                            "move the matches to the top level to import them")
    elif section.name != "match":
        result.notes.append(f"{head}: not carried: bus has no <{section.name}> section")


def _route_table(match: Section) -> tuple[dict[str, Any], list[str]]:
    """The route's keys and the report lines; ValueError when the match cannot become a route."""
    table, notes = _delivery_table(match)
    return {"match": _patterns(match.arg), **table}, notes


def _delivery_table(match: Section) -> tuple[dict[str, Any], list[str]]:
    """What an out_http section (a <match> or a copy's <store>) says about delivering: the keys and report lines."""
    p = {k: v for k, (v, _) in match.params.items()}
    table: dict[str, Any] = {"endpoint": _endpoint(p), "method": p.get("http_method", "post").upper()}
    notes = _body(match, p, table)
    head = _param(p, "headers", headers, {})
    auth = match.sub("auth")
    if auth:
        user, password = auth.params.get("username", ("", 0))[0], auth.params.get("password", ("", 0))[0]
        head["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        notes.append("<auth> basic: carried as an Authorization header (keep the route file private)")
    if head:
        table["headers"] = head
    for key in ("open_timeout", "read_timeout"):
        if key in p:
            table[key] = _number(_param(p, key, seconds))
        else:
            notes.append(f"{key}: not set: out_http waits Net::HTTP's {NET_HTTP_TIMEOUT} s; "
                         f"the route keeps bus's default {getattr(Route, key):g} s")
    for fluentd_key, key in _TLS_FILES.items():
        if fluentd_key in p:
            table[key] = p[fluentd_key]
    if "tls_verify_mode" in p:
        table["tls_verify"] = p["tls_verify_mode"].strip().lower() != "none"
        if not table["tls_verify"]:
            notes.append("tls_verify_mode none: carried as tls_verify = false (certificates are not checked)")
    if "proxy" in p:
        table["proxy"] = p["proxy"].strip()
        notes.append("proxy: carried as the route's proxy" + (" (it holds a password: keep the route file private)"
                                                              if "@" in table["proxy"] else ""))
    if p.get("compress", "text").strip() == "gzip":
        table["compress"] = "gzip"
        notes.append('compress gzip: carried as compress = "gzip" (Content-Encoding: gzip)')
    elif p.get("compress", "text").strip() != "text":
        raise ValueError(f"compress {p['compress']!r}: out_http knows text and gzip only")
    if "retryable_response_codes" in p:
        table["retryable_statuses"] = _param(p, "retryable_response_codes", _codes)
    else:
        notes.append("retryable_response_codes: not set; out_http retries only 503, bus retries 408, 425, 429 and 5xx "
                     "(add retryable_statuses = [503] to keep Fluentd's behaviour)")
    notes += [f"{key}: not carried: {_MATCH_NOT_CARRIED.get(key, 'a route has no such setting')}"
              for key in p if key not in _CARRIED_MATCH]
    notes += [f"<{sub.name}>: not carried: bus has no such section for a route"
              for sub in match.sections if sub.name not in ("buffer", "format", "auth")]
    buffer = match.sub("buffer")
    notes += _buffer(buffer, table) if buffer else [
        "<buffer>: none; out_http then gives up after retry_timeout 72h, bus retries for ever"]
    return table, notes


def _patterns(arg: str) -> list[str]:
    for pattern in arg.split():
        try:
            compile_pattern(pattern)
        except RouteError as exc:
            raise ValueError(str(exc)) from None
    return arg.split()


def _endpoint(p: dict[str, str]) -> str:
    if "endpoint" not in p:
        raise ValueError("it has no endpoint")
    if "#{" in p["endpoint"]:
        raise ValueError(f"endpoint {p['endpoint']!r} embeds Ruby code; write the URL out")
    # Other chunk-key placeholders, and strftime's %Y... (not a %XX percent-escape).
    other = re.findall(r"\$\{(?!tag(?:\[-?\d+\])?\})[^}]*\}|%(?![0-9A-Fa-f]{2})[A-Za-z]", p["endpoint"])
    if other:
        raise ValueError(f"endpoint uses {', '.join(sorted(set(other)))}: bus fills in only ${{tag}} and ${{tag[N]}}")
    return p["endpoint"]


def _body(match: Section, p: dict[str, str], table: dict[str, Any]) -> list[str]:
    """Content type and body format: bus sends each record as JSON; report what out_http would do otherwise."""
    notes = []
    json_array = _param(p, "json_array", boolean, False)
    fmt = match.sub("format")
    fmt_type = fmt.params.get("@type", ("json", 0))[0] if fmt else "json"
    if fmt_type != "json":
        notes.append(f"<format> @type {fmt_type}: not carried: bus sends each record as JSON")
    if "content_type" in p:
        table["content_type"] = p["content_type"]
    elif fmt_type == "json" and not json_array:
        # out_http's default for its json format: one JSON line per record.
        table["content_type"] = "application/x-ndjson"
        notes.append("content_type: not set; out_http then sends application/x-ndjson (one JSON line), so the route does too")
    if json_array:
        buffer = match.sub("buffer")
        records = buffer.params.get("chunk_limit_records", (None, 0))[0] if buffer else None
        table["batch_max"] = min(int(records), MAX_BATCH) if records and records.isdigit() and int(records) > 0 \
            else DEFAULT_JSON_ARRAY_BATCH
        table.setdefault("content_type", "application/json")
        notes.append(f"json_array true: kept as batch_max = {table['batch_max']} (a JSON array of the events of one tag "
                     "per request" + ("" if records else "; out_http batches by chunk size, bus by count") + ")")
    return notes


def _buffer(buffer: Section, table: dict[str, Any]) -> list[str]:
    p = {k: v for k, (v, _) in buffer.params.items()}
    notes = []
    if buffer.arg:
        notes.append(f"<buffer {buffer.arg}> chunk keys: not needed: bus renders the endpoint per event")
    forever = _param(p, "retry_forever", boolean, False)
    if forever:
        notes.append("retry_forever true: kept (no max_attempts: bus retries until delivered)")
    elif "retry_max_times" in p:
        table["max_attempts"] = _param(p, "retry_max_times", int) + 1
        notes.append(f"retry_max_times {p['retry_max_times']}: kept as max_attempts = {table['max_attempts']} "
                     "(the first attempt plus the retries); then the event is parked as dead, not dropped")
    if "retry_timeout" in p and not forever:
        notes.append(f"retry_timeout {p['retry_timeout']}: not carried: bus counts attempts, not time "
                     "(set max_attempts)")
    elif not forever and "retry_max_times" not in p:
        notes.append("retry_timeout: out_http gives up after 72h by default; not carried, bus retries for ever")
    if "retry_max_interval" in p:
        table["retry_max_interval"] = _number(_param(p, "retry_max_interval", seconds))
    if "retry_wait" in p and _param(p, "retry_wait", seconds) != 1:
        notes.append(f"retry_wait {p['retry_wait']}: not carried: bus's backoff starts at 1 s")
    if "retry_exponential_backoff_base" in p and _param(p, "retry_exponential_backoff_base", float) != 2:
        notes.append(f"retry_exponential_backoff_base {p['retry_exponential_backoff_base']}: not carried: bus doubles")
    if "total_limit_size" in p:
        notes.append(f"total_limit_size {p['total_limit_size']}: not carried: bus's backlog_limit counts events, "
                     "not bytes; set it by hand if the route needs a ceiling")
    for key, value in p.items():
        if key == "retry_type" and value != "exponential_backoff":
            notes.append(f"retry_type {value}: not carried: bus always backs off exponentially")
        elif key in _BUFFER_SAME:
            notes.append(f"{key} {value}: not needed: {_BUFFER_SAME[key]}")
        elif key not in _BUFFER_CARRIED:
            notes.append(f"{key} {value}: not carried: bus has no such buffer setting")
    return notes


def _param(params: dict[str, str], key: str, read: Any, default: Any = None) -> Any:
    """params[key] read by `read`, default when absent; a ValueError names the key."""
    if key not in params:
        return default
    try:
        return read(params[key])
    except ValueError as exc:
        raise ValueError(f"{key} {params[key]!r}: {exc}") from None


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _codes(value: str) -> list[int]:
    items = json.loads(value) if value.lstrip().startswith("[") else [v for v in value.split(",") if v.strip()]
    try:
        return [int(str(v).strip()) for v in items]
    except ValueError:
        raise ValueError("not a list of status codes") from None


def _route_name(match: Section) -> str:
    source = match.params.get("@id", (match.arg, 0))[0]
    words = re.findall(r"[A-Za-z0-9_]+", source)
    return "-".join(words)[:40].strip("-") or "all"


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _toml(table: dict[str, Any], comment: str, destinations: Sequence[dict[str, Any]] = ()) -> str:
    lines = [f"# {comment}"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    for dest in destinations:
        lines += ["", "[[destinations]]", *(f"{key} = {_toml_value(value)}" for key, value in dest.items())]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")
