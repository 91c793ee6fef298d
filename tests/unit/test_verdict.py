"""One Verdict for what a delivery of one event came to (bus/worker/verdict.py), read exactly as the
strings it replaced: in log lines (text and JSON), the task's summary Flower shows, a copy's record."""
from __future__ import annotations

import logging

import orjson
import pytest
from celery.exceptions import Retry

from bus import logs
from bus.errors import BusError, DeadLettered
from bus.journal import Attempt, Event
from bus.worker import classify, delivery, task_outcome
from bus.worker.verdict import WAITING_ON_SCHEDULE, UnknownAnswer, Verdict, from_journal

# Every verdict a deliver task can count, and the text logs, task results and Flower showed before the enum.
TODAY = {
    Verdict.DELIVERED: "delivered", Verdict.RETRY: "retry", Verdict.DEAD: "dead", Verdict.WAITING: "waiting",
    Verdict.ERROR: "error", Verdict.SUPERSEDED: "superseded", Verdict.GONE: "gone", Verdict.MISSING: "missing",
    Verdict.HANDED_OFF: "handed_off",
}


def test_every_verdict_is_listed_with_its_text():
    assert set(TODAY) == set(Verdict)


@pytest.mark.parametrize("verdict", list(Verdict))
def test_a_verdict_reads_as_its_old_string_wherever_it_is_written(verdict):
    text = TODAY[verdict]
    assert verdict == text and hash(verdict) == hash(text)  # a dict keyed by the old strings finds it
    assert str(verdict) == f"{verdict}" == "%s" % verdict == text
    assert orjson.dumps({"verdict": verdict}) == orjson.dumps({"verdict": text})  # a copy's record, JSON logs
    assert task_outcome.summary({verdict: 3}) == f"{text}=3"


def test_the_task_summary_sorts_by_the_verdicts_text():
    counts = {Verdict.SUPERSEDED: 1, Verdict.DELIVERED: 2, Verdict.HANDED_OFF: 4, Verdict.DEAD: 1}
    assert task_outcome.summary(counts) == "dead=1 delivered=2 handed_off=4 superseded=1"


def test_classify_names_the_same_three_verdicts():
    # `is`, not ==: a StrEnum equals its text, so == would pass for strings of classify's own.
    assert (classify.DELIVERED, classify.RETRY, classify.DEAD) == (Verdict.DELIVERED, Verdict.RETRY, Verdict.DEAD)
    assert classify.DELIVERED is Verdict.DELIVERED and classify.RETRY is Verdict.RETRY and classify.DEAD is Verdict.DEAD


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("verdict", [Verdict.DELIVERED, Verdict.RETRY, Verdict.DEAD])
def test_an_attempts_log_line_shows_the_verdict_as_before(caplog, fmt, verdict):
    event = Event("e1", "api.x", "api", "queued", b"{}", 0.0)
    record = Attempt(1, 0.0, status_code=503, duration=0.01)
    with caplog.at_level(logging.INFO, logger="bus.delivery"):
        delivery._log(event, record, classify.Outcome(verdict, delay=1.5 if verdict == Verdict.RETRY else 0.0))
    (line,) = [r for r in caplog.records if r.name == "bus.delivery"]
    if fmt == "text":
        assert f" verdict={TODAY[verdict]}" in line.getMessage()
    else:
        assert orjson.loads(logs.JsonFormatter().format(line))["verdict"] == TODAY[verdict]


@pytest.mark.parametrize(("answer", "verdict"), [
    ("gone", Verdict.GONE), ("superseded", Verdict.SUPERSEDED), ("delivered", Verdict.DELIVERED),
    ("dead", Verdict.DEAD), ("held", Verdict.WAITING), ("due", Verdict.WAITING),
])
def test_the_journals_answers_map_to_one_verdict_each(answer, verdict):
    assert from_journal(answer) is verdict


@pytest.mark.parametrize("answer", ["queued", "retrying", "ok", ""])
def test_an_answer_no_verdict_stands_for_is_a_clear_error(answer):
    with pytest.raises(UnknownAnswer, match=f"journal answered {answer!r}"):
        from_journal(answer)
    assert issubclass(UnknownAnswer, BusError)


@pytest.mark.parametrize("verdict", list(Verdict))
def test_each_verdict_ends_the_task_as_before(verdict):
    """dead fails the task, the three on the schedule retry it, the rest return the summary."""
    summary = task_outcome.summary({verdict: 1})

    def answers(ids: list[str]) -> list[str]:
        return ["503"] * len(ids)

    if verdict == Verdict.DEAD:
        with pytest.raises(DeadLettered, match="status dead for event e1"):
            task_outcome.finish(summary, {verdict: ["e1"]}, answers)
    elif verdict in WAITING_ON_SCHEDULE:
        assert TODAY[verdict] in ("retry", "waiting", "error")
        with pytest.raises(Retry, match="status retrying for event e1"):
            task_outcome.finish(summary, {verdict: ["e1"]}, answers)
    else:
        assert task_outcome.finish(summary, {verdict: ["e1"]}, answers) == f"{TODAY[verdict]}=1"


def test_the_cli_names_verdicts_by_the_enum_not_by_their_strings():
    # The CLI may not import bus.worker, so the enum lives in bus/lifecycle.py (re-exported by verdict.py).
    import ast
    from pathlib import Path

    from bus import lifecycle

    assert Verdict is lifecycle.Verdict
    words = {v.value for v in Verdict} - set(lifecycle.STATUSES)  # a status is compared as a status
    cli = Path(logs.__file__).parent / "cli"
    typed = [(path.name, node.lineno) for path in cli.glob("*.py") for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Compare)
             and any(isinstance(part, ast.Constant) and part.value in words for part in [node.left, *node.comparators])]
    assert typed == [], f"the CLI compares verdict strings: {typed}"


def test_events_left_at_the_deadline_are_handed_off_unless_held_back_already_or_missing():
    events = [Event(i, "api.x", "api", "queued", b"{}", 0.0) for i in ("a", "b", "c")]
    rest, verdicts = task_outcome.out_of_time(["a", "b", "gone", "c"], [events[0], events[1], None, events[2]],
                                              {"b": Verdict.WAITING, "c": Verdict.SUPERSEDED})
    assert [e.id for e in rest] == ["a"], "only the event still this task's to send goes to a new message"
    assert verdicts == [Verdict.HANDED_OFF, Verdict.WAITING, Verdict.MISSING, Verdict.SUPERSEDED]


def test_a_tally_adds_each_verdict_to_the_counts_already_there_and_names_its_ids_in_order():
    counts, ids = {Verdict.SUPERSEDED: 2, Verdict.WAITING: 1}, {Verdict.WAITING: ["w"]}
    task_outcome.tally(counts, ids, ["a", "b", "c"], [Verdict.WAITING, Verdict.DELIVERED, Verdict.WAITING])
    assert counts == {Verdict.SUPERSEDED: 2, Verdict.WAITING: 3, Verdict.DELIVERED: 1}
    assert ids == {Verdict.WAITING: ["w", "a", "c"], Verdict.DELIVERED: ["b"]}
