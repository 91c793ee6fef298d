"""Log lines as text or as one JSON object a line (BUS_LOG_FORMAT=json), for workers and the ingress alike.

A record's structured fields travel in `extra={"bus": {...}}`: the text format
shows the message alone, the JSON format adds the fields as top-level keys.
Nothing here ever sees a request's or a route's headers; URLs and error texts
pass through `redact` first, since endpoints carry tokens in query strings.
"""
from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

FIELDS = "bus"
_QUERY_VALUE = re.compile(r"([?&;][^=&\s#'\"]+=)[^&;\s#'\")]+")
_USERINFO = re.compile(r"(?<=//)[^/@\s'\"]+@")


def redact(text: str) -> str:
    """`text` with URL query values and user:password@ replaced by '***' (tokens live there)."""
    return _USERINFO.sub("***@", _QUERY_VALUE.sub(r"\1***", text))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        line.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def use_format(logger: logging.Logger, log_format: str) -> None:
    """Give every handler of `logger` the JSON formatter when the format is json; text keeps theirs."""
    if log_format == "json":
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Root logging for processes that do not set it up themselves (the ingress)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else
                         logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
