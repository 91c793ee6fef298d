"""Run `bus serve`: the HTTP ingress under gunicorn and, next to it, the Fluentd forward listener."""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from .. import auth, intake, logs
from . import guarded_worker
from .http import make_app

log = logging.getLogger("bus.serve")
# gunicorn's own graceful_timeout is 20 s; the parent waits a little longer before killing it.
HTTP_STOP_GRACE = 25.0


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
    """Run the HTTP ingress until SIGTERM/SIGINT; gunicorn lets in-flight requests finish (graceful_timeout)."""
    logs.configure(bus.settings.log_format)
    options: dict[str, Any] = {"logger_class": _JsonLogger} if bus.settings.log_format == "json" else {}
    _Gunicorn(make_app(bus, tokens), {
        **options,
        "bind": bind,
        "workers": workers,
        # gthread plus a read deadline per request and a cap on connections per client (slow-loris, floods).
        "worker_class": guarded_worker.configure(bus.settings.http.read_timeout,
                                                 bus.settings.http.max_connections_per_client),
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


def serve_with_forward(bus: intake.Intake, bind: str, forward: tuple[str, int], workers: int = 2, threads: int = 8) -> int:
    """The forward listener in this process, the HTTP ingress in a child `bus serve --forward off`.

    gunicorn's master forks and reaps workers (and would reap any other child of
    its process), and forking a process that runs listener threads risks
    inheriting held locks; so the listener lives in a plain parent process that
    supervises gunicorn: SIGTERM/SIGINT/SIGHUP stop both, and if either side
    dies the other is stopped and `bus serve` exits 1.
    """
    from .forward import ForwardServer

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    server = ForwardServer(bus, *forward).start()  # binds first: a busy port fails before anything else starts
    stop = threading.Event()
    signalled: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        signalled.append(signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    http = subprocess.Popen([sys.executable, "-m", "bus", "serve", "--forward", "off", "--bind", bind,
                             "--workers", str(workers), "--threads", str(threads)])
    try:
        while not stop.wait(0.5):
            if http.poll() is not None:
                log.error("the HTTP ingress (gunicorn, pid %d) exited with status %d; stopping", http.pid, http.returncode)
                return 1
            if not server.serving:
                log.error("the forward listener stopped serving; stopping")
                return 1
        log.info("signal %d: stopping the HTTP ingress and the forward listener", signalled[0])
        return 0
    finally:
        if http.poll() is None:
            http.send_signal(signal.SIGTERM)
        server.stop()
        try:
            http.wait(HTTP_STOP_GRACE)
        except subprocess.TimeoutExpired:
            log.error("the HTTP ingress did not stop within %gs; killing it", HTTP_STOP_GRACE)
            http.kill()
            http.wait()
