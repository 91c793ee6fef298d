"""bench.hops: the stamp files of a bus up tree's processes read into each event's hops, hop times
given to every event of the task that carried it, and the steps between hops in order."""
from __future__ import annotations

from bench import hops


def write(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines))


def test_task_hops_go_to_every_event_of_the_task_and_steps_are_in_order(tmp_path):
    write(tmp_path / "hops-1.txt", ["ingress_in e1 10.000", "accepted e1 10.001",
                                    "ingress_in e2 10.002", "accepted e2 10.003"])
    # the worker main stamps by task id (its first event's), and which events the task carries
    write(tmp_path / "hops-2.txt", ["brpop e1 10.004", "task e1 e1", "task e2 e1", "qos_appended e1 10.005",
                                    "to_pool e1 10.006"])
    write(tmp_path / "hops-3.txt", ["pool_start e1 10.007", "loaded e1 10.008", "post e1 10.009", "key e1 k1",
                                    "post e2 10.010", "key e2 k2", "post e2 10.5"])  # a second attempt: the first counts
    events, keys, task_of = hops.read_stamps(tmp_path)
    assert keys == {"e1": "k1", "e2": "k2"} and task_of == {"e1": "e1", "e2": "e1"}
    assert events["e2"]["brpop"] == 10.004 and events["e2"]["post"] == 10.010
    table = hops.steps(events, keys, sent={"k1": 9.999, "k2": 10.0015}, received={"k1": 10.011, "k2": 10.012})
    assert list(table) == [f"{a} -> {b}" for a, b in zip(hops.HOPS, hops.HOPS[1:])] + ["total"]
    assert [round(v, 3) for v in table["post -> receipt"]] == [2.0, 2.0]
    assert [round(v, 3) for v in table["total"]] == [12.0, 10.5]


def test_an_event_missing_a_hop_or_its_receipt_is_left_out(tmp_path):
    write(tmp_path / "hops-1.txt", ["ingress_in e1 1.0", "post e1 1.1", "key e1 k1"])
    events, keys, _ = hops.read_stamps(tmp_path)
    assert hops.steps(events, keys, sent={"k1": 0.9}, received={"k1": 1.2}) == {}
    assert hops.steps(events, keys, sent={"k1": 0.9}, received={}) == {}
