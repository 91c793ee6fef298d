"""Run `bus serve`: the HTTP ingress under uvicorn and, next to it, the Fluentd forward listener."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

import uvicorn

from .. import intake, logs
from . import unix_socket
from .asgi import THREADS_ENV
from .guarded_protocol import GuardedProtocol
from .quiet_server import QuietServer
from .unix_socket import unix_path

if TYPE_CHECKING:
    from .forward import ForwardServer

log = logging.getLogger("bus.serve")
APP = "bus.ingress.asgi:from_environment"
# uvicorn lets in-flight requests finish for this long on SIGTERM; the parent waits a little longer.
GRACEFUL = 20
HTTP_STOP_GRACE = 25.0


def serve(bus: intake.Intake, bind: str, workers: int = 2, threads: int = 8) -> None:
    """Run the HTTP ingress until SIGTERM/SIGINT; in-flight requests finish first (up to GRACEFUL s).

    Each worker process runs asgi.from_environment(): settings, tokens and limits come from the
    environment this process has, so every worker reads the same ones."""
    logs.configure(bus.settings.log_format)
    os.environ[THREADS_ENV] = str(threads)
    path = unix_path(bind)
    if path is None:
        host, _, port = bind.rpartition(":")
        _uvicorn(workers, host=host.strip("[]"), port=int(port))
        return
    # Bound here, with its mode, before uvicorn listens on it (uvicorn's own uds= would chmod it 666).
    sock, socket_file = unix_socket.bind(path, bus.settings.unix_socket_mode)
    # uvicorn re-raises the SIGTERM/SIGINT it stopped on once it is done, which would kill this process
    # before the socket file is removed: these handlers turn that last signal into a normal exit.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_quietly)
    try:
        _uvicorn(workers, fd=sock.fileno())
    finally:
        socket_file.remove()
        sock.close()


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _uvicorn(workers: int, **where: Any) -> None:
    options = dict(
        factory=True, **where,
        # httptools' parser plus our read deadline, per-client cap and head limits (slow-loris, floods).
        http=GuardedProtocol, loop="uvloop", lifespan="on",
        timeout_keep_alive=5, timeout_graceful_shutdown=GRACEFUL,
        # Per worker: past this many connections (or requests in progress) uvicorn answers 503.
        limit_concurrency=1000, backlog=2048,
        # Our logging (logs.configure in each worker) and no access log: a line per event would cost more than the event.
        log_config=None, access_log=False, server_header=False, proxy_headers=False,
        # On every answer, uvicorn's own 400 and 503 included: no browser reads a JSON error as a page.
        headers=[("X-Content-Type-Options", "nosniff")],
    )
    if workers > 1:
        uvicorn.run(APP, workers=workers, **options)
        return
    # One worker: uvicorn.run's own path (Server(config).run(), exit 3 if it never started), with a
    # main loop that sleeps until a signal stops it.
    server = QuietServer(uvicorn.Config(APP, **options))
    server.run()
    if not server.started:
        sys.exit(3)


def serve_with_forward(bus: intake.Intake, bind: str, forward: str, workers: int = 2, threads: int = 8) -> int:
    """The forward listener and the HTTP ingress; with one HTTP worker both in this process, with
    more the HTTP ingress in a child `bus serve --forward off`. If either side stops serving the
    other is stopped and `bus serve` exits 1; SIGTERM/SIGINT/SIGHUP stop both (exit 0)."""
    from .forward import ForwardServer

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    path = unix_path(forward)
    if path is None:
        host, _, port = forward.rpartition(":")
        server = ForwardServer(bus, host, int(port))  # binds first: a busy port fails before anything else starts
    else:
        server = ForwardServer.on_unix_socket(bus, path)
    if workers == 1:
        return _serve_beside(server, bus, bind, threads)
    server.start()
    return _serve_http_child(server, bind, workers, threads)


def _serve_beside(server: ForwardServer, bus: intake.Intake, bind: str, threads: int) -> int:
    """uvicorn in this process's main thread, the forward listener's threads beside it.

    With one HTTP worker uvicorn forks nothing, so nothing inherits the listener's threads; and a
    second interpreter for the HTTP side cost ~37 MiB of PSS and its own wake-ups (docs/performance.md,
    fifth round). A listener that stops serving stops uvicorn the way a SIGTERM does: its dying
    thread says so, rather than a watcher polling it (docs/performance.md, "what still wakes")."""
    failed = threading.Event()

    def died() -> None:
        if not failed.is_set():
            log.error("the forward listener stopped serving; stopping")
            failed.set()
            os.kill(os.getpid(), signal.SIGTERM)

    # uvicorn re-raises the SIGTERM/SIGINT it stopped on once it is done: as an exit, so the listener
    # is stopped below rather than the process killed. A hang-up stops `bus serve` as they do.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_quietly)
    signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    server.start(on_death=died)
    http_failed = False
    try:
        serve(bus, bind, workers=1, threads=threads)
    except SystemExit as exc:
        http_failed = exc.code not in (0, None)  # 0: a signal; else uvicorn failed (e.g. its port taken)
        if http_failed:
            log.error("the HTTP ingress exited with status %s; stopping the forward listener", exc.code)
    finally:
        listener_failed = failed.is_set()
        failed.set()
        server.stop()
    return 1 if http_failed or listener_failed else 0


def _serve_http_child(server: ForwardServer, bind: str, workers: int, threads: int) -> int:
    """The forward listener here, the HTTP ingress in a child `bus serve --forward off`.

    uvicorn's supervisor starts and reaps its workers (and would reap any other child of its
    process), and forking a process that runs listener threads risks inheriting held locks; so with
    several HTTP workers the listener lives in a plain parent process that supervises uvicorn."""
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
                log.error("the HTTP ingress (uvicorn, pid %d) exited with status %d; stopping", http.pid, http.returncode)
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
