"""Exceptions a user of the bus can act on; each message says what was wrong and what to do."""


class BusError(Exception):
    """Base of every error the bus raises on purpose."""


class InvalidTag(BusError):
    """The tag is not 1-255 chars of dot-separated [A-Za-z0-9_-]+ parts."""


class InvalidBody(BusError):
    """The request body is not a JSON object, a JSON array of objects or NDJSON."""


class BodyTooLarge(BusError):
    """The request body is over the configured limit."""


class RequestTimeout(BusError):
    """The request's head or body did not arrive whole within BUS_HTTP_READ_TIMEOUT: nothing was accepted."""


class NoRoute(BusError):
    """No route matches the tag, or the matching route cannot build a URL for it."""


class Unavailable(BusError):
    """Redis cannot be reached in time: nothing was accepted, try again later."""

    retry_after = 5


class Unconfirmed(Unavailable):
    """The events are on the Redis primary but fewer replicas than BUS_ACK_REPLICAS confirmed them:
    the one refusal after which they may still be delivered (retry with the same Idempotency-Key)."""


class RedisFull(Unavailable):
    """Redis is at or near its maxmemory: nothing was accepted, try again once the workers have drained it."""


class ArchiveUnavailable(Unavailable):
    """The journal's archive (BUS_ARCHIVE_URL) did not answer: what is in Redis still answers; retry for the rest."""


class BacklogFull(Unavailable):
    """The route's backlog is at its backlog_limit: nothing was accepted, try again once it drains."""


class RouteError(BusError):
    """A route file is broken; the message names the file, the key and the problem."""


class ConfigError(BusError):
    """An environment variable or command-line value is invalid."""


class UnsupportedKombu(ConfigError):
    """The kombu or Celery installed is not one the bus's patches of them were written against."""


class BadFilter(BusError):
    """A journal filter (status, tag pattern, time) is malformed."""


class EventNotFound(BusError):
    """No event with that id in the journal (never accepted, expired or purged)."""


class IdempotencyConflict(BusError):
    """The Idempotency-Key was used before, for the same tag, with other records."""


class Unauthorized(BusError):
    """The request carries no token, or one the bus does not know."""


class Forbidden(BusError):
    """The token is known but may not do this (send this tag, or read the journal)."""


class DeadLettered(BusError):
    """A deliver task dead-lettered an event: the task fails, so Flower and Celery's failure counts see it.
    The event waits in the journal (`bus events --status dead`) until replayed or purged."""


class RetryScheduled(BusError):
    """A deliver task's attempt failed and the event waits on the bus's retry schedule: the task shows
    as retried, though the next attempt is a new task the bus queues, not a Celery retry."""


class SpoolError(BusError):
    """A producer's spool directory cannot be used (closed, unwritable, damaged); the message says which."""


class SpoolFull(SpoolError):
    """The spool holds max_bytes of events waiting for Redis: nothing of the call was spooled."""


class SpoolLocked(SpoolError):
    """Another live Producer uses the spool directory; each producer process needs one of its own."""
