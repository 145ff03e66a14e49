"""The bench's targets table: every target is reported, measured or not."""

from __future__ import annotations

from bench.targets import TARGETS, Target, evaluate, figure, ratio


def test_a_ratio_is_checked_against_its_bound() -> None:
    target = Target("x vs y", ratio(("a", "x"), ("b", "y")), ">=", 0.5)
    [passed] = evaluate({"a": {"x": 60}, "b": {"y": 100}}, (target,))
    [missed] = evaluate({"a": {"x": 40}, "b": {"y": 100}}, (target,))
    assert (passed["result"], passed["measured"]) == ("PASS", 0.6)
    assert passed["shown"] == "0.60x (60 / 100/s)"
    assert missed["result"] == "MISS"


def test_an_upper_bound_passes_at_or_below_it() -> None:
    target = Target("p99", figure("lat", "p99_ms", " ms", ".2f"), "<=", 5, " ms")
    assert [c["result"] for c in evaluate({"lat": {"p99_ms": 5.0}}, (target,))] == ["PASS"]
    assert [c["result"] for c in evaluate({"lat": {"p99_ms": 5.1}}, (target,))] == ["MISS"]


def test_missing_figures_say_not_run_and_name_the_parts() -> None:
    target = Target("x vs y", ratio(("a", "x"), ("b", "y")), ">=", 0.5)
    for medians in ({}, {"a": {"x": 1}}, {"a": {"x": 1}, "b": {"y": None}}, {"b": {"y": 0}}):
        [row] = evaluate(medians, (target,))
        assert (row["result"], row["shown"], row["parts"]) == ("not run", "not run", ["a", "b"])


def test_a_zero_reference_is_not_run_rather_than_a_crash() -> None:
    target = Target("x vs y", ratio(("a", "x"), ("b", "y")), ">=", 0.5)
    assert evaluate({"a": {"x": 1}, "b": {"y": 0}}, (target,))[0]["result"] == "not run"


def test_every_target_of_issue_17_is_listed_once() -> None:
    names = [t.name for t in TARGETS]
    assert len(names) == len(set(names))
    rows = evaluate({})
    assert len(rows) == len(TARGETS)
    assert {r["result"] for r in rows} == {"not run"}
