"""Sources -> StreamRecord: LiveCC conversations with seeks (sidecar / last line / scan), Inf-Stream-Eval rows,
Hugging Face datasets, root resolution, and bad rows reported by reason."""

from __future__ import annotations

import json

import pytest

from streaming_vlm.data.bad_samples import (EMPTY_COMMENTARY, MALFORMED_JSON, MALFORMED_RECORD, NON_UTF8,
                                            WORDS_OUTSIDE_SPAN, BadSample)
from streaming_vlm.data.chunker import validate_record
from tests.fixture_video import conversation, timed_words, write_jsonl_with_seeks
from streaming_vlm.data.sources import (HFSource, JsonlSource, open_source, record_from_row, seeks_sidecar,
                                        split_line)
from streaming_vlm.errors import UserError


def _rows():
    return [
        conversation("videos/a.mp4", 16.8, 40.0, [[16.8, 16.9, "all"], [16.9, 17.2, "right"]], "before", "A v B"),
        conversation("/abs/b.mp4", 0.0, 10.0, [[1.0, 1.5, "x"]]),
        conversation("c.mp4", 0.0, 10.0, [[2.0, 2.5, "ünïcødé"]]),
    ]


@pytest.mark.parametrize("sidecar", [True, False])
def test_conversation_jsonl_random_access(tmp_path, sidecar):
    path = write_jsonl_with_seeks(tmp_path / "train_with_seeks.jsonl", _rows(), sidecar=sidecar)
    assert seeks_sidecar(path).name == "train_seeks.jsonl"
    assert seeks_sidecar(path).exists() == sidecar
    src = JsonlSource(path, root=tmp_path / "root")
    assert ("seeks file" in src.offset_origin) if sidecar else ("last line" in src.offset_origin)
    assert len(src) == 3
    rec = src[0]
    assert rec.video == str(tmp_path / "root" / "videos/a.mp4")
    assert (rec.start, rec.end, rec.previous, rec.title) == (16.8, 40.0, "before", "A v B")
    assert rec.words == [(16.8, 16.9, "all"), (16.9, 17.2, "right")]
    assert src[1].video == "/abs/b.mp4"  # absolute paths are kept
    assert src[2].words[0][2] == "ünïcødé"
    assert src[2].video == str(tmp_path / "root" / "c.mp4")


def test_jsonl_without_offsets_is_scanned_and_root_defaults_to_its_dir(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps(r) + "\n\n" for r in _rows()))  # blank lines are not rows
    src = JsonlSource(path)
    assert src.offset_origin == "a scan of the file" and len(src) == 3
    assert src[2].video == str(tmp_path / "c.mp4")


def test_seeks_that_do_not_match_the_file_are_reported_and_the_file_rescanned(tmp_path, caplog):
    path = write_jsonl_with_seeks(tmp_path / "x_with_seeks.jsonl", _rows())
    seeks_sidecar(path).write_text(json.dumps([0, 10 ** 9]))
    source = JsonlSource(path)
    assert len(source) == len(_rows()) and "does not match" in caplog.text and "rescanned" in caplog.text


def test_malformed_json_and_non_utf8_rows(tmp_path):
    rows = _rows()
    raw = {0: b'[{"role": "user", "content": [', 1: b'{"video": "a.mp4", "content": [[0, 1, "caf\xe9"]]}',
           2: b'{"video": "a.mp4", "content": [[0, 1, "bad \\ud800 surrogate"]]}'}
    path = write_jsonl_with_seeks(tmp_path / "bad_with_seeks.jsonl", rows + [{"no": "fields"}], raw_lines=raw)
    src = JsonlSource(path)
    reasons = []
    for i in range(len(src)):
        with pytest.raises(BadSample) as err:
            src[i]
        reasons.append(err.value.reason)
        assert f"row {i}" in str(err.value)
    assert reasons == [MALFORMED_JSON, NON_UTF8, NON_UTF8, MALFORMED_RECORD]


def test_inf_stream_eval_rows_split_lines_into_interpolated_words():
    assert split_line(10.0, 12.0, "  one two  three four ") == [
        (10.0, 10.5, "one"), (10.5, 11.0, "two"), (11.0, 11.5, "three"), (11.5, 12.0, "four")]
    row = {"video": "g.mp4", "title": "T", "preasr": "earlier talk",
           "content": [[100.2, 101.2, "a b"], [103.0, 104.5, "c d e"]]}
    rec = record_from_row(row, root="/data")
    assert rec.video == "/data/g.mp4" and rec.previous == "earlier talk" and rec.title == "T"
    assert (rec.start, rec.end) == (100, 105)
    assert [w[2] for w in rec.words] == ["a", "b", "c", "d", "e"]
    assert rec.words[1] == pytest.approx((100.7, 101.2, "b"))
    assert rec.words[-1] == pytest.approx((104.0, 104.5, "e"))


def test_hf_dataset_rows_in_every_form(tmp_path):
    import datasets

    conv = conversation("a.mp4", 0.0, 5.0, [[0.5, 1.0, "hi"]])
    ds = datasets.Dataset.from_list([
        {"messages": json.dumps(conv), "video": None, "content": None, "text_stream": None},
        {"messages": None, "video": "b.mp4", "content": json.dumps([[1.0, 2.0, "two words"]]), "text_stream": None},
        {"messages": None, "video": "c.mp4", "content": None, "text_stream": json.dumps([[0.2, 0.4, "flat"]])},
    ])
    src = HFSource(ds, root="/r")
    assert [src[i].video for i in range(3)] == ["/r/a.mp4", "/r/b.mp4", "/r/c.mp4"]
    assert [w[2] for w in src[0].words] == ["hi"]
    assert [w[2] for w in src[1].words] == ["two", "words"]
    assert src[2].words == [(0.2, 0.4, "flat")]
    ds.save_to_disk(str(tmp_path / "saved"))
    src2 = open_source(tmp_path / "saved", root="/r")
    assert isinstance(src2, HFSource) and src2[1].words == src[1].words
    structs = HFSource(datasets.Dataset.from_list(
        [{"video": "d.mp4", "content": [{"start": 1.0, "end": 2.0, "text": "struct form"}]}]))
    assert [w[2] for w in structs[0].words] == ["struct", "form"]
    with pytest.raises(UserError, match="not found"):
        open_source(tmp_path / "missing.jsonl")


def test_record_validation_reasons():
    ok = record_from_row(conversation("a.mp4", 0.0, 10.0, timed_words(0, 10)))
    validate_record(ok)
    with pytest.raises(BadSample) as err:
        validate_record(record_from_row(conversation("a.mp4", 0.0, 10.0, [])))
    assert err.value.reason == EMPTY_COMMENTARY
    with pytest.raises(BadSample) as err:
        validate_record(record_from_row(conversation("a.mp4", 0.0, 10.0, [[1, 2, "in"], [14.0, 15.0, "out"]])))
    assert err.value.reason == WORDS_OUTSIDE_SPAN
    with pytest.raises(BadSample) as err:
        record_from_row(conversation("a.mp4", 0.0, 10.0, [[3.0, 2.0, "backwards"]]))
    assert err.value.reason == MALFORMED_RECORD
