"""Scenarios without delivery: the receiver's own ceiling, ingress accept rates, emit(), Redis memory per event."""
from __future__ import annotations

from bus import journal

from . import verify
from .run import PARKED, Run, result, tool_process


def receiver_ceiling(run: Run) -> dict:
    """The receiver must not be what limits delivery: 4 keep-alive producers straight at it."""
    run.cluster.reset_receiver()
    win = run.window()
    summary, accepted = run.loadgen("receiver", "/direct/x", run.sizes.receiver, direct=True, max_seconds=120)
    window = win.stop([tool_process("loadgen", summary)])
    received = run.cluster.received_ids()
    events = verify.delivery(run.cluster, accepted, received, run.cluster.received(), summary["events_sent"])
    events["lost"] = events.pop("late") + events["lost"]  # the bus is not involved: every miss is the receiver's
    rate = len(accepted) / (summary["last_answer"] - summary["first_send"])
    run.cluster.reset_receiver()
    return result("receiver", events, rate, ">= 5,200/s (4x e2e target)", rate >= 5200, window,
                  note="load generator and receiver share the 2 cores; the receiver alone is faster")


def ingress_single_unix(run: Run) -> dict:
    """Single events over `bus serve --bind unix:PATH` (2 workers, as the TCP ingress), beside the same
    count over loopback TCP in the same scenario: what a host's producers gain by the socket file."""
    tcp = _accept_only(run, "ingress_single_unix_tcp", 1, run.sizes.ingress_single, 0)
    path = str(run.cluster.tmp / "http.sock")
    run.cluster.start_unix_ingress(path)
    try:
        unix = _accept_only(run, "ingress_single_unix", 1, run.sizes.ingress_single, 5000, unix=path)
    finally:
        run.cluster.stop("ingress_unix")
    unix["tcp_rate"] = tcp["rate"]
    unix["unix_over_tcp"] = round(unix["rate"] / tcp["rate"], 3) if unix["rate"] and tcp["rate"] else None
    # CPU per accepted event of the ingress that served each run: steadier than rates on a shared machine.
    unix["tcp_ingress_cpu_ms"] = _cpu_ms(tcp, "ingress")
    unix["unix_ingress_cpu_ms"] = _cpu_ms(unix, "ingress_unix")
    return unix


def _cpu_ms(r: dict, role: str) -> float | None:
    accepted = r["events"].get("accepted") or 0
    cpu = sum(p["cpu_s"] for p in r["window"]["processes"] if p["role"] == role)
    return round(1000 * cpu / accepted, 3) if accepted else None


def _accept_only(run: Run, name: str, batch: int, events: int, target: float, body_bytes: int = 40,
                 unix: str | None = None) -> dict:
    run.no_worker()
    run.flush()
    before = verify.queue_depth(run.cluster, PARKED)
    win = run.window()
    summary, accepted = run.loadgen(name, f"/{PARKED}.{name}", events, batch=batch, body_bytes=body_bytes, max_seconds=120,
                                    unix=unix)
    window = win.stop([tool_process("loadgen", summary)])
    counts = verify.queued(run.cluster, PARKED, accepted, summary["events_sent"], before)
    rate = len(accepted) / (summary["last_answer"] - summary["first_send"]) if accepted else None
    refused = {k: v for k, v in summary["statuses"].items() if k != "202"}
    return result(name, counts, rate, f">= {target:,.0f}/s", bool(rate and rate >= target), window,
                  refused=refused, errors=summary["errors"])


def ingress_single(run: Run) -> dict:
    return _accept_only(run, "ingress_single", 1, run.sizes.ingress_single, 5000)


def ingress_batch100(run: Run) -> dict:
    return _accept_only(run, "ingress_batch100", 100, run.sizes.ingress_batch, 30000)


def _emit(run: Run, name: str, threads: int, batch: int = 1) -> dict:
    run.no_worker()
    run.flush()
    before = verify.queue_depth(run.cluster, PARKED)
    ids = run.cluster.tmp / f"{name}.ids"
    win = run.window()
    summary = run.cluster.tool("emitter", ["bench.emitter", "--tag", f"{PARKED}.{name}", "--events", str(run.sizes.emit),
                                           "--threads", str(threads), "--batch", str(batch), "--ids-out", str(ids),
                                           "--max-seconds", "120"],
                               timeout=180)
    window = win.stop([tool_process("emitter", summary)])
    accepted = verify.read_ids(ids)
    counts = verify.queued(run.cluster, PARKED, accepted, run.sizes.emit, before)
    rate = len(accepted) / summary["elapsed"]
    return result(name, counts, rate, ">= 10,000/s", rate >= 10000, window)


def emit(run: Run) -> dict:
    """bus.emit() from one thread: intake.accept per event, each call waiting for Redis, as `bus.emit` does."""
    return _emit(run, "emit", 1)


def emit_threads(run: Run) -> dict:
    """bus.emit() from 8 threads of one process (a threaded web app): their calls share round trips."""
    return _emit(run, "emit_8_threads", 8)


def emit_many(run: Run) -> dict:
    """bus.emit_many() from one thread, 100 events a call: one round trip per call."""
    return _emit(run, "emit_many_100", 1, batch=100)


def _producer(run: Run, name: str, outage: bool) -> dict:
    run.no_worker()
    run.flush()
    before = verify.queue_depth(run.cluster, PARKED)
    ids = run.cluster.tmp / f"{name}.ids"
    spool = run.cluster.tmp / f"{name}.spool"
    win = run.window()
    argv = ["bench.producer", "--tag", f"{PARKED}.{name}", "--events", str(run.sizes.producer), "--spool", str(spool),
            "--ids-out", str(ids), "--max-seconds", "120"] + (["--outage"] if outage else [])
    summary = run.cluster.tool(name, argv, timeout=300)
    window = win.stop([tool_process(name, summary)])
    accepted = verify.read_ids(ids)
    counts = verify.queued(run.cluster, PARKED, accepted, run.sizes.producer, before)
    rate = len(accepted) / summary["elapsed"]
    drain = len(accepted) / summary["drain_elapsed"] if outage else None
    return result(name, counts, rate, ">= 50,000/s (emit, one thread)", rate >= 50000, window,
                  cpu_rate=round(len(accepted) / summary["emit_thread_cpu"]),
                  drain_rate=round(drain) if drain else None, drain_s=round(summary["drain_elapsed"], 2),
                  sender_us=round(summary["sender_cpu"] / max(1, len(accepted)) * 1e6, 1))


def producer(run: Run) -> dict:
    """bus.Producer.emit from one thread with Redis up: into the spool, its sender moving it to Redis meanwhile;
    drain_s is the flush after the loop."""
    return _producer(run, "producer", outage=False)


def producer_outage(run: Run) -> dict:
    """bus.Producer.emit from one thread while Redis is unreachable (the spool fills), then a new Producer on the
    spool sends it all: drain_rate is events per second into Redis."""
    return _producer(run, "producer_outage", outage=True)


def redis_memory(run: Run) -> dict:
    """Bytes of Redis per waiting event with a 1 KiB body (journal hash + status index + queued task)."""
    run.no_worker()
    run.flush()
    client = run.cluster.redis()
    before = verify.queue_depth(run.cluster, PARKED)
    used_before = client.info("memory")["used_memory"]
    win = run.window()
    summary, accepted = run.loadgen("redis_memory", f"/{PARKED}.memory", run.sizes.memory, batch=100,
                                    body_bytes=1024, max_seconds=120)
    window = win.stop([tool_process("loadgen", summary)])
    counts = verify.queued(run.cluster, PARKED, accepted, summary["events_sent"], before)
    per_event = (client.info("memory")["used_memory"] - used_before) / max(1, len(accepted))
    sample = next(iter(accepted))
    n = max(1, len(accepted))
    parts = {
        # journal.keys owns these key names; the bench borrows them to split the bill.
        "event_hash": client.memory_usage(journal.event_key(sample), samples=0),
        "status_index": round(client.memory_usage(journal.index_key(journal.QUEUED), samples=0) / n),
        "queued_task": round(client.memory_usage(journal.queue_name(PARKED), samples=0) / n),
        "task_message_bytes": len(client.lindex(journal.queue_name(PARKED), 0) or b""),
    }
    return result("redis_memory", counts, None, "<= 2,048 B/event", per_event <= 2048, window,
                  bytes_per_event=round(per_event), bytes_per_event_parts=parts)
