"""`bus up`: run Redis (AOF under ./var), the ingress, one worker per route and Flower; stop them all on Ctrl-C."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from . import journal, local_up, settings, supervise, up_fork
from .errors import ConfigError
from .routes import load_configured


def _start(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    # Own session: Ctrl-C reaches only `bus up`, which then stops children in order
    # (ingress first, Redis last) instead of all of them at once.
    print(f"bus up: starting {name}: {' '.join(argv)}", flush=True)
    return subprocess.Popen(argv, env=env, start_new_session=True)


def _fork(name: str, argv: list[str], main: Callable[[list[str]], int]) -> up_fork.Forked:
    print(f"bus up: starting {name}: bus {' '.join(argv)} (forked)", flush=True)
    return up_fork.start(f"bus {argv[0]}", argv, main)


def _wait_for_redis(url: str, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    client = journal.connect(url, 1.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"redis-server exited with status {proc.returncode}; see its log under ./var")
        try:
            client.ping()
            client.close()  # before the children fork: none of them may share its socket
            return
        except journal.REDIS_DOWN:
            time.sleep(0.1)
    raise ConfigError(f"redis-server did not answer on {url} within {timeout:.0f}s")


def _stop(procs: list[tuple[str, subprocess.Popen | up_fork.Forked]], grace: float = 20.0) -> None:
    for name, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                print(f"bus up: {name} did not stop in {grace:.0f}s; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(config: settings.Settings, bind: str, redis_port: int, flower_port: int, forward: str = "127.0.0.1:24224",
        ingress_workers: int = 1, *, child_main: Callable[[list[str]], int]) -> int:
    """child_main: what a forked child runs with its argv (the CLI's main, which calls this)."""
    # SIGTERM (docker stop, systemd, `timeout`) must stop the children too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    redis_server = shutil.which("redis-server")
    if not redis_server:
        raise ConfigError("redis-server is not installed; install it (apt-get install redis-server)")
    var = config.var_dir.resolve()
    running = local_up.read(var)
    if running is not None and running.alive and running.pid != os.getpid():
        raise ConfigError(f"another `bus up` (pid {running.pid}) runs with {var}; stop it first, or set BUS_VAR")
    (var / "redis").mkdir(parents=True, exist_ok=True)
    url = f"redis://127.0.0.1:{redis_port}/0"
    # Flower's API is open only because `bus up` binds everything to loopback.
    env = {"FLOWER_UNAUTHENTICATED_API": "true", **os.environ,
           "BUS_REDIS_URL": url, "BUS_ROUTES": str(config.routes_dir.resolve())}
    procs: list[tuple[str, subprocess.Popen | up_fork.Forked]] = []
    try:
        rproc = _start("redis", [
            redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(var / "redis"),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            # Redis's cron, 5 times a second instead of 10: most of an idle Redis's CPU. It also times out
            # blocked clients (the retry mover's BLPOP: at most 0.2 s late) and fsyncs what `everysec`
            # left unsynced when nothing else wakes Redis (at most 1.2 s after the write); see
            # docs/performance.md, issue 22.
            "--hz", "5",
            # Event hashes hold a body over the 64-byte default: keep them compact (~650 B less each).
            "--hash-max-listpack-value", "4096",
            # Bounded, and never an accepted event evicted to make room: near the limit the ingress
            # refuses with 503 and the workers drain what is in (journal/memory.py).
            "--maxmemory", config.redis_maxmemory, "--maxmemory-policy", "noeviction",
            "--logfile", str(var / "redis.log"), "--daemonize", "no",
        ], env)
        procs.append(("redis", rproc))
        _wait_for_redis(url, rproc)
        router = load_configured(config)
        # The ingress and the workers are forked from this process once it has imported what they run,
        # with their environment, so they share those pages (up_fork.py; docs/performance.md, issue 22).
        os.environ.update(env)
        up_fork.preload()
        # One HTTP process by default: uvicorn then serves in `bus serve`'s own child, with no supervisor
        # pinging workers twice a second and no spawned copies of the interpreter (docs/performance.md,
        # fifth round: 70 MiB of PSS and most of the idle CPU of the ingress, at the same e2e rate).
        procs.insert(0, ("ingress", _fork("ingress", ["serve", "--bind", bind, "--forward", forward,
                                                      "--workers", str(ingress_workers)], child_main)))
        # Without Flower nobody reads Celery's task events; a Flower started by hand asks for them.
        options = [] if flower_port else ["--no-task-events"]
        for route in router.routes:
            procs.insert(1, (f"worker {route.name}", _fork(f"worker {route.name}", ["worker", route.name, *options],
                                                            child_main)))
        if flower_port:
            procs.insert(1, ("flower", _start("flower", [sys.executable, "-m", "celery", "-A", "bus", "flower",
                                                          f"--port={flower_port}", "--address=127.0.0.1",
                                                          "--persistent=True", f"--db={var / 'flower.db'}"], env)))
            print(f"bus up: Flower on http://127.0.0.1:{flower_port}/", flush=True)
        if forward != "off":
            print(f"bus up: Fluentd forward listener on {forward}", flush=True)
        print(f"bus up: ingress on http://{bind}/ (POST /<tag>); Redis {url} with AOF in {var / 'redis'}; Ctrl-C stops all", flush=True)
        record = local_up.write(var, url)
        print(f"bus up: `bus` commands run in this directory without BUS_REDIS_URL use this Redis ({record})", flush=True)
        # From here on this process only waits and stops: it becomes supervise.py, which imports the
        # standard library only (same pid, same children; docs/performance.md, fifth round).
        supervise.block_signals()
        os.execv(sys.executable, [sys.executable, "-I", "-S", supervise.__file__, str(record),
                                  *(f"{name}={proc.pid}" for name, proc in procs)])
    except KeyboardInterrupt:
        print("bus up: stopping", flush=True)
        return 0
    finally:
        # Reached only when starting failed or was interrupted: once exec'd, supervise.py stops it all.
        local_up.remove(var)  # first: commands must not be sent to a Redis that is stopping
        _stop(procs)
