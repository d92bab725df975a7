"""The fidelity study's own metrics: drift bins and the grounded event precision/recall (bench/fidelity.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import fidelity  # noqa: E402


def test_time_bins_follow_training_length_or_split_in_thirds():
    assert fidelity.time_bins(300, 1800) == [(0.0, 300), (300, 900.0), (900.0, 1800)]
    assert fidelity.time_bins(1800, 600) == [(0.0, 200.0), (200.0, 400.0), (400.0, 600.0)]
    for a, b in fidelity.time_bins(1800, 1800):
        assert b > a  # no empty bin when training games are as long as the held-out ones


def test_event_scores_within_tolerance_and_by_type():
    events = [{"t": 10.0, "type": "goal"}, {"t": 50.0, "type": "corner"}, {"t": 70.0, "type": "kickoff"}]
    rows = [{"start": 11.0, "end": 12.0, "text": "GOAL! What a finish"},  # goal at 10 s, within 2 s
            {"start": 55.0, "end": 56.0, "text": "corner to Blue"},  # 5 s after the corner: too late
            {"start": 30.0, "end": 31.0, "text": "a foul in midfield"},  # no foul logged
            {"start": 40.0, "end": 41.0, "text": "goal kick taken"}]  # not a goal
    s = fidelity.event_scores(rows, events)
    assert (s["events"], s["recalled"]) == (2, 1)  # kickoff has no pattern: not counted
    assert (s["mentions"], s["grounded"]) == (4, 1)  # "goal kick" mentions goal_kick, not goal
    shifted = fidelity.event_scores(rows, events, shift=45.0)  # goal now at 55 s: no mention there
    assert shifted["grounded"] == 0


def test_mention_lag_takes_the_first_mention_after_the_event():
    events = [{"t": 10.0, "type": "goal"}, {"t": 40.0, "type": "corner"}, {"t": 70.0, "type": "foul"}]
    rows = [{"start": 13.0, "end": 14.0, "text": "goal!"}, {"start": 15.0, "end": 16.0, "text": "what a goal"},
            {"start": 39.0, "end": 40.0, "text": "corner coming"},  # only before the corner: the closest one
            {"start": 90.0, "end": 91.0, "text": "foul"}]  # 20 s late: outside the window, not recalled
    assert fidelity.mention_offsets(rows, events) == [3.0, -1.0]
