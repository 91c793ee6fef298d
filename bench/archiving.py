"""The long-run scenario: the same delivery load with the archive off, then on with a short hot
window. Prints Redis used_memory over time (flat when archiving), the archive's rows and bytes per
event on disk, and the e2e rate of the two runs (target: archiving costs at most 10 %)."""
from __future__ import annotations

import statistics
import time

from bus import journal
from bus.archive import open_store

from . import verify
from .probe import Window
from .run import ROUTE, Run, result, tool_process

HOT_WINDOW_S = 5
# ~230-byte bodies, as measured in production (issue 14): 1.4-2 KB of Redis per delivered event.
BODY_BYTES = 230
MAX_SLOWDOWN = 0.10
ROUNDS = 3
# The flat-memory run: a steady rate the bus delivers as it arrives (the issue's 440 events/s),
# so what Redis holds is the hot window's worth of delivered events, not a backlog.
STEADY_RATE = 440.0


def _phase(run: Run, label: str, env: dict[str, str], events: int, rate: float = 0.0) -> tuple[dict, dict, Window]:
    """One delivery run of `events` single events on a fresh Redis and a worker started with `env`,
    as fast as they go (rate 0) or at a steady `rate` a second."""
    run.no_worker()
    run.flush()
    run.cluster.start_worker(ROUTE, env=env)
    run.worker_spec = ("long_run", label)  # the next scenario starts a worker of its own
    run.cluster.reset_receiver()
    win = Window(run.cluster, interval=2.0, record_backlog=True).start()
    summary, accepted = run.loadgen(f"long-{label}", f"/{ROUTE}.long", events, body_bytes=BODY_BYTES, rate=rate,
                                    max_seconds=events / (rate or 50) + 60)
    verify.wait_delivered(run.cluster, len(accepted), run.wait_for(len(accepted)))
    received = run.cluster.received_ids()
    counts = verify.delivery(run.cluster, accepted, received, run.cluster.received(), summary["events_sent"])
    times = [received[i] for i in accepted if i in received]
    rate = counts["delivered"] / (max(times) - summary["first_send"]) if times else 0.0
    if env.get("BUS_ARCHIVE_URL") != "off":
        # The memory curve's tail: the last hot window drains into the archive.
        client = run.cluster.redis()
        deadline = time.monotonic() + HOT_WINDOW_S + 60
        while client.zcard(journal.index_key(journal.DELIVERED)) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2.0)  # one more sample of the flat line
    window = win.stop([tool_process("loadgen", summary)])
    return {"counts": counts, "rate": rate}, window, win


def long_run(run: Run) -> dict:
    """Archiving off, then on (BUS_HOT_WINDOW=5s), ROUNDS times in turn: Redis memory over time,
    archive size, e2e rate on vs off. The two modes' medians are compared: on a machine shared with
    other jobs one round of the same settings can run at half or twice another's rate, and taking
    turns spreads that over both modes alike."""
    n = run.sizes.long_run
    url = run.cluster.archive_url
    rates: dict[str, list[float]] = {"off": [], "on": []}
    counts: dict[str, int] = {}
    for _ in range(ROUNDS if not run.quick else 1):
        off, off_window, _ = _phase(run, "off", {"BUS_ARCHIVE_URL": "off"}, n)
        on, on_window, _ = _phase(run, "on", {"BUS_ARCHIVE_URL": url, "BUS_HOT_WINDOW": f"{HOT_WINDOW_S}s"}, n)
        rates["off"].append(off["rate"])
        rates["on"].append(on["rate"])
        for phase in (off, on):
            for k, v in phase["counts"].items():
                counts[k] = counts.get(k, 0) + v
    on_env = {"BUS_ARCHIVE_URL": url, "BUS_HOT_WINDOW": f"{HOT_WINDOW_S}s"}
    steady, steady_window, _ = _phase(run, "steady", on_env, n, rate=STEADY_RATE)
    for k, v in steady["counts"].items():
        counts[k] = counts.get(k, 0) + v
    store = open_store(url)
    try:
        rows, on_disk = store.size()
    finally:
        store.close()
    mid_off, mid_on = statistics.median(rates["off"]), statistics.median(rates["on"])
    slowdown = 1 - mid_on / mid_off if mid_off else None
    return result(
        "long_run", counts, mid_on, f"archiving on >= {1 - MAX_SLOWDOWN:.0%} of off (medians of {len(rates['on'])})",
        slowdown is not None and slowdown <= MAX_SLOWDOWN and rows >= n, on_window,
        steady_rate=STEADY_RATE, redis_used_mib_steady_peak=steady_window["redis"]["peak_used_memory_mib"],
        rate_archive_off=round(mid_off, 1), rate_archive_on=round(mid_on, 1),
        rates_archive_off=[round(r, 1) for r in rates["off"]], rates_archive_on=[round(r, 1) for r in rates["on"]],
        slowdown_pct=round(100 * slowdown, 1) if slowdown is not None else None,
        hot_window_s=HOT_WINDOW_S, archive=url.split(":", 1)[0], archive_rows=rows,
        archive_bytes_per_event=round(on_disk / rows) if rows else None,
        redis_used_mib_archive_off_end=off_window["redis"]["used_memory_mib"],
        redis_used_mib_archive_on_end=on_window["redis"]["used_memory_mib"],
        redis_bytes_per_event_archive_off=round(off_window["redis"]["used_memory_delta"] / max(1, n)),
        memory_over_time_archive_off=[(s["t"], s["redis_mib"]) for s in off_window["backlog_samples"]],
        memory_over_time_archive_on=[(s["t"], s["redis_mib"]) for s in on_window["backlog_samples"]],
        memory_over_time_steady=[(s["t"], s["redis_mib"]) for s in steady_window["backlog_samples"]],
    )
