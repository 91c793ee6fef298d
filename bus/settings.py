"""Every environment variable the bus reads, with its default, in one place."""
from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .wire.target import RedisTarget

from .errors import ConfigError
from .logs import redact
from .proxies import ProxyEnv, from_environment
from .trust import Trust

# Fluentd's in_http body_size_limit default.
DEFAULT_MAX_BODY = 32 * 1024 * 1024
LOG_FORMATS = ("text", "json")
# A million waiting events of ~1 KiB (the SPEC's backlog) fit with room to spare; a laptop keeps the rest.
DEFAULT_REDIS_MAXMEMORY = "2gb"
_REDIS_MEMORY = re.compile(r"[1-9][0-9]*(b|k|kb|m|mb|g|gb)?", re.IGNORECASE)
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Delivered events stay this long in Redis before the archive takes them: long enough that a
# just-delivered event is looked at where it was delivered and the mover works in full batches,
# short enough that Redis holds ~2 minutes of traffic (~160 MB at 440 events/s, 1.4 KB each, is
# well inside the 2 GB maxmemory bus up gives it).
DEFAULT_HOT_WINDOW = 120.0
ARCHIVE_SCHEMES = ("sqlite", "postgresql", "postgres")
# The shard of routes without `shard`: BUS_REDIS_URL's Redis.
DEFAULT_SHARD = "default"
_SHARD_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ForwardSettings:
    """The Fluentd forward listener's knobs; the handshake is on when shared_key is set."""

    shared_key: str | None = None
    self_hostname: str = "bus"
    username: str | None = None
    password: str | None = None
    # A frame (or the handshake) that has started must arrive whole within this many seconds:
    # slow-loris and stalled clients are closed, nothing of their partial frame accepted.
    read_timeout: float = 30.0
    # None: an idle connection stays open, as with Fluentd's in_forward (loggers keep one open).
    idle_timeout: float | None = None
    max_connections: int = 1000
    # One client address may hold this many of them (a host of Docker containers logging through
    # the fluentd driver opens one per container).
    max_connections_per_client: int = 256
    # Tag patterns the listener accepts (BUS_FORWARD_TAGS); empty: every tag. Whoever has the
    # shared key may send these, as a token's patterns scope it on the HTTP port.
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class HttpSettings:
    """Limits of the HTTP port that uvicorn has none of (see bus/ingress/guarded_protocol.py)."""

    # A request's head and body must arrive whole within this many seconds of its first byte,
    # however slowly they trickle in: a slow-loris client would otherwise hold a connection for ever.
    read_timeout: float = 30.0
    # Open connections from one client address, per ingress worker process. A host runs 4-64
    # keep-alive producers; 256 leaves room for bursts and reconnects without letting one
    # host take most of a worker's 1000 (uvicorn's limit_concurrency in bus serve).
    max_connections_per_client: int = 256
    # Host names (globs) an open bus answers to besides IP addresses, dotless names and *.localhost
    # (BUS_ALLOWED_HOSTS; see ingress/origin.py: DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutboundSettings:
    """How deliveries reach endpoints, the same for every route of the process."""

    # SSL_CERT_FILE / SSL_CERT_DIR: the store TLS trusts instead of the system's (bus/trust.py).
    trust: Trust = field(default_factory=Trust)
    # HTTP_PROXY, HTTPS_PROXY, NO_PROXY (and their lowercase names), as curl reads them (bus/proxies.py).
    proxies: ProxyEnv = field(default_factory=ProxyEnv)
    # BUS_CONNECTION_MAX_AGE: seconds from its opening a kept connection is reused, so a DNS change is
    # seen within it (libcurl's CURLOPT_MAXLIFETIME_CONN; a reconnect every 2 minutes costs nothing).
    connection_max_age: float = 120.0


@dataclass(frozen=True)
class Settings:
    redis_url: str
    routes_dir: Path
    max_body: int
    redis_timeout: float
    visibility_timeout: int
    var_dir: Path
    retention: int
    tokens_file: Path | None
    max_batch: int
    # BUS_ARCHIVE_URL: where delivered events go once out of the hot window ('' when off: they
    # stay in Redis until retention, as before the archive existed). BUS_HOT_WINDOW: seconds.
    archive_url: str = ""
    hot_window: float = DEFAULT_HOT_WINDOW
    log_format: str = "text"  # BUS_LOG_FORMAT: worker and ingress logs as text lines or one JSON object a line
    # BUS_REDIS_MAXMEMORY: the maxmemory `bus up` (and docker-compose) give Redis, in Redis's units.
    redis_maxmemory: str = DEFAULT_REDIS_MAXMEMORY
    # BUS_REDIS_MEMORY_HIGH: the ways in refuse (503) above this fraction of Redis's maxmemory, so
    # that workers, which only write between it and the limit, can still record attempts and drain.
    redis_memory_high: float = 0.9
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    # BUS_IDEMPOTENCY_WINDOW: how long an Idempotency-Key is remembered (default: the retention, as the
    # contract says); each remembered key costs ~150 bytes of Redis memory.
    idempotency_window: int = 7 * 24 * 3600
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    # BUS_UNIX_SOCKET_MODE: the permissions of `bus serve`'s unix sockets (HTTP and forward); who may
    # connect may send events, so owner and group only by default.
    unix_socket_mode: int = 0o660
    # BUS_CELERY_CONFIG: the Celery settings file; None: ./celeryconfig.py if there, else the defaults.
    celery_config: Path | None = None
    # BUS_ACK_REPLICAS / BUS_ACK_TIMEOUT_MS: an accept counts once this many replicas hold it (Redis WAIT).
    ack_replicas: int = 0
    ack_timeout_ms: int = 1000
    # BUS_REDIS_SENTINEL_MASTER and BUS_REDIS_SENTINEL_PASSWORD, for a sentinel:// BUS_REDIS_URL.
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: str | None = field(default=None, repr=False)
    # BUS_REDIS_SHARDS: (name, URL) per extra Redis; a route with `shard = "name"` lives there, the
    # rest on BUS_REDIS_URL (shard "default"). Sentinel shards name their primary in
    # BUS_REDIS_SENTINEL_MASTER_<NAME> (else BUS_REDIS_SENTINEL_MASTER).
    redis_shards: tuple[tuple[str, str], ...] = ()
    shard_masters: tuple[tuple[str, str], ...] = ()
    # BUS_WORKER_SHARD: the shard a Celery worker process consumes from (its broker and journal);
    # `bus worker` sets it for each worker process it starts.
    worker_shard: str = DEFAULT_SHARD
    # BUS_POOL_RECYCLE_IDLE: seconds a worker is idle after its last task before it replaces, one at a
    # time, the prefork pool processes that ran tasks (their pages copied from the main process go
    # back to being shared, worker/recycle.py); 0 turns it off.
    pool_recycle_idle: float = 30.0
    # Whether BUS_REDIS_URL was set; when not, the CLI looks for the `bus up` of ./var (local_up.py).
    redis_url_given: bool = True
    # The environment as read once, for route secrets given as "env:NAME"; kept out of repr.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def redis(self) -> RedisTarget:
        """What BUS_REDIS_URL names (one server, or Sentinels), as every Redis client of the bus takes it."""
        return redis_target(self)

    @property
    def shard_names(self) -> tuple[str, ...]:
        """Every Redis of the bus by shard name, BUS_REDIS_URL's ("default") first."""
        return (DEFAULT_SHARD, *(name for name, _ in self.redis_shards))

    def shard(self, name: str) -> RedisTarget:
        """The Redis of shard `name` ("default": BUS_REDIS_URL)."""
        if name == DEFAULT_SHARD:
            return self.redis
        from .wire.target import parse

        url = dict(self.redis_shards)[name]
        master = dict(self.shard_masters).get(name, self.redis_sentinel_master)
        return parse(url, master, self.redis_sentinel_password, setting=f"BUS_REDIS_SHARDS ({name})")

    @property
    def worker_redis(self) -> RedisTarget:
        """The Redis a worker process talks to: its shard's (BUS_WORKER_SHARD), BUS_REDIS_URL's by default."""
        return self.shard(self.worker_shard)


def redis_target(config: Settings) -> RedisTarget:
    from .wire.target import parse

    return parse(config.redis_url, config.redis_sentinel_master, config.redis_sentinel_password)


def _shards(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """BUS_REDIS_SHARDS="name=URL,name=URL": every name once, none called "default" (BUS_REDIS_URL's)."""
    raw = env.get("BUS_REDIS_SHARDS") or ""
    shards: list[tuple[str, str]] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, sep, url = (s.strip() for s in part.partition("="))
        if not sep or not url:
            raise ConfigError(f"BUS_REDIS_SHARDS: {redact(part)!r} is not name=URL; give each shard as "
                              "name=redis://HOST:PORT/DB (or a sentinel:// URL), joined by ','")
        if not _SHARD_NAME.fullmatch(name):
            raise ConfigError(f"BUS_REDIS_SHARDS: shard name {name!r} must be letters, digits, '_' or '-'")
        if name == DEFAULT_SHARD:
            raise ConfigError(f"BUS_REDIS_SHARDS: {DEFAULT_SHARD!r} is BUS_REDIS_URL's shard (routes without "
                              "`shard`); give this Redis another name, or make it BUS_REDIS_URL")
        if name in dict(shards):
            raise ConfigError(f"BUS_REDIS_SHARDS: shard {name!r} is named twice; give each Redis its own name")
        shards.append((name, url))
    return tuple(shards)


def _shard_masters(env: dict[str, str], shards: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    found = []
    for name, _ in shards:
        master = env.get(f"BUS_REDIS_SENTINEL_MASTER_{name.upper().replace('-', '_')}")
        if master:
            found.append((name, master))
    return tuple(found)


def _check_shards(config: Settings) -> None:
    """Each shard's URL parses, no two shards (BUS_REDIS_URL included) are the same Redis, and
    BUS_WORKER_SHARD names a shard."""
    from .broker.celery_checks import server_id

    seen: dict[tuple, str] = {}
    for name in config.shard_names:
        target = config.shard(name)
        where = server_id(target.url) + ((target.master,) if target.sentinels else ())
        if where in seen:
            first = "BUS_REDIS_URL" if seen[where] == DEFAULT_SHARD else f"shard {seen[where]!r}"
            raise ConfigError(f"BUS_REDIS_SHARDS: shard {name!r} is the same Redis as {first} "
                              f"({target.shown}); each shard must be a Redis of its own")
        seen[where] = name
    if config.worker_shard not in config.shard_names:
        raise ConfigError(f"BUS_WORKER_SHARD={config.worker_shard!r} is not a shard; shards are "
                          f"{', '.join(config.shard_names)} (BUS_REDIS_SHARDS)")


def _count(env: dict[str, str], name: str, default: int) -> int:
    """A whole number of 0 or more."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.strip().isdigit():
        raise ConfigError(f"{name}={raw!r} is not a whole number of 0 or more")
    return int(raw)


def _number(env: dict[str, str], name: str, default: float, cast: type = float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; unset it or give a positive {cast.__name__}") from None
    if not math.isfinite(value) or value <= 0:
        # inf or nan would pass as a timeout and break it (socket timeouts refuse them).
        raise ConfigError(f"{name}={raw!r} must be a positive, finite number")
    return value


def _seconds_or_off(env: dict[str, str], name: str, default: float) -> float:
    """A number of seconds where 0 means off (0.0 then): every such setting reads through here, so
    '0', '0.0' and ' 0 ' all turn it off and a bad value gets the one message."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if value == 0:
        return 0.0
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds; give a positive number, or 0 to turn it off")
    return value


def _duration(env: dict[str, str], name: str, default: int, minimum: int = 1, too_short: str = "") -> int:
    """A duration in BUS_RETENTION's syntax (90s, 30m, 12h, 7d, 2w or seconds), at least `minimum` seconds."""
    from .errors import BadFilter
    from .filters import parse_duration

    raw = env.get(name)
    if not raw:
        return default
    try:
        seconds = int(parse_duration(raw))
    except BadFilter:
        raise ConfigError(f"{name}={raw!r} is not a duration; use e.g. 7d, 12h or seconds") from None
    if seconds < minimum:
        raise ConfigError(f"{name}={raw!r} is under {minimum} s{too_short}")
    return seconds


def _retention(env: dict[str, str]) -> int:
    return _duration(env, "BUS_RETENTION", 7 * 24 * 3600, 60, "; delivered events would vanish before anyone looks")


def _hot_window(raw: str | None) -> float:
    from .errors import BadFilter
    from .filters import parse_duration

    if not raw:
        return DEFAULT_HOT_WINDOW
    try:
        seconds = parse_duration(raw)
    except BadFilter:
        raise ConfigError(f"BUS_HOT_WINDOW={raw!r} is not a duration; use e.g. 2m, 30s, 1h or seconds") from None
    if not 0 < seconds <= 86400:
        raise ConfigError(f"BUS_HOT_WINDOW={raw!r} must be more than 0 seconds and at most a day (24h)")
    return seconds


def _archive_url(raw: str | None, var_dir: Path) -> str:
    """'' for off; a sqlite:///PATH or postgresql://... URL otherwise (default: SQLite under BUS_VAR)."""
    if raw is None or raw.strip() == "":
        return f"sqlite:///{(var_dir / 'archive.sqlite3').absolute()}"
    raw = raw.strip()
    if raw == "off":
        return ""
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme not in ARCHIVE_SCHEMES:
        raise ConfigError(f"BUS_ARCHIVE_URL={redact(raw)!r}: use postgresql://USER@HOST:PORT/DB, "
                          "sqlite:///PATH or 'off'")
    if scheme == "sqlite" and not rest.startswith("/"):
        raise ConfigError(f"BUS_ARCHIVE_URL={raw!r}: a SQLite archive needs an absolute path, sqlite:///var/archive.sqlite3")
    if scheme != "sqlite":
        # Parsed here, so a typo in the URL is a clear error at start, not a traceback at the first read.
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict

        try:
            conninfo_to_dict(raw)
        except ProgrammingError as exc:
            raise ConfigError(f"BUS_ARCHIVE_URL={redact(raw)!r} is not a PostgreSQL URL: "
                              f"{str(exc).strip().splitlines()[0]}") from None
    return raw


def _secret(env: dict[str, str], name: str) -> str | None:
    """NAME, or the content of the file NAME_FILE (a Docker/Kubernetes secret), never both."""
    value, path = env.get(name) or None, env.get(f"{name}_FILE") or None
    if value and path:
        raise ConfigError(f"both {name} and {name}_FILE are set; keep one")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{name}_FILE={path!r} is empty")
    return value


def _forward(env: dict[str, str]) -> ForwardSettings:
    shared_key = _secret(env, "BUS_FORWARD_SHARED_KEY")
    username, password = env.get("BUS_FORWARD_USERNAME") or None, _secret(env, "BUS_FORWARD_PASSWORD")
    if bool(username) != bool(password):
        raise ConfigError("set both BUS_FORWARD_USERNAME and BUS_FORWARD_PASSWORD, or neither")
    if username and not shared_key:
        raise ConfigError("BUS_FORWARD_USERNAME needs BUS_FORWARD_SHARED_KEY: user authentication is part of the handshake")
    return ForwardSettings(
        shared_key=shared_key,
        self_hostname=env.get("BUS_FORWARD_SELF_HOSTNAME") or socket.gethostname(),
        username=username,
        password=password,
        read_timeout=_number(env, "BUS_FORWARD_READ_TIMEOUT", 30.0),
        idle_timeout=_seconds_or_off(env, "BUS_FORWARD_IDLE_TIMEOUT", 0.0) or None,  # None: never closed
        max_connections=int(_number(env, "BUS_FORWARD_MAX_CONNECTIONS", 1000, int)),
        max_connections_per_client=int(_number(env, "BUS_FORWARD_MAX_CONNECTIONS_PER_CLIENT", 256, int)),
        tags=_forward_tags(env.get("BUS_FORWARD_TAGS")),
    )


def _forward_tags(raw: str | None) -> tuple[str, ...]:
    from .errors import RouteError
    from .tags import compile_patterns

    patterns = tuple(p for part in _names(raw) for p in part.split())
    try:
        if patterns:
            compile_patterns(list(patterns))
    except RouteError as exc:
        raise ConfigError(f"BUS_FORWARD_TAGS={raw!r}: {exc}") from None
    return patterns


def load(env: dict[str, str] | None = None) -> Settings:
    """Read the environment once; callers pass the result around as a value."""
    env = dict(os.environ if env is None else env)
    config = Settings(
        redis_url=env.get("BUS_REDIS_URL") or DEFAULT_REDIS_URL,
        redis_url_given=bool(env.get("BUS_REDIS_URL")),
        redis_shards=_shards(env),
        shard_masters=_shard_masters(env, _shards(env)),
        worker_shard=env.get("BUS_WORKER_SHARD") or DEFAULT_SHARD,
        routes_dir=Path(env.get("BUS_ROUTES") or "./routes"),
        max_body=int(_number(env, "BUS_MAX_BODY", DEFAULT_MAX_BODY, int)),
        redis_timeout=_number(env, "BUS_REDIS_TIMEOUT", 2.0),
        visibility_timeout=int(_number(env, "BUS_VISIBILITY_TIMEOUT", 60, int)),
        var_dir=Path(env.get("BUS_VAR") or "./var"),
        retention=_retention(env),
        archive_url=_archive_url(env.get("BUS_ARCHIVE_URL"), Path(env.get("BUS_VAR") or "./var")),
        hot_window=_hot_window(env.get("BUS_HOT_WINDOW")),
        tokens_file=Path(env["BUS_TOKENS"]) if env.get("BUS_TOKENS") else None,
        max_batch=int(_number(env, "BUS_MAX_BATCH", 10_000, int)),
        log_format=_log_format(env.get("BUS_LOG_FORMAT")),
        redis_maxmemory=_redis_maxmemory(env.get("BUS_REDIS_MAXMEMORY")),
        redis_memory_high=_fraction(env, "BUS_REDIS_MEMORY_HIGH", 0.9),
        forward=_forward(env),
        http=HttpSettings(
            read_timeout=_number(env, "BUS_HTTP_READ_TIMEOUT", 30.0),
            max_connections_per_client=int(_number(env, "BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT", 256, int)),
            allowed_hosts=_names(env.get("BUS_ALLOWED_HOSTS")),
        ),
        idempotency_window=_duration(env, "BUS_IDEMPOTENCY_WINDOW", _retention(env)),
        ack_replicas=_count(env, "BUS_ACK_REPLICAS", 0),
        ack_timeout_ms=int(_number(env, "BUS_ACK_TIMEOUT_MS", 1000, int)),
        redis_sentinel_master=env.get("BUS_REDIS_SENTINEL_MASTER") or "mymaster",
        redis_sentinel_password=_secret(env, "BUS_REDIS_SENTINEL_PASSWORD"),
        celery_config=Path(env["BUS_CELERY_CONFIG"]) if env.get("BUS_CELERY_CONFIG") else None,
        outbound=_outbound(env),
        unix_socket_mode=_mode(env.get("BUS_UNIX_SOCKET_MODE")),
        pool_recycle_idle=_seconds_or_off(env, "BUS_POOL_RECYCLE_IDLE", 30.0),
        environ=env,
    )
    redis_target(config)  # a broken BUS_REDIS_URL stops start-up, naming what is wrong
    _check_shards(config)  # and so does a broken BUS_REDIS_SHARDS
    return config


def _mode(raw: str | None) -> int:
    if not raw:
        return 0o660
    try:
        mode = int(raw, 8)
    except ValueError:
        mode = -1
    if not 0 < mode <= 0o777:
        raise ConfigError(f"BUS_UNIX_SOCKET_MODE={raw!r} is not a file mode; give octal permissions such as 660 or 600")
    return mode


def _outbound(env: dict[str, str]) -> OutboundSettings:
    try:
        proxy_env = from_environment(env)
    except ValueError as exc:
        raise ConfigError(f"{exc}; fix the variable or unset it") from None
    return OutboundSettings(trust=Trust(cert_file=_existing(env, "SSL_CERT_FILE", Path.is_file, "file"),
                                        cert_dir=_existing(env, "SSL_CERT_DIR", Path.is_dir, "folder")),
                            proxies=proxy_env,
                            connection_max_age=_number(env, "BUS_CONNECTION_MAX_AGE", 120.0))


def _existing(env: dict[str, str], name: str, test, kind: str) -> str | None:
    raw = env.get(name) or None
    if raw and not test(Path(raw)):
        # OpenSSL would quietly trust nothing from it, and every TLS delivery would fail its certificate check.
        raise ConfigError(f"{name}={raw!r} is not a {kind}; point it at the CA {kind} to trust, or unset it "
                          "to trust the system's store")
    return raw


def _names(raw: str | None) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped."""
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def _log_format(raw: str | None) -> str:
    value = (raw or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"BUS_LOG_FORMAT={raw!r}: use 'text' or 'json'")
    return value


def _redis_maxmemory(raw: str | None) -> str:
    value = (raw or DEFAULT_REDIS_MAXMEMORY).strip()
    if not _REDIS_MEMORY.fullmatch(value):
        raise ConfigError(f"BUS_REDIS_MAXMEMORY={raw!r}: give a size in Redis's units, e.g. 512mb or 2gb")
    return value.lower()


def _fraction(env: dict[str, str], name: str, default: float) -> float:
    value = _number(env, name, default)
    if value > 1:
        raise ConfigError(f"{name}={env[name]!r} is a fraction of Redis's maxmemory: give one from 0 to 1, e.g. 0.9")
    return value
