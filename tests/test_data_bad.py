"""Bad data: every case skipped and counted by reason (index time or load time), never replaced by another sample,
counted through DataLoader workers, and too much of it is ONE UserError."""

from __future__ import annotations

import shutil

import pytest
import torch

from streaming_vlm.data.bad_samples import BadSampleTracker, is_bad
from streaming_vlm.data.collator import StreamCollator
from streaming_vlm.data.dataset import build_bad_sample_tracker, build_train_dataset
from tests.fixture_video import FAST, conversation, timed_words, write_jsonl_with_seeks, write_video
from streaming_vlm.errors import UserError

SMALL = dict(min_pixels=32 * 32, max_pixels=64 * 64, total_pixels=10 ** 9, stage="clip")


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    write_video(d / "short.mp4", 4, options=FAST)
    shutil.copy(d / "short.mp4", d / "vanishing.mp4")
    (d / "empty.mp4").write_bytes(b"")
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    rows = [
        conversation("short.mp4", 0.0, 4.0, timed_words(0, 4, 0.5)),  # 0 good
        conversation("nope.mp4", 0.0, 4.0, timed_words(0, 4, 0.5)),  # 1 missing_video (index)
        conversation("empty.mp4", 0.0, 4.0, timed_words(0, 4, 0.5)),  # 2 empty_video (index)
        conversation("corrupt.mp4", 0.0, 4.0, timed_words(0, 4, 0.5)),  # 3 corrupt_video (load)
        conversation("short.mp4", 0.0, 10.0, timed_words(0, 10, 0.5)),  # 4 window_past_end (load)
        conversation("short.mp4", 0.0, 3.0, [[1.0, 1.5, "in"], [7.0, 8.0, "out"]]),  # 5 words_outside_span
        conversation("short.mp4", 0.0, 4.0, []),  # 6 empty_commentary
        None,  # 7 malformed_json
        None,  # 8 non_utf8
        {"video": "short.mp4"},  # 9 malformed_record (no commentary field at all)
        conversation("vanishing.mp4", 0.0, 4.0, timed_words(0, 4, 0.5)),  # 10 deleted after indexing (load)
        conversation("short.mp4", 0.0, 4.0, [[1.0, 1.5, "goal"], [2.0, 2.5, "<|im_end|>"]]),  # 11 control_token_text
    ]
    raw = {7: b'[{"role": "user", "content": [{"type": "video"', 8: b'{"video": "short.mp4", "content": '
                                                                      b'[[0, 1, "\xff\xfe bad bytes"]]}'}
    write_jsonl_with_seeks(d / "bad_with_seeks.jsonl", rows, raw_lines=raw)
    return d


INDEX_BAD = {"missing_video": 1, "empty_video": 1, "words_outside_span": 1, "empty_commentary": 1,
             "malformed_json": 1, "non_utf8": 1, "malformed_record": 1, "control_token_text": 1}


def _build(d, processor, **cfg):
    return build_train_dataset(dict(SMALL, train_file=str(d / "bad_with_seeks.jsonl"), **cfg), processor)


def test_every_bad_case_is_counted_by_reason_and_never_replaced(bad_dir, tiny_processor, caplog):
    ds = _build(bad_dir, tiny_processor, max_bad_fraction=1.0)
    assert dict(ds.index_bad) == INDEX_BAD  # found without decoding anything
    assert [c.record for c in ds.chunks] == [0, 3, 4, 10]
    (bad_dir / "vanishing.mp4").unlink()
    try:
        items = [ds[i] for i in range(len(ds))]
        _check_items(ds, items, tiny_processor, caplog)
    finally:
        shutil.copy(bad_dir / "short.mp4", bad_dir / "vanishing.mp4")


def _check_items(ds, items, tiny_processor, caplog):
    assert not is_bad(items[0]) and items[0]["index"] == 0
    assert [(x["bad_sample"], x["index"]) for x in items[1:]] == [
        ("corrupt_video", 1), ("window_past_end", 2), ("missing_video", 3)]
    assert "skipping bad data [corrupt_video]" in caplog.text
    batch = StreamCollator(tiny_processor)(items)
    assert batch["bad_samples"] == {"corrupt_video": 1, "window_past_end": 1, "missing_video": 1}
    assert batch["n_samples"] == 4 and batch["n_good"] == 1 and batch["sample_index"] == [0]
    assert batch["input_ids"].shape[0] == 1 and torch.equal(batch["input_ids"][0], items[0]["input_ids"])

    # through 2 worker processes, the counts reach the main process in the batches
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, collate_fn=StreamCollator(tiny_processor))
    tracker = BadSampleTracker(1.0, index_bad=ds.index_bad)
    seen = []
    for b in loader:
        tracker.update(b)
        seen += b["sample_index"]
        if b["n_good"] == 0:
            assert b["empty"] and b["dummy_vision"] and b["num_label_tokens"] == 0
    assert seen == [0]
    assert dict(tracker.counts) == {"corrupt_video": 1, "window_past_end": 1, "missing_video": 1}
    m = tracker.metrics()
    assert m["data/bad/missing_video"] == 2 and m["data/bad/malformed_json"] == 1 and m["data/bad_fraction"] == 0.75


def test_too_many_bad_records_is_one_user_error(bad_dir, tiny_processor):
    with pytest.raises(UserError) as err:
        _build(bad_dir, tiny_processor, max_bad_fraction=0.5)
    msg = str(err.value)
    assert "8 of 12" in msg and "max_bad_fraction=0.5" in msg and "non_utf8 1" in msg and "\n" not in msg


def test_too_many_bad_samples_at_load_time_stops_the_run(bad_dir, tiny_processor):
    ds = _build(bad_dir, tiny_processor, max_bad_fraction=0.7)  # 8/12 records bad: allowed at index time
    tracker = build_bad_sample_tracker(dict(max_bad_fraction=0.4), ds)
    assert tracker.expected_total == len(ds) == 4
    collate = StreamCollator(tiny_processor)
    tracker.update(collate([ds[0], ds[1]]))  # 1 bad: within 0.4 of the 4 samples the run will ask for
    with pytest.raises(UserError, match=r"2 of 4 \(50.0%\).*max_bad_fraction=0.4 \(corrupt_video 1, window_past"):
        tracker.update(collate([ds[2], ds[3]]))  # the 2nd bad one crosses the line, before the epoch ends
    running = BadSampleTracker(0.15, min_samples=5)
    running.add({"corrupt_video": 1}, 2)  # 50 % but only 2 seen: no verdict yet
    with pytest.raises(UserError, match="seen so far"):
        running.add({}, 3)
