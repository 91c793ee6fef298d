"""The HTTP ingress: a werkzeug WSGI app that turns POST /<tag> into accepted events."""
from __future__ import annotations

import logging
from typing import Callable, Iterable

import orjson
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .. import intake
from ..errors import BodyTooLarge, BusError, InvalidBody, InvalidTag, NoRoute, Unavailable
from ..journal import REDIS_DOWN
from .bodies import parse_records

log = logging.getLogger("bus.ingress")

# The one table from our error types to HTTP statuses.
STATUS = {InvalidTag: 400, InvalidBody: 400, NoRoute: 404, BodyTooLarge: 413, Unavailable: 503}

URLS = Map([
    Rule("/healthz", endpoint="healthz", methods=["GET"]),
    Rule("/<path:tag>", endpoint="events", methods=["POST"]),
])


def _json(payload: object, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype="application/json", headers=headers)


def _error(exc: BusError) -> Response:
    status = STATUS.get(type(exc), 400)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else None
    return _json({"error": str(exc)}, status, headers)


def _read_body(request: Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"the body is {request.content_length} bytes; the limit is {limit} (BUS_MAX_BODY)")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise BodyTooLarge(f"the body is over the limit of {limit} bytes (BUS_MAX_BODY)")
    return body


def post_events(bus: intake.Intake, request: Request, tag: str) -> Response:
    body = _read_body(request, bus.settings.max_body)
    records = parse_records(body, request.content_type or "application/json", query=request.args,
                            content_encoding=request.headers.get("Content-Encoding", ""), limit=bus.settings.max_body)
    ids = intake.accept(bus, tag, records)
    return _json({"ids": ids}, 202)


def healthz(bus: intake.Intake) -> Response:
    try:
        bus.redis.ping()
    except REDIS_DOWN as exc:
        return _json({"status": "unavailable", "error": f"Redis: {exc}"}, 503, {"Retry-After": str(Unavailable.retry_after)})
    return _json({"status": "ok"}, 200)


def make_app(bus: intake.Intake | None = None) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI app; `bus` defaults to the process-wide intake loaded from the environment."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = URLS.bind_to_environ(environ).match()
            current = bus or intake.default()
            if endpoint == "healthz":
                response = healthz(current)
            else:
                response = post_events(current, request, args["tag"])
        except BusError as exc:
            response = _error(exc)
        except MethodNotAllowed as exc:
            response = _json({"error": f"{request.method} is not allowed here; use {', '.join(exc.valid_methods or [])}"}, 405)
        except NotFound:
            response = _json({"error": f"nothing at {request.path}; POST events to /<tag>"}, 404)
        except HTTPException as exc:
            response = _json({"error": exc.description}, exc.code or 400)
        except Exception:
            log.exception("unexpected error handling %s %s", request.method, request.path)
            response = _json({"error": "internal error; nothing was accepted, see the ingress log"}, 500)
        return response(environ, start_response)

    return app
