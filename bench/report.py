"""Print a run as tables (scenarios, processes, Redis) or as JSON; decide whether the run failed."""
from __future__ import annotations

import json
from typing import Any


def failures(results: list[dict]) -> list[str]:
    """Why the run fails: a lost or late event anywhere, a collapse of e2e delivery, or a scenario that broke."""
    out = []
    for r in results:
        ev = r.get("events", {})
        if r.get("error"):
            out.append(f"{r['scenario']}: {r['error'].splitlines()[0]}")
        if ev.get("lost"):
            out.append(f"{r['scenario']}: {ev['lost']} accepted events lost")
        if ev.get("late"):
            out.append(f"{r['scenario']}: {ev['late']} accepted events not delivered when the wait ran out")
        if r.get("collapse"):
            out.append(f"{r['scenario']}: {r['rate']} events/s is below a tenth of the target")
    return out


def events_done(r: dict) -> int:
    ev = r.get("events", {})
    return ev.get("delivered", ev.get("queued", ev.get("accepted", 0))) or 0


def _detail(r: dict) -> str:
    keys = ("p50_ms", "p99_ms", "drain_s", "drain_rate", "cpu_rate", "sender_us", "bytes_per_event", "accept_rate", "worker_peak_rss_mib",
            "one_write_rate", "two_write_ratio", "tcp_rate", "unix_over_tcp",
            "tcp_ingress_cpu_ms", "unix_ingress_cpu_ms", "guard",
            "rates_archive_off", "rates_archive_on", "slowdown_pct", "archive_rows", "archive_bytes_per_event",
            "redis_bytes_per_event_archive_off", "redis_used_mib_archive_off_end", "redis_used_mib_archive_on_end",
            "redis_used_mib_steady_peak", "plain_rate", "plain_overtaken_share", "ordered_rate",
            "ordered_overtaken_share", "error")
    return " ".join(f"{k}={r[k]}" for k in keys if r.get(k) is not None)


def _table(rows: list[list[Any]]) -> str:
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _verdict(r: dict) -> str:
    return {True: "pass", False: "FAIL", None: "-"}[r.get("pass")]


def text(run: dict) -> str:
    results = run["results"]
    head = (f"bench {run['mode']} run, {run['cores']} cores, load average {run['loadavg_start']} at start, "
            f"{run['loadavg_end']} at end; {run['versions']}")
    if run.get("machine"):
        m = run["machine"]
        head += (f"\nmachine: a bare PING round trip to Redis {m['redis_ping_us']} us ({m['bare_pings_per_s']:,}/s, "
                 f"the ceiling of one synchronous caller), Python {m['python_loop_mops']} M loop steps/s")
    rows = [["scenario", "sent", "accepted", "delivered", "lost", "late", "dup", "rate/s", "target", "result", "detail"]]
    for r in results:
        ev = r.get("events", {})
        delivered = ev.get("delivered", f"{ev['queued']} queued" if "queued" in ev else None)
        rows.append([r["scenario"], ev.get("sent"), ev.get("accepted"), delivered, ev.get("lost"), ev.get("late"),
                     ev.get("duplicates"), r.get("rate"), r.get("target"), _verdict(r), _detail(r)])
    procs = [["scenario", "role", "pid", "process", "cpu s", "cpu ms/event", "peak RSS MiB"]]
    redis = [["scenario", "elapsed s", "other procs' cpu s", "Redis MiB", "cmds/event", "reads/event", "top commands per event"]]
    for r in results:
        w = r.get("window")
        if not w:
            continue
        n = max(1, events_done(r))
        for p in w["processes"]:
            procs.append([r["scenario"], p["role"], p["pid"], p["name"], p["cpu_s"], round(1000 * p["cpu_s"] / n, 3),
                          p["peak_rss_mib"]])
        rd = w["redis"]
        top = ", ".join(f"{k} {v / n:.2f}" for k, v in list(rd["calls"].items())[:6])
        redis.append([r["scenario"], w["elapsed_s"], w["other_cpu_s"], rd["peak_used_memory_mib"],
                      round(rd["commands"] / n, 2), round(rd["reads"] / n, 2), top])
    curves = [f"{r['scenario']}: Redis used_memory MiB over time (s, MiB), archive {label}: "
              + " ".join(f"{t:g}:{m:g}" for t, m in r[f"memory_over_time_archive_{label}"])
              for r in results if r.get("memory_over_time_archive_on") is not None for label in ("off", "on")]
    curves += [f"{r['scenario']}: Redis used_memory MiB over time (s, MiB), archive on, a steady {r['steady_rate']:g} "
               "events/s: " + " ".join(f"{t:g}:{m:g}" for t, m in r["memory_over_time_steady"])
               for r in results if r.get("memory_over_time_steady") is not None]
    fails = failures(results)
    verdict = "FAILED: " + "; ".join(fails) if fails else "OK: no event lost"
    return "\n\n".join([head, _table(rows), "Processes (CPU over the scenario's window; per delivered, else accepted, event)",
                        _table(procs), "Redis (reads = read events on the server, about one per client round trip)",
                        _table(redis), *curves, verdict, f"reproduce: {run['command']}"])


def as_json(run: dict) -> str:
    return json.dumps({**run, "failures": failures(run["results"])}, indent=2)
