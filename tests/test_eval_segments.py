"""Segmenting reference games, the (start, end] end-time rule, candidates, prediction files, LiveSports rows."""

import json

import pytest

from data.livesports import convert, load_source, to_stream_records
from streaming_vlm.errors import UserError
from streaming_vlm.eval.livesports import livesports_segments
from streaming_vlm.eval.pipeline import detect_protocol, segments_for
from streaming_vlm.eval.predictions import candidate_text, clean_output_text, load_outputs, outputs_from_segments
from streaming_vlm.eval.segments import inf_streams_segments, window_index


def words_in(start, end, n, word="w"):
    """n reference items [s, e, word] whose end times lie strictly inside (start, end)."""
    step = (end - start) / (n + 1)
    return [[start + i * step, start + (i + 1) * step, word] for i in range(n)]


def game(video="g1.mp4", content=()):
    return {"video": video, "title": "Game", "content": list(content), "preasr": ""}


def test_hundred_second_segments_keep_only_those_with_enough_words():
    content = words_in(0, 100, 250) + words_in(100, 200, 150) + words_in(200, 300, 199) + words_in(300, 400, 200)
    segs = inf_streams_segments([game(content=content)])
    assert [(s.start, s.end) for s in segs] == [(0, 100), (300, 400)]
    assert [s.reference_words for s in segs] == [250, 200]
    assert segs[0].id == "g1.mp4#0-100"
    # both numbers are configurable
    assert len(inf_streams_segments([game(content=content)], min_words=151)) == 3
    halves = inf_streams_segments([game(content=content)], segment_seconds=50, min_words=120)
    assert [(s.start, s.end, s.reference_words) for s in halves] == [(0, 50, 125), (50, 100, 125)]


def test_reference_items_belong_to_the_segment_in_which_they_end():
    content = [[99.5, 100.0, "edge"], [99.9, 100.01, "after"], [-1.0, 0.0, "before"], [150, 200.0, "last"]]
    segs = inf_streams_segments([game(content=content)], min_words=1)
    assert {(s.start, s.end): s.reference for s in segs} == {(0, 100): "edge", (100, 200): "after last"}


def test_window_index_is_exact_at_boundaries():
    assert window_index(100.0, 100) == 0
    assert window_index(100.0000001, 100) == 1
    assert window_index(0.3, 0.1) == 2  # 0.3 / 0.1 is 2.9999999999999996 in floats
    assert window_index(1e-9, 100) == 0


def test_rows_of_the_same_video_are_merged_and_bad_content_is_an_error():
    first, second = game(content=words_in(0, 100, 120)), game(content=words_in(0, 100, 80))
    assert [s.reference_words for s in inf_streams_segments([first, second])] == [200]
    with pytest.raises(UserError, match="content item 0"):
        inf_streams_segments([game(content=[[0, "x", "word"]])])
    with pytest.raises(UserError, match="no 100 s segment"):
        segments_for([game(content=words_in(0, 100, 10))])


def test_candidate_uses_outputs_ending_in_the_segment_and_drops_silence():
    seg = inf_streams_segments([game(content=words_in(100, 200, 200))])[0]
    outputs = outputs_from_segments(
        {
            "g1.mp4": [
                {"start": 99, "end": 100, "text": "before"},  # ends at the start: previous segment
                {"start": 100, "end": 101, "text": " kick off ..."},
                {"start": 101, "end": 102, "text": " ..."},
                {"start": 102, "end": 103, "text": ""},
                {"start": 199, "end": 200, "text": "final whistle"},  # ends exactly at the end: included
                {"start": 200, "end": 201, "text": "after"},
            ]
        },
        "model",
    )
    assert candidate_text(outputs, seg) == "kick off final whistle"
    silent = outputs_from_segments({"g1.mp4": [{"start": 150, "end": 151, "text": " ..."}]}, "model")
    assert candidate_text(silent, seg) == ""  # silence is a (poor) prediction, not a missing one
    assert candidate_text(outputs_from_segments({"other.mp4": [{"start": 150, "end": 151, "text": "x"}]}, "m"), seg) is None
    assert clean_output_text("and he... ") == "and he..."


def test_whole_game_rows_give_the_same_candidate_as_per_second_rows(tmp_path):
    seg = inf_streams_segments([game(content=words_in(0, 100, 200))])[0]
    per_second = tmp_path / "a.jsonl"
    per_second.write_text(
        "\n".join(json.dumps({"video": "g1.mp4", "start": t, "end": t + 1, "text": f"word{t}"}) for t in (5, 50, 99))
    )
    whole = tmp_path / "b.jsonl"
    whole.write_text(json.dumps({"video": "g1.mp4", "content": [[t, t + 1, f"word{t}"] for t in (50, 99, 5)]}))
    a, b = load_outputs(per_second, "model"), load_outputs(whole, "baseline")
    assert candidate_text(a, seg) == candidate_text(b, seg) == "word5 word50 word99"


def test_malformed_prediction_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "pred.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"video": "g1.mp4", "start": 0, "end": 1, "text": "hello"}),
                '{"video": "g1.mp4", "start": 1, "end"',  # cut off
                json.dumps({"start": 1, "end": 2, "text": "no video"}),
                json.dumps({"video": "g1.mp4", "start": "one", "end": 2, "text": "x"}),
                "",
                json.dumps([1, 2, 3]),
                json.dumps({"video": "g1.mp4", "start": 2, "end": 3, "text": "world"}),
            ]
        )
        + "\n"
    )
    outputs = load_outputs(path, "model")
    assert outputs.rows == 2
    assert outputs.skipped_lines == [2, 3, 4, 6]
    assert outputs.summary()["skipped_lines"] == 4
    assert "line 2: not valid JSON" in outputs.skipped_reasons


def test_unusable_prediction_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="baseline predictions file not found"):
        load_outputs(tmp_path / "nope.jsonl", "baseline")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="holds no rows"):
        load_outputs(empty, "model")
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n{also not\n")
    with pytest.raises(UserError, match="none of its 2 lines"):
        load_outputs(garbage, "model")


HF_ROWS = [
    {"video_id": "yt1", "event_id": 0, "begin": 10.0, "end": 20.0, "event_title": "Q1", "preasr_text": "before",
     "event_asr_text": "he shoots he scores"},
    {"video_id": "yt1", "event_id": 1, "begin": 15.0, "end": 30.0, "event_title": "Q1", "preasr_text": None,
     "event_asr_text": "timeout called"},
]


def test_livesports_rows_convert_and_become_one_segment_per_event():
    rows = convert(iter(HF_ROWS))
    assert rows[0] == {"video": "yt1", "event_id": "0", "start": 10.0, "end": 20.0, "title": "Q1",
                       "preasr": "before", "reference": "he shoots he scores"}
    assert rows[1]["preasr"] == ""
    assert detect_protocol(rows) == detect_protocol(HF_ROWS) == "livesports"
    segs = livesports_segments(rows)
    assert [(s.id, s.reference) for s in segs] == [("yt1#0", "he shoots he scores"), ("yt1#1", "timeout called")]
    assert [s.id for s in livesports_segments(HF_ROWS)] == ["yt1#0", "yt1#1"]
    records = to_stream_records(rows, video_root="/videos")
    assert (records[0].video, records[0].start, records[0].end, records[0].previous) == ("/videos/yt1", 10.0, 20.0, "before")
    assert records[1].meta["event_id"] == "1"


def test_livesports_candidates_follow_event_ids_when_rows_carry_them():
    seg0, seg1 = livesports_segments(HF_ROWS)
    tagged = outputs_from_segments(
        [
            {"video": "yt1", "event_id": 0, "start": 10, "end": 20, "text": "baseline says goal"},
            {"video": "yt1", "event_id": "1", "start": 15, "end": 30, "text": "baseline says timeout"},
        ],
        "baseline",
    )
    assert candidate_text(tagged, seg0) == "baseline says goal"  # the overlapping event 1 row is not mixed in
    assert candidate_text(tagged, seg1) == "baseline says timeout"
    untagged = outputs_from_segments({"yt1": [{"start": 17, "end": 18, "text": "shot"}]}, "model")
    assert candidate_text(untagged, seg0) == candidate_text(untagged, seg1) == "shot"  # time rule for both


def test_livesports_bad_rows_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="row 0: missing field"):
        convert([{"video_id": "x"}])
    with pytest.raises(UserError, match="appears twice"):
        convert([HF_ROWS[0], HF_ROWS[0]])
    with pytest.raises(UserError, match="must be after"):
        convert([{**HF_ROWS[0], "end": 5.0}])
    export = tmp_path / "cc.jsonl"
    export.write_text("\n".join(json.dumps(r) for r in HF_ROWS))
    assert len(convert(load_source(str(export)))) == 2
