"""Offline judge (deterministic, closer candidate wins, ties within the margin), strict answers, prompts, cache."""

import json

import pytest

from streaming_vlm.errors import UserError
from streaming_vlm.eval.judge_cache import JudgeCache, cache_key
from streaming_vlm.eval.offline_judge import OfflineJudge, similarity
from streaming_vlm.eval.prompts import CANDIDATE_CHAR_LIMIT, SILENT_CANDIDATE, build_messages
from streaming_vlm.eval.verdict import Verdict, parse_choice

REF = "james drives to the basket, kicks it out to curry in the corner, curry for three, and it is good"
CLOSE = "james drives, kicks out to curry in the corner for three and it's good"
FAR = "welcome back everyone to tonight's broadcast from a sold out arena"


def test_picks_the_candidate_closer_to_the_reference_in_either_slot():
    judge = OfflineJudge()
    assert judge.compare(REF, CLOSE, FAR, "inf-streams").choice == "A"
    assert judge.compare(REF, FAR, CLOSE, "inf-streams").choice == "B"
    assert judge.compare(REF, CLOSE, FAR, "livesports").choice == "A"


def test_is_deterministic():
    verdicts = {OfflineJudge().compare(REF, CLOSE, FAR, "inf-streams") for _ in range(5)}
    assert len(verdicts) == 1
    assert OfflineJudge().identity() == OfflineJudge().identity()


def test_ties_within_the_margin_only():
    assert OfflineJudge().compare(REF, CLOSE, CLOSE, "inf-streams").choice == "tie"
    slightly_worse = CLOSE + " indeed"
    gap = similarity(CLOSE, REF) - similarity(slightly_worse, REF)
    assert 0 < gap < 0.05
    wide, narrow = OfflineJudge(margin=gap + 0.005), OfflineJudge(margin=gap - 0.005)
    assert wide.compare(REF, CLOSE, slightly_worse, "inf-streams").choice == "tie"
    assert wide.compare(REF, slightly_worse, CLOSE, "inf-streams").choice == "tie"
    assert narrow.compare(REF, CLOSE, slightly_worse, "inf-streams").choice == "A"
    assert narrow.compare(REF, slightly_worse, CLOSE, "inf-streams").choice == "B"


def test_repetition_loops_and_silence_lose():
    loop = " ".join(["curry for three"] * 40)
    assert OfflineJudge().compare(REF, loop, CLOSE, "inf-streams").choice == "B"
    assert OfflineJudge().compare(REF, "", FAR, "inf-streams").choice in ("B", "tie")
    assert similarity("", REF) == 0.0
    assert OfflineJudge().compare(REF, "", CLOSE, "inf-streams").choice == "B"


def test_answers_are_read_strictly():
    assert parse_choice("A") == "A" and parse_choice(" B.\n") == "B" and parse_choice("**A**") == "A"
    for garbage in ("I think A is better", "A or B", "AB", "b", "", "Answer: A", "A\nB"):
        assert parse_choice(garbage) == "invalid", garbage


def test_prompts_cap_candidates_and_differ_by_protocol():
    long = "x" * (CANDIDATE_CHAR_LIMIT + 1000)
    system, user = build_messages("ref", long, "", "inf-streams")
    assert "x" * CANDIDATE_CHAR_LIMIT in user["content"] and "x" * (CANDIDATE_CHAR_LIMIT + 1) not in user["content"]
    assert SILENT_CANDIDATE in user["content"]
    assert "pace" in system["content"] and "A or B" in system["content"]
    live_system = build_messages("ref", "a", "b", "livesports")[0]["content"]
    assert "alignment" in live_system.lower() and live_system != system["content"]
    with pytest.raises(UserError, match="unknown protocol"):
        build_messages("ref", "a", "b", "olympics")


def test_cache_survives_a_half_written_last_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = JudgeCache(path)
    cache.put("k1", Verdict("A", "A"))
    cache.put("k2", Verdict("invalid", "lost", cacheable=False))  # transport loss: not stored
    with path.open("a") as f:
        f.write('{"key": "k3", "cho')  # the process died here
    reloaded = JudgeCache(path)
    assert len(reloaded) == 1 and reloaded.get("k1") == Verdict("A", "A") and reloaded.unreadable_lines == 1
    reloaded.put("k4", Verdict("B", "B"))
    again = JudgeCache(path)
    assert again.get("k4") == Verdict("B", "B") and len(again) == 2
    assert all(json.loads(line)["key"] for line in path.read_text().splitlines()[-1:])


def test_cache_key_depends_on_judge_and_prompt():
    assert cache_key("openai|m|http://a", "p") != cache_key("openai|m|http://b", "p")
    assert cache_key("openai|m|http://a", "p") != cache_key("openai|m|http://a", "q")
    assert cache_key("openai|m|http://a", "p") == cache_key("openai|m|http://a", "p")
