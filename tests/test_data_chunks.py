"""Chunks and encoded samples: exact layout and labels, word-to-second assignment, W/S overlap, previous-text
truncation in tokens, absolute timestamps, determinism, a 2-worker DataLoader."""

from __future__ import annotations

import re

import pytest
import torch

from streaming_vlm.data.chunker import (Chunk, chunks_for, previous_text, second_texts, stream_windows)
from streaming_vlm.data.collator import StreamCollator
from streaming_vlm.data.dataset import build_train_dataset
from tests.fixture_video import FAST, conversation, timed_words, write_jsonl_with_seeks, write_video
from streaming_vlm.data.records import StreamRecord
from streaming_vlm.data.sources import record_from_row
from streaming_vlm.data.stream_template import IGNORE_INDEX, truncate_tokens

SMALL = dict(min_pixels=32 * 32, max_pixels=64 * 64, total_pixels=10 ** 9, system_prompt="SYS")
PAD = "<|video_pad|>"


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    write_video(d / "short.mp4", 4, options=FAST)  # 24 fps, 160x96
    write_video(d / "game.mp4", 60, options=FAST)
    write_video(d / "late.mp4", 1013, fps=2, width=64, height=64, options=FAST)  # 2 fps: long in time
    return d


def _dataset(tmp_path, videos, rows, processor, **cfg):
    path = write_jsonl_with_seeks(tmp_path / "train_with_seeks.jsonl", rows)
    return build_train_dataset(dict(SMALL, train_file=str(path), root=str(videos), **cfg), processor)


def test_exact_layout_and_labels_for_a_known_three_second_clip(tmp_path, videos, tiny_processor):
    words = [[0.1, 0.5, "kick"], [0.5, 1.0, "off"],  # both END in (0, 1]: second 0 ("off" ends exactly at 1.0)
             [0.9, 1.6, "long"],  # starts in second 0 but ENDS in second 1
             [2.5, 3.0, "shot"]]  # ends exactly at 3.0: second 2
    ds = _dataset(tmp_path, videos, [conversation("short.mp4", 0.0, 3.0, words)], tiny_processor, stage="clip")
    assert [(c.start, c.end) for c in ds.chunks] == [(0, 3)]
    sample = ds[0]
    tok = tiny_processor.tokenizer
    assert sample["video_grid_thw"].tolist() == [[1, 2, 4]] * 3  # 160x96 -> 64x32 under max 64*64: 2 tokens/s
    turn = ("<|im_start|>user\nTime={a}.0-{b}.0s<|vision_start|><{a}.2 seconds><|vision_start|>" + PAD * 2 +
            "<|vision_end|><|vision_end|><|im_end|>\n<|im_start|>assistant\n{reply}<|im_end|>\n")
    expected = ("<|im_start|>system\nSYS<|im_end|>\n" + turn.format(a=0, b=1, reply="kick off ...")
                + turn.format(a=1, b=2, reply="long ...") + turn.format(a=2, b=3, reply="shot ..."))
    assert tok.decode(sample["input_ids"]) == expected
    assert sample["input_ids"].tolist() == tok(expected, add_special_tokens=False)["input_ids"]
    labels = sample["labels"]
    keep = labels != IGNORE_INDEX
    assert torch.equal(labels[keep], sample["input_ids"][keep])
    runs, cur = [], []
    for tid, lab in zip(sample["input_ids"].tolist(), labels.tolist()):
        if lab == IGNORE_INDEX:
            if cur:
                runs.append(tok.decode(cur))
            cur = []
        else:
            cur.append(tid)
    assert runs == ["kick off ...<|im_end|>", "long ...<|im_end|>", "shot ...<|im_end|>"]
    assert sample["position_ids"].shape == (3, len(sample["input_ids"]))
    assert sample["pixel_values_videos"].shape == (3 * 2 * 4, 3 * 2 * 16 * 16)


def test_word_to_second_assignment_by_end_time():
    rec = StreamRecord("v.mp4", 10.0, 20.0, words=[
        (10.0, 10.2, "a"), (10.5, 11.0, "b"), (10.9, 11.0001, "c"), (11.5, 11.9, "d"), (12.0, 13.0, "e"),
        (9.0, 10.0, "before")])
    assert second_texts(rec, 10, 13) == {10: "a b", 11: "c d", 12: "e"}
    assert second_texts(rec, 11, 13) == {11: "c d", 12: "e"}  # "b" ends at exactly 11.0: second 10, not in (11, 13]
    assert rec.words_between(10, 11) == [(10.0, 10.2, "a"), (10.5, 11.0, "b")]  # same (t0, t1] rule


def test_windows_overlap_by_window_minus_stride(tmp_path, videos, tiny_processor):
    rec = record_from_row(conversation("game.mp4", 0.0, 60.0, timed_words(0, 60, 0.4)))
    assert [(a, b) for a, b, _ in stream_windows(rec)] == [(0, 24), (12, 36), (24, 48), (36, 60)]
    assert [(a, b) for a, b, _ in stream_windows(rec, window=10, stride=15)] == [(0, 10), (15, 25), (30, 40),
                                                                                  (45, 55)]
    # min_words (default 2*W = 48) drops a window whose commentary is too thin
    sparse = record_from_row(conversation("game.mp4", 0.0, 60.0, timed_words(0, 30, 0.4) + timed_words(30, 60, 1.0)))
    kept = stream_windows(sparse)
    assert [(a, b) for a, b, _ in kept] == [(0, 24), (12, 36)] and kept[1][2] == 45 + 6  # (12, 30] at 0.4 s + 31..36 at 1 s
    # a stage-2 clip is used whole, once
    clip = record_from_row(conversation("game.mp4", 16.3, 47.6, timed_words(16.4, 47.6, 0.4)))
    assert chunks_for(7, clip, stage="clip") == [Chunk(7, 16, 48, 78)]
    # through the dataset: encoded seconds are exactly the windows' seconds, consecutive windows share 12 of them
    ds = _dataset(tmp_path, videos, [conversation("game.mp4", 0.0, 60.0, timed_words(0, 60, 0.4))], tiny_processor)
    times = []
    for i in range(len(ds)):
        text = tiny_processor.tokenizer.decode(ds[i]["input_ids"])
        times.append([int(float(t)) for t in re.findall(r"Time=([\d.]+)-", text)])
    assert times == [list(range(0, 24)), list(range(12, 36)), list(range(24, 48)), list(range(36, 60))]
    assert len(set(times[0]) & set(times[1])) == 12


def test_previous_text_keeps_head_and_tail_tokens(tiny_processor):
    tok = tiny_processor.tokenizer
    words = [[i * 0.5, i * 0.5 + 0.5, f"word{i}"] for i in range(400)] + [[250.0, 250.5, "inside"]]
    rec = record_from_row(conversation("v.mp4", 0.0, 300.0, words, previous="Earlier: kick-off, it's tense."))
    full = "Earlier: kick-off, it's tense. " + " ".join(f"word{i}" for i in range(400))
    prev = previous_text(rec, 240.0, tok, text_sink=7, text_sliding_window=5)
    ids = tok(full, add_special_tokens=False)["input_ids"]
    assert tok(prev, add_special_tokens=False)["input_ids"] == ids[:7] + ids[-5:]
    assert prev == truncate_tokens(full, tok, 7, 5)
    assert prev.startswith("Earlier: kick") and prev.endswith("word399") and "inside" not in prev
    # only words ending at or before the window start count; short text is kept whole
    assert previous_text(rec, 1.0, tok, 512, 512) == "Earlier: kick-off, it's tense. word0 word1"
    assert previous_text(rec, 240.0, tok, 0, 0) == ""


def test_absolute_timestamps_late_in_a_video(tmp_path, videos, tiny_processor):
    words = timed_words(0, 1013, 0.25)
    ds = _dataset(tmp_path, videos, [conversation("late.mp4", 1000.0, 1013.0, [w for w in words if w[1] > 1000],
                                                  previous="long ago")],
                  tiny_processor, window=3, stride=10, min_words=1)
    assert [(c.start, c.end) for c in ds.chunks] == [(1000, 1003), (1010, 1013)]
    text = tiny_processor.tokenizer.decode(ds[1]["input_ids"])
    assert re.findall(r"Time=[\d.-]+s|<[\d.]+ seconds>", text) == [
        "Time=1010.0-1011.0s", "<1010.2 seconds>", "Time=1011.0-1012.0s", "<1011.2 seconds>",
        "Time=1012.0-1013.0s", "<1012.2 seconds>"]
    prev = text.split("<|im_start|>previous text\n")[1].split("<|im_end|>")[0]
    assert prev.split() == ["long", "ago"] + [f"w{k}" for k in range(4000, 4040)]  # words ending in (1000, 1010]


def test_determinism_and_two_worker_loader(tmp_path, videos, tiny_processor):
    rows = [conversation("game.mp4", 0.0, 60.0, timed_words(0, 60, 0.4)),
            conversation("short.mp4", 0.0, 4.0, timed_words(0, 4, 0.1), previous="x"),
            conversation("missing.mp4", 0.0, 4.0, timed_words(0, 4, 0.1))]
    cfg = dict(window=24, stride=12, min_words=10, max_bad_fraction=0.5)
    a = _dataset(tmp_path, videos, rows, tiny_processor, **cfg)
    b = _dataset(tmp_path, videos, rows, tiny_processor, **cfg)
    assert len(a) == 5 and a.index_bad == {"missing_video": 1}
    for key in ("input_ids", "labels", "position_ids", "pixel_values_videos", "video_grid_thw"):
        assert torch.equal(a[4][key], b[4][key])

    def run(ds, workers, seed):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=True, num_workers=workers,
                                             collate_fn=StreamCollator(tiny_processor),
                                             generator=torch.Generator().manual_seed(seed))
        return list(loader)

    two = run(a, 2, seed=3)  # `a` already holds decord handles opened here: forked workers must not break on them
    again = run(b, 0, seed=3)
    assert [x["sample_index"] for x in two] == [x["sample_index"] for x in again]
    assert sorted(i for x in two for i in x["sample_index"]) == list(range(5))
    for x, y in zip(two, again):
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["pixel_values_videos"],
                                                                          y["pixel_values_videos"])
    assert [x["sample_index"] for x in run(a, 0, seed=4)] != [x["sample_index"] for x in two]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_stays_flat_over_many_windows(tmp_path, tiny_processor):
    """A training worker reads window after window from many videos: its memory must not grow with the videos it
    has read. (An open decord reader keeps the buffers of the largest batch it decoded, every frame between the
    sampled ones: for 24-s windows of a 1080p50 broadcast, GiBs per reader, and a worker used to keep 4 open.)"""
    rows = []
    for v in range(4):
        write_video(tmp_path / f"v{v}.mp4", 16, width=640, height=360, seed=v, options=FAST)
        rows.append(conversation(f"v{v}.mp4", 0.0, 16.0, timed_words(0.0, 16.0, every=0.5)))
    ds = _dataset(tmp_path, tmp_path, rows, tiny_processor, window=8, stride=8)
    by_video = sorted(range(len(ds)), key=lambda i: (ds.chunks[i].start, ds.chunks[i].record))
    assert len(ds) == 8 and len({ds.chunks[i].record for i in by_video[:4]}) == 4  # one video after another
    ds[by_video[0]]
    before = _rss_bytes()
    for i in by_video[1:]:
        assert ds[i]["input_ids"].numel() > 0
    grown = _rss_bytes() - before
    assert grown < 100 * 2**20, f"memory grew {grown / 2**20:.0f} MiB over {len(ds) - 1} windows of 4 videos"
