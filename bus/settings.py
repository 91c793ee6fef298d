"""Every environment variable the bus reads, with its default, in one place."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import ConfigError

# Fluentd's in_http body_size_limit default.
DEFAULT_MAX_BODY = 32 * 1024 * 1024
LOG_FORMATS = ("text", "json")


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
    log_format: str = "text"  # BUS_LOG_FORMAT: worker and ingress logs as text lines or one JSON object a line
    # The environment as read once, for route secrets given as "env:NAME"; kept out of repr.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)


def _number(env: dict[str, str], name: str, default: float, cast: type = float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; unset it or give a positive {cast.__name__}") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


def _retention(raw: str | None) -> int:
    from .filters import parse_duration
    from .errors import BadFilter

    if not raw:
        return 7 * 24 * 3600
    try:
        seconds = int(parse_duration(raw))
    except BadFilter:
        raise ConfigError(f"BUS_RETENTION={raw!r} is not a duration; use e.g. 7d, 12h or seconds") from None
    if seconds < 60:
        raise ConfigError(f"BUS_RETENTION={raw!r} is under a minute; delivered events would vanish before anyone looks")
    return seconds


def load(env: dict[str, str] | None = None) -> Settings:
    """Read the environment once; callers pass the result around as a value."""
    env = dict(os.environ if env is None else env)
    return Settings(
        redis_url=env.get("BUS_REDIS_URL") or "redis://127.0.0.1:6379/0",
        routes_dir=Path(env.get("BUS_ROUTES") or "./routes"),
        max_body=int(_number(env, "BUS_MAX_BODY", DEFAULT_MAX_BODY, int)),
        redis_timeout=_number(env, "BUS_REDIS_TIMEOUT", 2.0),
        visibility_timeout=int(_number(env, "BUS_VISIBILITY_TIMEOUT", 60, int)),
        var_dir=Path(env.get("BUS_VAR") or "./var"),
        retention=_retention(env.get("BUS_RETENTION")),
        tokens_file=Path(env["BUS_TOKENS"]) if env.get("BUS_TOKENS") else None,
        max_batch=int(_number(env, "BUS_MAX_BATCH", 10_000, int)),
        log_format=_log_format(env.get("BUS_LOG_FORMAT")),
        environ=env,
    )


def _log_format(raw: str | None) -> str:
    value = (raw or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"BUS_LOG_FORMAT={raw!r}: use 'text' or 'json'")
    return value
