"""Scenarios that deliver: end to end, latency, drain after an outage, worker pools, a 100k backlog."""
from __future__ import annotations

import time
from collections.abc import Callable

from . import stats, verify
from .run import FANOUT, FANOUT_DESTINATIONS, FLOOR_RATE, ROUTE, Run, result, tool_process

E2E_TARGET = 1300.0
RSS_GUARD_KIB = 2 * 1024 * 1024  # a backlog that pushes a worker past 2 GiB ends early to spare the machine


def _delivered(run: Run, accepted: dict[str, float], summary: dict, wait: float) -> tuple[dict, dict]:
    verify.wait_delivered(run.cluster, len(accepted), wait)
    received = run.cluster.received_ids()
    counts = verify.delivery(run.cluster, accepted, received, run.cluster.received(), summary["events_sent"])
    return counts, received


def e2e(run: Run) -> dict:
    """4 keep-alive producers of single events over HTTP; delivered per second from first send to last receipt."""
    run.ensure_worker()
    run.cluster.reset_receiver()
    win = run.window()
    summary, accepted = run.loadgen("e2e", f"/{ROUTE}.e2e", run.sizes.e2e, max_seconds=300)
    counts, received = _delivered(run, accepted, summary, run.wait_for(len(accepted)))
    window = win.stop([tool_process("loadgen", summary)])
    times = [received[i] for i in accepted if i in received]
    rate = counts["delivered"] / (max(times) - summary["first_send"]) if times else 0.0
    accept_rate = len(accepted) / (summary["last_answer"] - summary["first_send"])
    return result("e2e", counts, rate, f">= {E2E_TARGET:,.0f}/s", rate >= E2E_TARGET, window,
                  accept_rate=round(accept_rate, 1), collapse=rate < E2E_TARGET / 10)


def e2e_fanout(run: Run) -> dict:
    """e2e's load on a route with two destinations: an event is delivered once both have it. Target: no less
    than half of e2e's delivered rate in the same run (each event is two deliveries)."""
    run.no_worker()
    run.flush()
    run.cluster.start_worker(FANOUT)
    run.worker_spec = ("fanout",)  # the next scenario's ensure_worker starts its own
    run.cluster.reset_receiver()
    win = run.window()
    summary, accepted = run.loadgen("e2e_fanout", f"/{FANOUT}.e2e", run.sizes.e2e, max_seconds=300)
    copies = {f"{i}.{d}": sent for i, sent in accepted.items() for d in FANOUT_DESTINATIONS}
    counts, received = _delivered(run, copies, summary, run.wait_for(len(copies)))
    window = win.stop([tool_process("loadgen", summary)])
    both = [max(received[f"{i}.{d}"] for d in FANOUT_DESTINATIONS) for i in accepted
            if all(f"{i}.{d}" in received for d in FANOUT_DESTINATIONS)]
    rate = len(both) / (max(both) - summary["first_send"]) if both else 0.0
    single = next((r.get("rate") for r in run.results if r.get("scenario") == "e2e"), None)
    return result("e2e_fanout", counts, rate, ">= half of e2e's rate", rate >= single / 2 if single else None, window,
                  events_both=len(both), copies_per_s=round(2 * rate, 1), e2e_rate=single)


def latency(run: Run) -> dict:
    """POST -> receipt at a steady 100 events/s (send and receipt stamped by the same clock)."""
    run.ensure_worker()
    run.cluster.reset_receiver()
    n = int(100 * run.sizes.latency_s)
    win = run.window()
    summary, accepted = run.loadgen("latency", f"/{ROUTE}.latency", n, rate=100.0, max_seconds=run.sizes.latency_s + 30)
    counts, received = _delivered(run, accepted, summary, run.wait_for(len(accepted)))
    window = win.stop([tool_process("loadgen", summary)])
    ms = [(received[i] - sent) * 1000 for i, sent in accepted.items() if i in received]
    p50, p99 = stats.percentile(ms, 50), stats.percentile(ms, 99)
    ok = p50 is not None and p50 <= 5 and p99 <= 25
    return result("latency", counts, len(accepted) / run.sizes.latency_s, "p50 <= 5 ms, p99 <= 25 ms", ok, window,
                  p50_ms=_ms(p50), p99_ms=_ms(p99), max_ms=_ms(max(ms) if ms else None))


def drain_outage(run: Run) -> dict:
    """Receiver down, events accepted, receiver back after the outage: seconds until the last one arrives."""
    run.ensure_worker()
    run.cluster.stop("receiver")
    win = run.window()
    started = time.monotonic()
    summary, accepted = run.loadgen("drain", f"/{ROUTE}.drain", run.sizes.drain_events, max_seconds=120)
    time.sleep(max(0.0, run.sizes.outage_s - (time.monotonic() - started)))
    run.cluster.start_receiver()
    back = time.time()
    counts, received = _delivered(run, accepted, summary, run.sizes.delivery_slack_s + 60)
    window = win.stop([tool_process("loadgen", summary)])
    times = [received[i] for i in accepted if i in received]
    drain_s = max(times) - back if times else None
    return result("drain_outage", counts, None, "last event <= 5 s after receiver is back",
                  drain_s is not None and counts["delivered"] == counts["accepted"] and drain_s <= 5, window,
                  drain_s=round(drain_s, 2) if drain_s is not None else None,
                  outage_s=run.sizes.outage_s, first_after_back_s=round(min(times) - back, 2) if times else None)


def pool(kind: str, concurrency: int, config: dict | None = None, label: str = "",
         feed_batch: int = 1) -> Callable[[Run], dict]:
    """A worker pool draining events queued before it starts, single events (one per task, as e2e) unless
    `feed_batch` > 1; rate from first to last receipt, CPU from the worker's processes once it is ready.
    `config` overrides Celery settings of that worker (an experiment, named by `label`)."""
    name = f"pool_{kind}_c{concurrency}{label}"

    def scenario(run: Run) -> dict:
        run.no_worker()
        run.flush()
        run.cluster.reset_receiver()
        summary, accepted = run.loadgen(f"pool-{kind}", f"/{ROUTE}.pool", run.sizes.pool_events,
                                      batch=feed_batch, max_seconds=120)
        run.ensure_worker(kind, concurrency, config, flush=False)
        win = run.window()
        counts, received = _delivered(run, accepted, summary, run.wait_for(len(accepted)))
        window = win.stop()
        times = sorted(received[i] for i in accepted if i in received)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
        run.no_worker()
        return result(name, counts, rate, "(compare)", None, window, celery_overrides=config, feed_batch=feed_batch)

    scenario.__name__ = name
    return scenario


def stdlib_receiver(run: Run) -> dict:
    """A backlog drained into Python's http.server on keep-alive, which writes an answer's head and body
    in two sends (the ~40 ms Nagle/delayed-ACK stall of issue 17), beside the same server answering in
    one send; rate from first to last receipt, the worker started once the events are queued."""
    rates: dict[str, float | None] = {}
    counts: dict = {}
    window: dict = {}
    for label, flags in (("one_write", ["--one-write"]), ("two_writes", [])):
        run.no_worker()
        run.flush()
        run.cluster.stop("receiver")
        run.cluster.start_receiver(["bench.stdlib_receiver", *flags])
        summary, accepted = run.loadgen(f"stdlib-{label}", f"/{ROUTE}.stdlib", run.sizes.stdlib_events, batch=100,
                                        max_seconds=120)
        run.ensure_worker(flush=False)
        win = run.window()
        counts, received = _delivered(run, accepted, summary, run.wait_for(len(accepted)))
        window = win.stop()
        times = sorted(received[i] for i in accepted if i in received)
        rates[label] = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
    run.no_worker()
    run.cluster.stop("receiver")
    run.cluster.start_receiver()
    one, two = rates["one_write"], rates["two_writes"]
    ratio = round(two / one, 3) if one and two else None
    return result("stdlib_receiver", counts, two, ">= half the one-write rate", bool(ratio and ratio >= 0.5), window,
                  one_write_rate=round(one, 1) if one else None, two_write_ratio=ratio)


def backlog(run: Run) -> dict:
    """A large backlog accepted while the receiver is down for minutes; worker RSS over time, then the drain."""
    run.ensure_worker()
    run.cluster.stop("receiver")
    win = run.window(interval=2.0, record_backlog=True)
    started = time.monotonic()
    summary, accepted = run.loadgen("backlog", f"/{ROUTE}.backlog", run.sizes.backlog, batch=100, max_seconds=600)
    guard = None
    while time.monotonic() - started < run.sizes.backlog_minutes * 60:
        worker_rss = max((stats.read_rss_kib(p) or 0 for r, proc in run.cluster.roles.items() if r.startswith("worker")
                          for p in stats.tree(proc.pid)), default=0)
        if worker_rss > RSS_GUARD_KIB:
            guard = f"a worker process passed {RSS_GUARD_KIB // 1024} MiB RSS; receiver brought back early"
            break
        time.sleep(1.0)
    down_s = time.monotonic() - started
    run.cluster.start_receiver()
    back = time.time()
    counts, received = _delivered(run, accepted, summary, len(accepted) / FLOOR_RATE + run.sizes.delivery_slack_s)
    window = win.stop([tool_process("loadgen", summary)])
    times = [received[i] for i in accepted if i in received]
    rate = counts["delivered"] / (max(times) - back) if times else None
    worker_peak = max((p["peak_rss_mib"] for p in window["processes"] if p["role"].startswith("worker")), default=0)
    ok = worker_peak <= 200 and bool(rate and rate >= E2E_TARGET) and guard is None
    run.no_worker()
    return result("backlog", counts, rate, "worker RSS <= 200 MB each; drain >= 1,300/s", ok, window,
                  receiver_down_s=round(down_s, 1), worker_peak_rss_mib=worker_peak, guard=guard,
                  first_after_back_s=round(min(times) - back, 2) if times else None)


def _ms(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None
