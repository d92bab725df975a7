"""The training loss and what is trained, on the tiny model in-process (fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streaming_vlm.data.collator import StreamCollator, split_batch
from streaming_vlm.data.stream_template import Second, StreamTemplate, VisionBudget
from streaming_vlm.training.loss import full_lm_loss, selective_lm_loss
from streaming_vlm.training.model import freeze_vision, lora_target_regex, parameter_report


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    from transformers import Qwen3VLForConditionalGeneration

    torch.manual_seed(0)
    return Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, dtype=torch.float32)


def _window(template, start: int, texts: list[str], seed: int):
    rng = np.random.default_rng(seed)
    seconds = [Second(float(t), float(t + 1), rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8),
                      [t + 0.25, t + 0.75], text) for t, text in zip(range(start, start + len(texts)), texts)]
    enc = template.encode_window("earlier: a corner for Red", seconds)
    return {"input_ids": enc.input_ids, "labels": enc.labels, "position_ids": enc.position_ids,
            "pixel_values_videos": enc.pixel_values_videos, "video_grid_thw": enc.video_grid_thw, "index": seed}


@pytest.fixture(scope="module")
def batch(tiny_processor):
    template = StreamTemplate(tiny_processor, budget=VisionBudget(min_pixels=4096, max_pixels=4096,
                                                                  total_pixels=4096 * 16))
    samples = [_window(template, 100, ["Blue pass wide", "", "shot saved by the keeper"], 1),
               _window(template, 7, ["kick off", "Red press high", "", "foul"], 2)]
    inputs, meta = split_batch(StreamCollator(tiny_processor)(samples))
    return inputs


def test_selective_logits_equal_full_logits(model, batch):
    model.zero_grad()
    sel, n_sel = selective_lm_loss(model, batch)
    (sel / n_sel).backward()
    g_sel = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    full, n_full = full_lm_loss(model, batch)
    (full / n_full).backward()
    g_full = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    assert int(n_sel) == int(n_full) > 0
    torch.testing.assert_close(sel, full, rtol=1e-5, atol=1e-4)
    assert g_sel.keys() == g_full.keys()
    for k in g_full:
        torch.testing.assert_close(g_sel[k], g_full[k], rtol=1e-4, atol=1e-6)
    model.zero_grad()


def test_logits_only_where_labelled(model, batch):
    seen = {}
    def hook(module, args, output):
        seen["rows"] = output.shape[1]

    handle = model.lm_head.register_forward_hook(hook)
    try:
        selective_lm_loss(model, batch)
    finally:
        handle.remove()
    labelled = int((batch["labels"][:, 1:] != -100).any(0).sum())
    assert seen["rows"] == labelled < batch["input_ids"].shape[1] / 2


def test_batch_without_labels_is_zero_loss_touching_every_parameter(model, batch):
    """E.g. every sample of the micro-batch was bad data: loss 0, and ZeRO-3 still sees a gradient for every
    trainable parameter (identical hooks on every rank, no hang)."""
    empty = dict(batch, labels=torch.full_like(batch["labels"], -100))
    model.zero_grad(set_to_none=True)
    loss, n = selective_lm_loss(model, empty)
    assert float(loss.detach()) == 0.0 and int(n) == 0
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            assert float(p.grad.abs().sum()) == 0.0, name
    model.zero_grad(set_to_none=True)


def test_vision_tower_frozen_including_deepstack_mergers(tiny_ckpt):
    from transformers import Qwen3VLForConditionalGeneration

    m = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, dtype=torch.float32)
    freeze_vision(m)
    names = {n: p.requires_grad for n, p in m.named_parameters()}
    deepstack = [n for n in names if "deepstack_merger_list" in n]
    merger = [n for n in names if ".visual.merger." in f".{n}"]
    assert deepstack and merger
    assert not any(names[n] for n in deepstack + merger)
    assert not any(v for n, v in names.items() if ".visual." in f".{n}")
    assert all(v for n, v in names.items() if "language_model" in n or n.startswith("lm_head"))
    rep = parameter_report(m)
    assert rep["trainable_vision"] == [] and rep["frozen_outside_vision"] == []


def test_lora_targets_language_model_only(tiny_ckpt):
    import re

    from transformers import Qwen3VLForConditionalGeneration

    m = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, dtype=torch.float32)
    rx = re.compile(lora_target_regex(["q_proj", "v_proj", "down_proj"]))
    hits = [n for n, _ in m.named_modules() if rx.fullmatch(n)]
    assert hits and all("language_model" in n for n in hits)
    assert len(hits) == 3 * m.config.text_config.num_hidden_layers
