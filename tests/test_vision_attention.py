"""The vision tower's segment attention (`SEGMENT_ATTENTION`) gives transformers' `sdpa` outputs: for equal segments
(one batched call) and unequal ones, eager and with the blocks compiled; and it is never saved with a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration

from streaming_vlm.model.vision_attention import SEGMENT_ATTENTION, use_segment_attention


def _pixels(visual, grid):
    c = visual.config
    per_patch = c.in_channels * c.temporal_patch_size * c.patch_size ** 2
    g = torch.Generator().manual_seed(0)
    return torch.randn(int(grid.prod(-1).sum()), per_patch, generator=g)


GRIDS = {"equal": [[2, 4, 6]],  # two temporal groups of one size: two equal segments
         "unequal": [[1, 4, 6], [2, 6, 4], [1, 2, 4]]}  # segments of 24, 24, 24 and 8 patches


def _tower(tiny_ckpt):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, attn_implementation="sdpa").eval()
    return model, model.model.visual


@pytest.mark.parametrize("grids", list(GRIDS))
def test_segment_attention_equals_sdpa(tiny_ckpt, grids):
    model, visual = _tower(tiny_ckpt)
    grid = torch.tensor(GRIDS[grids])
    pixels = _pixels(visual, grid)
    with torch.no_grad():
        plain = visual(pixels, grid_thw=grid)
        assert use_segment_attention(model) and visual.config._attn_implementation == SEGMENT_ATTENTION
        fast = visual(pixels, grid_thw=grid)
    torch.testing.assert_close(fast.pooler_output, plain.pooler_output, rtol=1e-5, atol=1e-5)
    for a, b in zip(fast.deepstack_features, plain.deepstack_features, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_segment_attention_is_one_sdpa_call_per_block(tiny_ckpt):
    model, visual = _tower(tiny_ckpt)
    grid = torch.tensor([[4, 4, 6]])  # four equal segments
    pixels = _pixels(visual, grid)

    def sdpa_calls():
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            visual(pixels, grid_thw=grid)
        return sum(1 for e in prof.events() if e.name == "aten::scaled_dot_product_attention")

    before = sdpa_calls()
    use_segment_attention(model)
    blocks = len(visual.blocks)
    assert before == 4 * blocks and sdpa_calls() == blocks


def test_compiled_blocks_equal_eager(tiny_ckpt):
    from streaming_vlm.model.compiled_blocks import compile_forwards, vision_blocks

    model, visual = _tower(tiny_ckpt)
    use_segment_attention(model)
    grids = [torch.tensor([[2, 4, 6]]), torch.tensor([[3, 6, 4]])]  # two lengths: one dynamic graph
    with torch.no_grad():
        eager = [visual(_pixels(visual, g), grid_thw=g).pooler_output for g in grids]
        assert compile_forwards(vision_blocks(model)) == len(visual.blocks)
        torch._dynamo.reset()
        compiled = [visual(_pixels(visual, g), grid_thw=g).pooler_output for g in grids]
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_choice_is_not_saved(tiny_ckpt, tmp_path):
    model, _ = _tower(tiny_ckpt)
    use_segment_attention(model)
    model.save_pretrained(tmp_path / "saved")
    config = (tmp_path / "saved" / "config.json").read_text()
    assert SEGMENT_ATTENTION not in config and json.loads(config)["vision_config"]
    reloaded = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path / "saved", attn_implementation="sdpa")
    assert reloaded.model.visual.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("choice, runs", [("segments", SEGMENT_ATTENTION), ("transformers", "sdpa"),
                                          ("Flash", None)])
def test_training_takes_model_vision_attention(tiny_ckpt, choice, runs):
    """`model.vision_attention` as train.py loads the model: segments (the default) switches the tower; transformers
    keeps its own per-frame sdpa (the anchor recipe's); anything else is one clear error with the config's checks,
    before any data or model loads."""
    from pathlib import Path
    from types import SimpleNamespace

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from streaming_vlm.errors import UserError
    from streaming_vlm.training.config import check_values
    from streaming_vlm.training.model import load_for_training

    cfg = OmegaConf.load("configs/model/tiny.yaml")
    cfg.name_or_path, cfg.build_if_missing, cfg.attn_implementation = str(tiny_ckpt), None, "sdpa"
    cfg.vision_attention = choice
    plan = SimpleNamespace(init_from=None, model_path=str(tiny_ckpt), processor_path=str(tiny_ckpt))
    if runs is None:
        with pytest.raises(UserError, match="model.vision_attention must be one of segments, transformers"):
            with initialize_config_dir(str(Path("configs").absolute()), version_base=None):
                check_values(compose("config", overrides=[f"model.vision_attention={choice}"]))
        return
    model, _ = load_for_training(cfg, plan, deepspeed_enabled=False)
    assert model.model.visual.config._attn_implementation == runs
    assert OmegaConf.load("configs/model/qwen3vl_2b.yaml").vision_attention == "segments"  # the default
