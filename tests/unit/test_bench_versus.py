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
