"""Released pre-cut windows (s12w24 rows: 24 s each, earlier commentary in `previous`) and whole games give the same
samples: a whole game cut in code into 24 s / 12 s windows, and the same windows written as pre-cut rows in the
released conversation format, encode to identical tokens, labels, positions and pixels. Pre-cut rows are never cut
again (one sample per row, over the row's own span, even a row longer than the window); `repeat` counts a source
twice in the training mix, as upstream lists train_s12w24 twice.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from streaming_vlm.data.chunker import stream_windows
from streaming_vlm.data.dataset import build_train_dataset
from streaming_vlm.data.sources import open_source

WINDOW, STRIDE = 24, 12
COMMON = dict(window=WINDOW, stride=STRIDE, text_sink=64, text_sliding_window=64, min_pixels=4096, max_pixels=4096,
              total_pixels=262144, num_workers=0)


@pytest.fixture(scope="module")
def game(tmp_path_factory):
    from data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("precut") / "data"
    generate_dataset(root, train_games=1, eval_games=0, duration=60, clips=0, seed=5)
    return root


def _precut_rows(game) -> list:
    """The whole game's stream windows as released rows: video span = the window, `previous` = all words before."""
    rec = open_source(str(game / "train_with_seeks.jsonl"), str(game))[0]
    rows = []
    for t0, t1, _ in stream_windows(rec, WINDOW, STRIDE, min_words=1):
        words = [[s, e, w] for s, e, w in rec.words if t0 < e <= t1]
        previous = " ".join(w for _, e, w in rec.words if e <= t0)
        video = os.path.relpath(rec.video, game)
        rows.append([{"role": "user", "content": [
                         {"type": "video", "video": video, "video_start": float(t0), "video_end": float(t1)},
                         {"type": "text", "text": "", "previous": previous, "title": rec.title}]},
                     {"role": "assistant", "content": [{"type": "text_stream", "text_stream": words}]}])
    return rows


def _builder(game, train_file, stage, **kw):
    return {**COMMON, "root": str(game), "train_file": str(game / train_file), "stage": stage, "min_words": 1, **kw}


def test_precut_rows_and_whole_games_give_the_same_tokens(game, tiny_processor):
    rows = _precut_rows(game)
    assert len(rows) >= 3 and any(r[0]["content"][1]["previous"] for r in rows)
    (game / "train_s12w24_with_seeks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    whole = build_train_dataset(_builder(game, "train_with_seeks.jsonl", "stream"), tiny_processor)
    precut = build_train_dataset(_builder(game, "train_s12w24_with_seeks.jsonl", "window"), tiny_processor)
    assert len(precut) == len(rows) == len(whole)
    for i in range(len(precut)):
        a, b = whole.describe(i), precut.describe(i)
        assert (a["start"], a["end"]) == (b["start"], b["end"]) and b["end"] - b["start"] == WINDOW
        x, y = whole[i], precut[i]
        for key in ("input_ids", "labels", "position_ids", "pixel_values_videos", "video_grid_thw"):
            assert torch.equal(x[key], y[key]), (i, key)
    with_previous = [i for i in range(len(precut))
                     if "<|im_start|>previous text\n" in tiny_processor.tokenizer.decode(precut[i]["input_ids"])]
    assert with_previous and with_previous[0] == 1  # every window after the first carries the earlier commentary


def test_precut_rows_are_never_cut_again_and_repeat_counts_twice(game, tiny_processor):
    from streaming_vlm.training.data import build_train

    row = _precut_rows(game)[0]
    row[0]["content"][0]["video_end"] = 40.0  # a released row longer than one window stays one sample
    (game / "long_row_with_seeks.jsonl").write_text(json.dumps(row) + "\n")
    ds = build_train_dataset(_builder(game, "long_row_with_seeks.jsonl", "window"), tiny_processor)
    assert [(c.start, c.end) for c in ds.chunks] == [(0, 40)]
    dataset, _, _ = build_train({"data": {**_builder(game, "long_row_with_seeks.jsonl", "window"), "repeat": 2},
                                 "extra_data.once": _builder(game, "train_with_seeks.jsonl", "stream")},
                                tiny_processor)
    n_once = len(build_train_dataset(_builder(game, "train_with_seeks.jsonl", "stream"), tiny_processor))
    assert len(dataset) == 2 + n_once
    assert torch.equal(dataset[0]["input_ids"], dataset[1]["input_ids"])
