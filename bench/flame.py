"""Read py-spy's raw (collapsed) stacks and say where the CPU went: by stage of an event's life and by function (pure)."""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

# Stages of the bus's own code win wherever they sit in a stack, in this order: the Redis socket write
# under journal.accept is the journal write, and logging done inside the deliver task is logging.
BUS_STAGES: list[tuple[str, re.Pattern[str]]] = [(name, re.compile(rx)) for name, rx in [
    ("logging", r"logging/__init__\.py|celery/utils/log\.py|celery/app/log\.py"),
    ("task events for Flower (celery.events)", r"celery/events/"),
    ("id (events.new_id)", r"^new_id \(.*bus/events\.py"),
    ("task message build (messages.py)", r"bus/messages\.py"),
    ("journal write at accept (journal.accept: MULTI hset/zadd/lpush EXEC)", r"^accept \(.*bus/journal\.py"),
    ("body parse (bodies.parse_records)", r"bus/ingress/bodies\.py"),
    ("intake: validate, match, orjson.dumps", r"bus/intake\.py"),
    ("journal read (journal.load: HGETALL)", r"^load \(.*bus/journal\.py"),
    ("journal write per attempt (journal.record_attempt)", r"^record_attempt \(.*bus/journal\.py"),
    ("HTTP send (bus/worker/outbound.py)", r"^send \(.*bus/delivery\.py"),
    ("deliver task, other", r"bus/delivery\.py"),
    ("ack (kombu QoS.ack / basic_ack)", r"^(QoS\.ack|Channel\.basic_ack|QoS\.reject|Channel\.basic_reject|Message\.ack) \("),
]]
# Framework stages: a sample belongs to the innermost frame that names one.
FRAMEWORK_STAGES: list[tuple[str, re.Pattern[str]]] = [(name, re.compile(rx)) for name, rx in [
    ("consume: kombu Redis transport (BRPOP, restore, poll)", r"kombu/transport/redis\.py|kombu/transport/virtual/"),
    ("celery task dispatch (strategy, request, trace)", r"celery/worker/|celery/app/trace\.py|celery/app/task\.py"),
    ("prefork IPC (billiard)", r"billiard/"),
    ("kombu other (messaging, serialization)", r"kombu/"),
    ("werkzeug request/response", r"werkzeug/"),
    ("uvicorn (protocol, request cycle)", r"uvicorn/"),
    ("asyncio / uvloop event loop", r"asyncio/|uvloop/"),
    ("redis-py client (other)", r"redis/"),
]]


def parse(lines: Iterable[str]) -> Counter[tuple[str, ...]]:
    """Raw py-spy lines 'frame;frame;... count' -> {stack (root first): samples}."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def stage(stack: tuple[str, ...]) -> str:
    for name, rx in BUS_STAGES:
        if any(rx.search(frame) for frame in stack):
            return name
    for frame in reversed(stack):
        for name, rx in FRAMEWORK_STAGES:
            if rx.search(frame):
                return name
    return "other"


def by_stage(stacks: Counter[tuple[str, ...]]) -> list[tuple[str, float]]:
    total = sum(stacks.values()) or 1
    shares: Counter[str] = Counter()
    for stack, n in stacks.items():
        shares[stage(stack)] += n
    return [(name, n / total) for name, n in shares.most_common()]


def by_function(stacks: Counter[tuple[str, ...]], top: int = 15) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(self share, inclusive share) of the busiest functions."""
    total = sum(stacks.values()) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, n in stacks.items():
        own[stack[-1]] += n
        for frame in set(stack):
            inclusive[frame] += n
    return ([(f, n / total) for f, n in own.most_common(top)], [(f, n / total) for f, n in inclusive.most_common(top)])


def split_processes(stacks: Counter[tuple[str, ...]]) -> dict[str, Counter[tuple[str, ...]]]:
    """With --subprocesses py-spy roots each stack at 'process PID:"cmdline"' frames (parent first); group by
    the innermost of them, the process that was sampled."""
    out: dict[str, Counter[tuple[str, ...]]] = {}
    for stack, n in stacks.items():
        depth = 0
        while depth < len(stack) and stack[depth].startswith("process "):
            depth += 1
        if depth < len(stack):
            out.setdefault(stack[depth - 1] if depth else "process", Counter())[stack[depth:]] += n
    return out
