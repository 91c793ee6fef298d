"""Log formatting and redaction (pure): what reaches a log line."""
from __future__ import annotations

import json
import logging

from bus import logs


def test_redact_hides_query_values_and_url_credentials_but_keeps_where():
    error = ("ConnectionError: HTTPConnectionPool(host='10.0.0.5', port=80): Max retries exceeded with url: "
             "/hook/?token=abc123&team=x (Caused by NewConnectionError('refused'))")
    assert logs.redact(error) == ("ConnectionError: HTTPConnectionPool(host='10.0.0.5', port=80): Max retries exceeded "
                                  "with url: /hook/?token=***&team=*** (Caused by NewConnectionError('refused'))")
    assert logs.redact("https://user:pa55@staging.example/in?sig=s3cret") == "https://***@staging.example/in?sig=***"
    assert logs.redact("HTTP 503 from /api/orders/") == "HTTP 503 from /api/orders/"


def test_json_formatter_writes_message_and_structured_fields_on_one_line():
    record = logging.LogRecord("bus.delivery", logging.INFO, __file__, 1, "event %s done", ("e1",), None)
    record.bus = {"event_id": "e1", "attempt": 2, "status_code": None}
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "event e1 done" and parsed["level"] == "INFO" and parsed["logger"] == "bus.delivery"
    assert (parsed["event_id"], parsed["attempt"], parsed["status_code"]) == ("e1", 2, None)
    assert parsed["time"].endswith("+00:00")


def test_json_format_reaches_the_pool_processes_logger_too(monkeypatch):
    """billiard logs a pool process's exit through its own non-propagating logger: it must be JSON too."""
    import io

    from celery.utils.log import get_multiprocessing_logger

    from bus import celery as bus_celery

    monkeypatch.setenv("BUS_LOG_FORMAT", "json")
    handler = logging.StreamHandler(io.StringIO())
    get_multiprocessing_logger().addHandler(handler)
    try:
        bus_celery._log_format(logging.getLogger("bus-test-root"))
        assert isinstance(handler.formatter, logs.JsonFormatter)
    finally:
        get_multiprocessing_logger().removeHandler(handler)
