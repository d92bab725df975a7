"""Win-rate arithmetic on hand-made verdicts: both orders, ties, invalid, missing segments, per video."""

import pytest

from streaming_vlm.errors import UserError
from streaming_vlm.eval.head_to_head import judge_segments, outcome_of
from streaming_vlm.eval.predictions import outputs_from_segments
from streaming_vlm.eval.segments import Segment
from streaming_vlm.eval.verdict import Verdict
from streaming_vlm.eval.win_rate import format_table, win_rate_report


def rec(segment, video, order, outcome, missing=None):
    return {"record": "verdict", "segment": segment, "video": video, "order": order, "outcome": outcome,
            "missing": missing}


def both(segment, video, first, second, missing=None):
    return [rec(segment, video, "model_first", first, missing), rec(segment, video, "model_second", second, missing)]


RECORDS = (
    both("s1", "v1", "model", "model")  # model wins both orders
    + both("s2", "v1", "model", "baseline")  # split
    + both("s3", "v2", "tie", "invalid")  # neither counts, both stay in the denominator
    + both("s4", "v2", "missing", "missing", missing="model")  # the model said nothing there
)


def test_overall_counts_every_vote_and_keeps_ties_invalid_and_missing_in_the_denominator():
    overall = win_rate_report(RECORDS)["overall"]
    assert overall == {
        "segments": 4,
        "votes": 8,
        "model_votes": 3,
        "baseline_votes": 1,
        "ties": 1,
        "invalid": 1,
        "missing_votes": 2,
        "win_rate_pct": 37.5,
    }


def test_per_video_win_rates():
    per_video = win_rate_report(RECORDS)["per_video"]
    assert per_video["v1"]["win_rate_pct"] == 75.0
    assert per_video["v2"]["win_rate_pct"] == 0.0
    assert per_video["v2"]["votes"] == 4


def test_missing_segments_are_listed_and_the_policy_is_explicit():
    report = win_rate_report(RECORDS + both("s5", "v3", "missing", "missing", missing="baseline"))
    assert report["missing"] == {"segments": 2, "model": ["s4"], "baseline": ["s5"]}
    assert report["overall"]["win_rate_pct"] == 30.0  # 3 / 10: a missing baseline is no walkover
    excluded = win_rate_report(RECORDS + both("s5", "v3", "missing", "missing", missing="baseline"), missing="exclude")
    assert excluded["overall"]["votes"] == 6 and excluded["overall"]["win_rate_pct"] == 50.0
    assert excluded["per_video"]["v3"]["win_rate_pct"] is None
    assert excluded["missing"]["baseline"] == ["s5"]  # still listed
    table = format_table(report)
    assert "OVERALL" in table and "missing segments: 2" in table and "without model output: s4" in table


def test_bad_verdict_sets_are_refused_not_miscounted():
    with pytest.raises(UserError, match="two verdicts"):
        win_rate_report(RECORDS + [RECORDS[0]])
    with pytest.raises(UserError, match="unknown outcome"):
        win_rate_report([rec("s1", "v1", "model_first", "win")])
    with pytest.raises(UserError, match="policy"):
        win_rate_report(RECORDS, missing="ignore")
    report = win_rate_report(RECORDS[:3])  # s2 judged in one order only: counted and flagged
    assert report["single_order_segments"] == ["s2"] and report["overall"]["votes"] == 3


def test_outcome_maps_the_judges_letter_to_the_system_in_that_slot():
    assert outcome_of("A", "A") == "model" and outcome_of("B", "A") == "baseline"
    assert outcome_of("B", "B") == "model" and outcome_of("A", "B") == "baseline"
    assert outcome_of("tie", "A") == "tie" and outcome_of("invalid", "B") == "invalid"


class AlwaysA:
    """A judge with total position bias: judging in both orders must cancel it out to exactly 50%."""

    def __init__(self):
        self.calls = []

    def identity(self):
        return "always-a"

    def prompt(self, reference, cand_a, cand_b, protocol):
        return f"{reference}|{cand_a}|{cand_b}"

    def compare(self, reference, cand_a, cand_b, protocol):
        self.calls.append((cand_a, cand_b))
        return Verdict("A", "A")


def test_each_segment_is_judged_twice_with_the_order_swapped():
    segments = [Segment(f"v#{k}", "v", 100.0 * k, 100.0 * (k + 1), "ref") for k in range(3)]
    model = outputs_from_segments({"v": [{"start": 100 * k, "end": 100 * k + 1, "text": f"model{k}"} for k in (0, 1)]}, "model")
    baseline = outputs_from_segments({"v": [{"start": 100 * k, "end": 100 * k + 1, "text": f"base{k}"} for k in range(3)]}, "baseline")
    judge = AlwaysA()
    records = judge_segments(segments, model, baseline, judge, "inf-streams", concurrency=2)
    assert sorted(judge.calls) == sorted([("model0", "base0"), ("base0", "model0"), ("model1", "base1"), ("base1", "model1")])
    assert [(r["segment"], r["order"], r["outcome"]) for r in records] == [
        ("v#0", "model_first", "model"),
        ("v#0", "model_second", "baseline"),
        ("v#1", "model_first", "model"),
        ("v#1", "model_second", "baseline"),
        ("v#2", "model_first", "missing"),
        ("v#2", "model_second", "missing"),
    ]
    report = win_rate_report(records)
    assert report["overall"]["model_votes"] == 2 and report["overall"]["votes"] == 6
    assert report["missing"]["model"] == ["v#2"]
    assert win_rate_report(records, missing="exclude")["overall"]["win_rate_pct"] == 50.0
