"""The vision tower's grid-dependent tensors, precomputed once per grid (`VisionGrids`), give bit-identical
outputs, and with them the tower runs none of its own grid computations (no `repeat_interleave`, no host sync)."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration

from streaming_vlm.data.video import VideoReader
from streaming_vlm.inference.engine import StreamingEngine
from tests.fixture_video import write_video
from streaming_vlm.model.vision_grid import VisionGrids

SYNCS = ("aten::item", "aten::_local_scalar_dense", "aten::repeat_interleave", "aten::nonzero")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("vid") / "game.mp4", seconds=3, fps=24, width=160, height=96)


def _grid_ops(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = fn()
    return out, sum(1 for e in prof.events() if e.name in SYNCS)


@pytest.mark.parametrize("fps", [2.0, 4.0])  # one temporal patch a second, or two (two attention segments)
def test_precomputed_grid_is_bit_identical_and_skips_the_grid_ops(tiny_ckpt, tiny_processor, video, fps):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt).eval()
    engine = StreamingEngine(model, tiny_processor, {"fps": fps})
    second = VideoReader(video, fps=fps).seconds(0, 1)[0]
    enc = engine.template.encode_second(second, start=0)
    grid = enc.video_grid_thw
    assert int(grid[:, 0].sum()) == int(fps) // 2
    visual = model.model.visual
    grids = VisionGrids(visual, torch.device("cpu"))
    with torch.no_grad():
        plain, plain_ops = _grid_ops(lambda: visual(enc.pixel_values_videos, grid_thw=grid))
        for _ in range(2):
            with grids.precomputed(grid):
                fast, fast_ops = _grid_ops(lambda: visual(enc.pixel_values_videos, grid_thw=grid))
    assert grids.hits == 1  # computed once, reused after
    assert plain_ops > 0 and fast_ops == 0
    assert torch.equal(plain.pooler_output, fast.pooler_output)
    assert len(fast.deepstack_features) == len(plain.deepstack_features) > 0
    assert all(torch.equal(a, b) for a, b in zip(plain.deepstack_features, fast.deepstack_features))
    # outside the context the tower computes its own again (the hook is gone)
    with torch.no_grad():
        _, again_ops = _grid_ops(lambda: visual(enc.pixel_values_videos, grid_thw=grid))
    assert again_ops == plain_ops


def test_engine_reuses_the_grid_every_second(tiny_ckpt, tiny_processor, video):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt).eval()
    engine = StreamingEngine(model, tiny_processor, {"max_new_tokens": 2, "temperature": 0})
    engine.start()
    for second in VideoReader(video, fps=2.0).seconds(0, 3):
        engine.step(second)
    assert engine.vision_grids.hits == 2  # 3 seconds of one grid: computed once, reused twice
