"""The pipeline over the project's synthetic dataset: whole games (stage 1), clips (stage 2) and Inf-Stream-Eval
rows all load, keep absolute times, and come through a 2-worker DataLoader."""

from __future__ import annotations

import re

import pytest
import torch

from streaming_vlm.data.collator import StreamCollator
from streaming_vlm.data.dataset import build_train_dataset

synthetic = pytest.importorskip("data.synthetic")
SMALL = dict(min_pixels=32 * 32, max_pixels=64 * 64 * 4, total_pixels=10 ** 9)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synthetic.generate_dataset(out, train_games=1, eval_games=1, duration=40, clips=2, seed=0, workers=1)
    return out


@pytest.mark.parametrize("name,stage", [("train_with_seeks.jsonl", "stream"), ("clips_with_seeks.jsonl", "clip"),
                                        ("eval_inf.jsonl", "stream")])
def test_synthetic_files_load_through_workers(synth, tiny_processor, name, stage):
    ds = build_train_dataset(dict(SMALL, train_file=str(synth / name), stage=stage, min_words=10), tiny_processor)
    assert len(ds) >= 1 and not ds.index_bad
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=StreamCollator(tiny_processor))
    seen = []
    for batch in loader:
        assert batch["bad_samples"] == {} and batch["num_label_tokens"] > 0
        seen += batch["sample_index"]
        text = tiny_processor.tokenizer.decode(batch["input_ids"][0])
        chunk = ds.chunks[batch["sample_index"][0]]
        stamps = [float(t) for t in re.findall(r"<([\d.]+) seconds>", text)]
        assert stamps[0] == pytest.approx(chunk.start + 0.25, abs=0.06) and max(stamps) < chunk.end
    assert sorted(seen) == list(range(len(ds)))
    if stage == "stream":
        assert [(c.start, c.end) for c in ds.chunks][:2] == [(0, 24), (12, 36)][:len(ds)]
