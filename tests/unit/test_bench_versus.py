"""bench.versus's pure parts: how both peers' records are keyed and how a ratio meets its target."""
from bench.loadgen import body
from bench.receiver import _body_key
from bench.report_versus import text


def test_a_keyed_record_is_counted_by_its_own_key_and_keeps_the_size_asked_for():
    record = body(7, 1, b"x" * 236, key=b"ab" * 16)
    assert _body_key(record) == b"ab" * 16
    assert 240 <= len(record) <= 260


def test_a_record_without_a_key_falls_back_to_the_request_id():
    assert _body_key(b'{"n":1,"pad":"xx"}') is None
    assert _body_key(b"") is None


def _row(scenario, side, **figures):
    return {"scenario": scenario, "side": side, **figures}


def test_each_figure_is_printed_with_its_ratio_and_whether_the_target_is_met():
    events = {"sent": 10, "accepted": 10, "delivered": 10, "lost": 0, "duplicates": 0, "unexpected": 0}
    record = {"mode": "quick", "cores": 2, "loadavg_start": "1", "loadavg_end": "2", "command": "python -m bench",
              "machine": {}, "bus_only": {}, "errors": [],
              "rows": [_row("e2e", "bus", events=events, delivered_per_s=2000.0),
                       _row("e2e", "fluentd", events=events, delivered_per_s=400.0),
                       _row("idle", "bus", pss_mib=200.0, rss_mib=300.0, idle_cpu_pct=1.0, processes=[]),
                       _row("idle", "fluentd", pss_mib=100.0, rss_mib=120.0, idle_cpu_pct=0.2, processes=[])]}
    lines = text(record).splitlines()
    e2e = next(line for line in lines if line.startswith("| delivered events/s, HTTP"))
    assert "| 5.00x | >= 5x | met |" in e2e
    pss = next(line for line in lines if "PSS MiB" in line)
    assert "2.00x" in pss and "NOT MET" in pss
    assert any("0 lost, 0 dup" in line for line in lines)


def test_idle_before_any_traffic_and_idle_after_the_scenarios_are_two_lines_each_with_its_target():
    record = {"mode": "quick", "cores": 2, "loadavg_start": "1", "loadavg_end": "2", "command": "python -m bench",
              "machine": {}, "bus_only": {}, "errors": [],
              "rows": [_row("fresh", "bus", pss_mib=90.0, rss_mib=150.0, idle_cpu_pct=0.2, processes=[]),
                       _row("fresh", "fluentd", pss_mib=60.0, rss_mib=80.0, idle_cpu_pct=0.3, processes=[]),
                       _row("idle", "bus", pss_mib=120.0, rss_mib=200.0, idle_cpu_pct=2.0, processes=[]),
                       _row("idle", "fluentd", pss_mib=70.0, rss_mib=90.0, idle_cpu_pct=0.4, processes=[])]}
    lines = text(record).splitlines()
    fresh_cpu = next(line for line in lines if line.startswith("| CPU while idle before any traffic"))
    after_cpu = next(line for line in lines if line.startswith("| CPU while idle after the scenarios"))
    assert "| 0.67x | <= 1x | met |" in fresh_cpu
    assert "| 5.00x | <= 1x | NOT MET |" in after_cpu
    fresh_pss = next(line for line in lines if line.startswith("| whole process tree idle before any traffic, PSS"))
    assert "| 1.50x | <= 1.5x | met |" in fresh_pss
    assert any(line.startswith("Where the PSS goes, bus idle before any traffic (90.0 MiB PSS") for line in lines)
