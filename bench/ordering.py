"""Issue 19's order measurement: the load of e2e (4 keep-alive producers of single events over HTTP) over
16 tags, once to a plain route and once to an ordered one (`ordered = true`, the tag as order key):
delivered events/s, and the share of events that reached the receiver after an event of the same tag
that was sent only once theirs had been accepted (overtaken)."""
from __future__ import annotations

import bisect
from collections import defaultdict
from pathlib import Path

from . import verify
from .run import ORDERED, ROUTE, Run, result, tool_process

KEYS = 16
# The target of issue 19 on this machine: ordered >= 1,000 events/s over 16 keys, none overtaken.
ORDERED_TARGET = 1_000.0


def overtaken(order: list[tuple[str, str, float, float]], received: dict[str, float]) -> int:
    """Events one of whose tag's events, sent after this one was answered 202 (so accepted after it),
    reached the receiver first. `order`: (id, path, sent, answered) per accepted event."""
    by_path: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for event_id, path, sent, answered in order:
        if event_id in received:
            by_path[path].append((sent, answered, event_id))
    count = 0
    for events in by_path.values():
        events.sort()
        sends = [sent for sent, _, _ in events]
        # The earliest receipt among the events sent at or after each position.
        earliest = [0.0] * len(events)
        low = float("inf")
        for i in range(len(events) - 1, -1, -1):
            low = min(low, received[events[i][2]])
            earliest[i] = low
        for _sent, answered, event_id in events:
            later = bisect.bisect_right(sends, answered)
            if later < len(events) and earliest[later] < received[event_id]:
                count += 1
    return count


def read_order(path: Path) -> list[tuple[str, str, float, float]]:
    with open(path) as f:
        return [(i, p, float(s), float(a)) for i, p, s, a in (line.split() for line in f)]


def _measure(run: Run, route: str) -> dict:
    run.no_worker()
    run.flush()
    run.cluster.start_worker(route, "prefork", 2)
    run.worker_spec = ("ordering", route)
    run.cluster.reset_receiver()
    paths = ",".join(f"/{route}.k{k}" for k in range(KEYS))
    order_file = run.cluster.tmp / f"ordering-{route}.order"
    win = run.window()
    summary, accepted = run.loadgen(f"ordering-{route}", paths, run.sizes.e2e, max_seconds=300,
                                    extra=["--order-out", str(order_file)])
    verify.wait_delivered(run.cluster, len(accepted), run.wait_for(len(accepted)))
    received = run.cluster.received_ids()
    counts = verify.delivery(run.cluster, accepted, received, run.cluster.received(), summary["events_sent"])
    window = win.stop([tool_process("loadgen", summary)])
    times = [received[i] for i in accepted if i in received]
    rate = counts["delivered"] / (max(times) - summary["first_send"]) if times else 0.0
    behind = overtaken(read_order(order_file), received)
    run.no_worker()
    return {"rate": rate, "counts": counts, "window": window, "overtaken": behind,
            "overtaken_share": round(behind / max(1, counts["delivered"]), 4)}


def ordering(run: Run) -> dict:
    """The plain route and the ordered one under the same load, one after the other."""
    plain = _measure(run, ROUTE)
    ordered = _measure(run, ORDERED)
    passed = ordered["rate"] >= ORDERED_TARGET and ordered["overtaken"] == 0
    return result("ordering", ordered["counts"], ordered["rate"],
                  f"ordered >= {ORDERED_TARGET:,.0f}/s over {KEYS} keys, overtaken 0", passed, ordered["window"],
                  keys=KEYS, ordered_rate=round(ordered["rate"], 1), ordered_overtaken=ordered["overtaken"],
                  ordered_overtaken_share=ordered["overtaken_share"], plain_rate=round(plain["rate"], 1),
                  plain_overtaken=plain["overtaken"], plain_overtaken_share=plain["overtaken_share"],
                  plain_events=plain["counts"])
