"""The checker on hand-made histories: each rule fires on the history that breaks it, and only there."""

from __future__ import annotations

from .checker import Answer, Entry, Final, History, Message, Request, Run, check

OK = "ok"


def ok(turn: int, run: str | None = None) -> Answer:
    return Answer(True, turn=turn, run=run or f"run-{turn}")


def error(status: int | None, code: str) -> Answer:
    return Answer(False, code=code, status=status)


def message(text: str, *answers: Answer, sent: float = 0.0, answered: float = 10.0) -> Message:
    """A message first sent at ``sent``; its requests are answered at ``answered``, one second apart."""
    requests = [Request(sent + i, answered + i, answer, retry=i > 0) for i, answer in enumerate(answers)]
    return Message(text, f"key-{text}", requests)


def serial_runs(texts: list[str]) -> list[Run]:
    """One handler run per committed message, one after the other: run-1 in [1, 1.5], run-2 in [2, 2.5], …"""
    return [Run(f"run-{i}", text, pid=100, attempt=1, start=float(i), end=i + 0.5)
            for i, text in enumerate(texts, start=1)]


def history(committed: list[str], messages: list[Message], runs: list[Run] | None = None,
            seen: list[Entry] | None = None) -> History:
    entries = seen if seen is not None else [Entry(t, f"run-{i}", i) for i, t in enumerate(committed, start=1)]
    final = Final(len(entries), entries, [e.text for e in entries][-2:])
    return History("c", messages, serial_runs(committed) if runs is None else runs, final)


def rules(h: History) -> list[str]:
    return sorted({v.rule for v in check(h)})


def test_a_serial_history_with_retries_and_interrupts_has_no_violation() -> None:
    # Given a acknowledged, b unknown then told by a retry, c interrupted, d answered after a takeover
    h = history(["a", "b", "d"], [
        message("a", ok(1), answered=1.6),
        message("b", error(503, "outcome_unknown"), ok(2), sent=1.7),
        message("c", error(409, "turn_interrupted"), sent=2.0),
        message("d", error(None, "no_answer"), error(503, "lease_lost"), ok(3), sent=2.1),
    ], runs=[*serial_runs(["a", "b", "d"]),
             Run("killed", "d", pid=200, attempt=1, start=2.6, end=None)])  # a killed run, before the one that won
    assert check(h) == []


def test_a_message_committed_twice_is_a_duplicate() -> None:
    h = history(["a", "b", "a"], [message("a", ok(1)), message("b", ok(2))])
    assert "duplicate" in rules(h)


def test_a_message_acknowledged_before_another_was_sent_must_commit_before_it() -> None:
    # Given a acknowledged at t=1.6 and b first sent at t=2, When the store has b before a
    h = history(["b", "a"], [message("a", ok(2, "run-2"), answered=1.6), message("b", ok(1, "run-1"), sent=2.0)])
    # Then that is a reorder (the answers themselves agree with the state)
    assert rules(h) == ["reorder"]


def test_concurrent_messages_may_commit_in_either_order() -> None:
    h = history(["b", "a"], [message("a", ok(2, "run-2"), sent=0.0, answered=3.0),
                             message("b", ok(1, "run-1"), sent=0.1, answered=2.0)])
    assert check(h) == []


def test_a_run_that_starts_while_a_committing_run_is_in_its_handler_is_an_overlap() -> None:
    # Given the run that committed a in [1, 1.5], When a second run of a starts at 1.2 (on another instance)
    runs = [*serial_runs(["a"]), Run("stale", "a", pid=200, attempt=2, start=1.2, end=1.9)]
    h = history(["a"], [message("a", ok(1))], runs=runs)
    assert rules(h) == ["overlap"]


def test_two_committed_runs_that_overlap_are_an_overlap() -> None:
    runs = [Run("run-1", "a", pid=100, attempt=1, start=1.0, end=2.0),
            Run("run-2", "b", pid=200, attempt=1, start=1.5, end=2.5)]
    h = history(["a", "b"], [message("a", ok(1)), message("b", ok(2))], runs=runs)
    assert rules(h) == ["overlap"]


def test_a_failed_answer_for_a_committed_message_is_a_violation() -> None:
    h = history(["a"], [message("a", error(500, "turn_failed"))])
    assert rules(h) == ["failed_but_committed"]


def test_an_internal_error_for_a_committed_message_is_a_violation() -> None:
    h = history(["a"], [message("a", error(503, "store_unavailable"), error(500, "internal"))])
    assert rules(h) == ["failed_but_committed"]


def test_a_failed_answer_for_a_message_that_did_not_commit_is_fine() -> None:
    h = history([], [message("a", error(500, "turn_failed")), message("b", error(409, "conversation_busy"))])
    assert check(h) == []


def test_an_acknowledged_message_missing_from_the_state_is_lost() -> None:
    h = history(["a"], [message("a", ok(1)), message("b", ok(2))])
    assert "lost" in rules(h)


def test_an_outcome_no_retry_told_is_unresolved() -> None:
    h = history([], [message("a", error(503, "outcome_unknown"), error(503, "store_unavailable"))])
    assert rules(h) == ["unresolved"]


def test_an_answer_naming_another_turn_or_run_than_the_state_is_wrong() -> None:
    h = history(["a"], [message("a", ok(1, "run-elsewhere"))])
    assert rules(h) == ["wrong_answer"]


def test_a_retry_contradicting_the_first_answer_is_inconsistent() -> None:
    h = history([], [message("a", error(409, "turn_interrupted"), ok(1))])
    assert "inconsistent_answers" in rules(h)


def test_a_turn_that_did_not_see_the_turns_before_it_breaks_continuity() -> None:
    # Given b ran as turn 1 (it did not see a), and the stale commit landed after a's
    seen = [Entry("a", "run-1", 1), Entry("b", "run-2", 1)]
    h = history(["a", "b"], [message("a", ok(1)), message("b", ok(2))], seen=seen)
    assert rules(h) == ["continuity"]


def test_an_accepted_message_never_processed_breaks_durability() -> None:
    h = history(["a"], [message("a", ok(1)), message("b", error(None, "no_answer"), error(504, "turn_timeout"))])
    h.final.pending = 1
    assert rules(h) == ["durable", "unresolved"]


def test_a_committed_message_nobody_sent_is_a_phantom() -> None:
    h = history(["a", "x"], [message("a", ok(1))])
    assert rules(h) == ["phantom"]


def test_a_committed_run_without_handler_records_is_reported() -> None:
    h = history(["a"], [message("a", ok(1))], runs=[])
    assert rules(h) == ["unrecorded_run"]


def test_a_refused_request_does_not_stop_a_later_one_with_the_same_key() -> None:
    # Given a refused while another turn ran (policy reject), then accepted by a retry with the same key
    h = history(["a"], [message("a", error(409, "conversation_busy"), ok(1))])
    assert check(h) == []


def test_a_message_refused_by_every_request_must_not_commit() -> None:
    h = history(["a"], [message("a", error(409, "conversation_busy"))])
    assert rules(h) == ["failed_but_committed"]


def test_the_reply_to_another_message_is_a_wrong_answer() -> None:
    h = history(["a", "b"], [message("a", Answer(True, turn=1, run="run-1", reply="b")), message("b", ok(2))])
    assert rules(h) == ["wrong_answer"]
