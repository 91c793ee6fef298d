"""bench.versus's table: each figure for Fluentd and the bus from the same run, the ratio, the issue's target."""
from __future__ import annotations

from collections.abc import Callable


def _get(rows: list[dict], scenario: str, side: str) -> dict:
    return next((r for r in rows if r["scenario"] == scenario and r["side"] == side), {})


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"
    return str(v)


# (label, scenario, figure, target as a test of bus/fluentd or None)
LINES: list[tuple[str, str, str, tuple[str, Callable[[float], bool]] | None]] = [
    ("delivered events/s, HTTP ({e2e} events)", "e2e", "delivered_per_s", (">= 5x", lambda r: r >= 5)),
    ("delivered events/s, forward with acks ({forward})", "forward", "delivered_per_s", (">= 5x", lambda r: r >= 5)),
    ("accepted events/s, HTTP", "e2e", "accepted_per_s", None),
    ("latency at 100 events/s, p50 ms", "latency", "p50_ms", ("< 1x", lambda r: r < 1)),
    ("latency at 100 events/s, p99 ms", "latency", "p99_ms", ("< 1x", lambda r: r < 1)),
    ("{drain} waiting after a {outage_s:.0f} s outage: s until the last arrived", "outage", "drain_s", None),
    ("whole process tree idle before any traffic, PSS MiB", "fresh", "pss_mib", ("<= 1.5x", lambda r: r <= 1.5)),
    ("whole process tree idle after the scenarios above, PSS MiB", "idle", "pss_mib", ("<= 1.5x", lambda r: r <= 1.5)),
    ("whole process tree idle after the scenarios above, RSS MiB", "idle", "rss_mib", None),
    ("CPU ms per delivered event, HTTP", "e2e", "cpu_ms_per_event", None),
    ("CPU ms per delivered event, forward", "forward", "cpu_ms_per_event", None),
    ("CPU while idle before any traffic, % of a core", "fresh", "idle_cpu_pct", ("<= 1x", lambda r: r <= 1)),
    ("CPU while idle after the scenarios above, % of a core", "idle", "idle_cpu_pct", ("<= 1x", lambda r: r <= 1)),
    ("CPU while the endpoint is down, % of a core", "outage", "down_cpu_pct", ("<= 1x", lambda r: r <= 1)),
]


def _events(rows: list[dict], side: str, scenario: str | None = None) -> str:
    picked = [r["events"] for r in rows if r["side"] == side and "events" in r and scenario in (None, r["scenario"])]
    if not picked:
        return "-"
    return f"{sum(e['lost'] for e in picked)} lost, {sum(e['duplicates'] for e in picked)} dup"


def text(record: dict) -> str:
    rows = record["rows"]
    sizes = {"e2e": _get(rows, "e2e", "bus").get("events", {}).get("sent", "?"),
             "forward": _get(rows, "forward", "bus").get("events", {}).get("sent", "?"),
             "drain": _get(rows, "outage", "bus").get("events", {}).get("accepted", "?"),
             "outage_s": float(_get(rows, "outage", "bus").get("outage_s", 0))}
    m = record.get("machine", {})
    out = [f"bench --peer fluentd ({record['mode']}), {record['cores']} cores; load average "
           f"{record['loadavg_start']} -> {record['loadavg_end']}; machine: Redis PING {m.get('redis_ping_us')} µs "
           f"({m.get('bare_pings_per_s')}/s), Python {m.get('python_loop_mops')} M loop steps/s",
           f"command: {record['command']}", "",
           "| scenario | Fluentd | bus | bus / Fluentd | target | |", "|---|---|---|---|---|---|"]
    for label, scenario, figure, target in LINES:
        fl, bus = _get(rows, scenario, "fluentd").get(figure), _get(rows, scenario, "bus").get(figure)
        if fl is None and bus is None:
            continue
        ratio = bus / fl if isinstance(fl, (int, float)) and isinstance(bus, (int, float)) and fl else None
        verdict = "" if target is None or ratio is None else ("met" if target[1](ratio) else "NOT MET")
        out.append(f"| {label.format(**sizes)} | {_fmt(fl)} | {_fmt(bus)} | {_fmt(ratio) + 'x' if ratio else '-'} "
                   f"| {target[0] if target else ''} | {verdict} |")
    if _get(rows, "crash", "bus"):
        ok = _events(rows, "bus", "crash").startswith("0 lost, 0 dup")
        out.append(f"| SIGKILL of everything at 150 events/s, restart | {_events(rows, 'fluentd', 'crash')} "
                   f"| {_events(rows, 'bus', 'crash')} | | 0 lost, 0 dup | {'met' if ok else 'NOT MET'} |")
    out.append(f"| every scenario above, at the receiver | {_events(rows, 'fluentd')} | {_events(rows, 'bus')} | | | |")
    extra, ping = record.get("bus_only", {}), m.get("bare_pings_per_s")
    if "ingress_single" in extra:
        rate = extra["ingress_single"]["rate"] or 0
        out.append(f"| ingress singles, events/s (bus only) | | {_fmt(rate)} | | >= 5,000 | {'met' if rate >= 5000 else 'NOT MET'} |")
    if "emit" in extra and ping:
        share = (extra["emit"]["rate"] or 0) / ping
        out.append(f"| emit() calls/s, one thread, against {ping:,} bare PINGs/s | | {_fmt(extra['emit']['rate'])} "
                   f"| {share:.0%} of PING | >= 80 % | {'met' if share >= 0.8 else 'NOT MET'} |")
    out += ["", "Per scenario (events: sent / accepted / delivered / lost / duplicates / unexpected):"]
    for r in rows:
        ev = r.get("events")
        figures = {k: v for k, v in r.items() if k not in ("scenario", "side", "events", "processes")}
        counts = " / ".join(str(ev[k]) for k in ("sent", "accepted", "delivered", "lost", "duplicates", "unexpected")) if ev else ""
        out.append(f"  {r['scenario']:8} {r['side']:8} {counts:32} {figures}")
    for scenario, when in (("fresh", "idle before any traffic"), ("idle", "idle after the scenarios")):
        for side in ("bus", "fluentd"):
            idle = _get(rows, scenario, side)
            if idle:
                out.append(f"\nWhere the PSS goes, {side} {when} ({idle['pss_mib']} MiB PSS, {idle['rss_mib']} MiB RSS):")
                out += [f"  {p['pss_mib']:6.1f} MiB PSS {p['rss_mib']:6.1f} RSS {p.get('private_mib', 0):6.1f} own  "
                        f"{p['cmd']}" for p in idle["processes"]]
    for err in record.get("errors", []):
        out.append(f"ERROR {err}")
    return "\n".join(out)
