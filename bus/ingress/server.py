"""Serve the HTTP ingress with gunicorn (threaded workers, keep-alive) from inside `bus serve`."""
from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from .. import auth, intake, logs
from .http import make_app


class _JsonLogger(Logger):
    """gunicorn's own lines (start, stop, worker timeouts) in the same JSON shape as ours."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        logs.use_format(self.error_log, "json")


class _Gunicorn(BaseApplication):
    def __init__(self, application: Any, options: dict[str, Any]):
        self.options = options
        self.application = application
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.application


def serve(bus: intake.Intake, bind: str, workers: int = 2, threads: int = 8,
          tokens: list[auth.Token] | None = None) -> None:
    """Run until SIGTERM/SIGINT; gunicorn lets in-flight requests finish (graceful_timeout)."""
    logs.configure(bus.settings.log_format)
    options: dict[str, Any] = {"logger_class": _JsonLogger} if bus.settings.log_format == "json" else {}
    _Gunicorn(make_app(bus, tokens), {
        **options,
        "bind": bind,
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "keepalive": 5,
        "timeout": 30,
        "graceful_timeout": 20,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "bus-ingress",
        # Request line and header limits: oversized heads are refused by gunicorn before the app runs.
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
    }).run()
