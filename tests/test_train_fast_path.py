"""The fast training path (what `train.py experiment=stage1_*` picks by default) learns exactly what the plain path
learns: same loss, same gradients, on the tiny Qwen3-VL in-process. Plus the rules that pick it."""

from __future__ import annotations

import copy

import pytest
import torch
from test_train_loss import _window  # the same two real windows as the loss tests

from streaming_vlm.data.collator import StreamCollator, split_batch
from streaming_vlm.data.stream_template import StreamTemplate, VisionBudget
from streaming_vlm.errors import UserError
from streaming_vlm.training.checkpointing import (CheckpointPolicy, SavedBytes, decoder_layers, layers_to_keep,
                                                  set_kept_layers)
from streaming_vlm.training.config import resolve_deepspeed
from streaming_vlm.training.kernels import choose_kernels
from streaming_vlm.training.loss import count_label_tokens, full_lm_loss, kept_positions, selective_lm_loss
from streaming_vlm.training.model import freeze_vision


@pytest.fixture(scope="module")
def base_model(tiny_ckpt):
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, dtype=torch.float32)


@pytest.fixture(scope="module")
def windows(tiny_processor):
    template = StreamTemplate(tiny_processor, budget=VisionBudget(min_pixels=4096, max_pixels=4096,
                                                                  total_pixels=4096 * 16))
    return [_window(template, 100, ["Blue pass wide", "", "shot saved by the keeper"], 1),
            _window(template, 7, ["kick off", "Red press high", "", "foul"], 2)]


def recompute_every_layer(model):
    """Checkpointing on for every decoder layer, by transformers' own switch (renamed `activation_checkpointing_*`
    in 5.x; the old name warns)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _plain(base_model):
    """The anchor's model: vision frozen by requires_grad only, every decoder layer recomputed."""
    model = copy.deepcopy(base_model)
    model.model.visual.requires_grad_(False)
    recompute_every_layer(model)
    model.train()
    return model


def _fast(base_model, kept: int):
    """The defaults' model: vision under no_grad, `kept` layers keep their activations, the rest recomputed."""
    model = copy.deepcopy(base_model)
    freeze_vision(model)
    recompute_every_layer(model)
    set_kept_layers(decoder_layers(model), kept)
    model.train()
    return model


def _grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_fast_path_loss_and_gradients_equal_plain_path(base_model, windows, tiny_processor):
    """Two micro-batches of one window each (batch 1, as the recipe), loss normalised over the step's labels.
    The fast model keeps the activations of 2 of its 4 decoder layers and recomputes the other 2."""
    kept = 2
    collator = StreamCollator(tiny_processor)
    batches = [collator([w]) for w in windows]
    step_tokens = sum(b["num_loss_tokens"] for b in batches)

    plain = _plain(base_model)
    plain_loss = 0.0
    for b in batches:
        inputs, _ = split_batch(b)
        loss_sum, n = full_lm_loss(plain, inputs)  # logits everywhere (the anchor's loss)
        (loss_sum / step_tokens).backward()
        plain_loss += float(loss_sum.detach()) / step_tokens
    fast = _fast(base_model, kept)
    fast_loss = 0.0
    for b in batches:
        inputs, meta = split_batch(b)
        loss_sum, n = selective_lm_loss(fast, inputs, positions=meta["loss_positions"])
        (loss_sum / step_tokens).backward()
        fast_loss += float(loss_sum.detach()) / step_tokens

    assert step_tokens > 0 and fast_loss > 0
    assert fast_loss == pytest.approx(plain_loss, rel=1e-5)
    g_plain, g_fast = _grads(plain), _grads(fast)
    assert g_fast.keys() == g_plain.keys() and not any(".visual." in f".{k}" for k in g_fast)
    for k in g_plain:
        torch.testing.assert_close(g_fast[k], g_plain[k], rtol=1e-4, atol=1e-6)


def test_vision_runs_once_without_grad(base_model, windows, tiny_processor):
    model = _fast(base_model, kept=0)  # every decoder layer recomputed: the tower must not run again
    outputs = []
    handle = model.model.visual.register_forward_hook(lambda module, args, out: outputs.append(out))
    try:
        inputs, meta = split_batch(StreamCollator(tiny_processor)([windows[0]]))
        loss_sum, _ = selective_lm_loss(model, inputs, positions=meta["loss_positions"])
        loss_sum.backward()
    finally:
        handle.remove()
    assert len(outputs) == 1  # once per forward, not again in the recomputation
    out = outputs[0]
    features = [out.pooler_output, *out.deepstack_features] if hasattr(out, "pooler_output") else \
        [out[0], *out[1]]
    assert len(features) == 1 + len(model.config.vision_config.deepstack_visual_indexes)
    tensors = [t for f in features for t in (f if isinstance(f, (list, tuple)) else [f])]
    for t in tensors:  # merged and DeepStack features are constants: no graph, no kept activations
        assert t.grad_fn is None and not t.requires_grad


def test_collator_carries_loss_positions_and_counts(windows, tiny_processor):
    for packing in (False, True):
        batch = StreamCollator(tiny_processor, packing=packing)(windows)
        assert torch.equal(batch["loss_positions"], kept_positions(batch["labels"]))
        assert batch["num_loss_tokens"] == int(count_label_tokens(batch["labels"])) > 0
        assert batch["num_tokens"] == sum(len(w["input_ids"]) for w in windows)


def test_layers_to_keep_fits_the_budget():
    mib = 2**20
    # 10 layers, 1000 tokens, a kept layer 1 MiB/token, a recomputed one keeps 0.1 MiB/token of input
    assert layers_to_keep(10, 1000, mib, 0.1 * mib, free_bytes=10**15) == 10
    assert layers_to_keep(10, 1000, mib, 0.1 * mib, free_bytes=0) == 0
    free = 1000 * (4 * mib + 6 * 0.1 * mib + 2 * mib)  # exactly 4 kept layers (+ 2 in flight)
    assert layers_to_keep(10, 1000, mib, 0.1 * mib, free_bytes=free) == 4
    assert layers_to_keep(10, 1000, mib, 0.1 * mib, free_bytes=free - 1) == 3
    assert layers_to_keep(10, 2000, mib, 0.1 * mib, free_bytes=free) < 4  # longer windows keep fewer layers


def test_saved_bytes_of_a_kept_layer_grow_with_tokens(base_model):
    model = copy.deepcopy(base_model).train()
    layer = decoder_layers(model)[0]
    text = model.model.language_model
    counted = []
    for tokens in (64, 128):
        hidden = torch.randn(1, tokens, model.config.text_config.hidden_size, requires_grad=True)
        positions = torch.arange(tokens).expand(3, 1, tokens)
        cos_sin = text.rotary_emb(hidden, positions)
        probe = SavedBytes(layer, {p.untyped_storage().data_ptr() for p in model.parameters()})
        out = layer(hidden, attention_mask=None, position_ids=positions[0], position_embeddings=cos_sin)
        out = out[0] if isinstance(out, tuple) else out
        assert probe.done and probe.tokens == tokens
        assert probe.input_bytes == hidden.numel() * hidden.element_size()
        counted.append(sum(probe.saved.values()))
        out.sum().backward()  # the counted tensors are the ones the backward uses
    assert counted[0] > 0 and 1.8 < counted[1] / counted[0] < 2.2  # activations are per token


def test_policy_modes_off_cuda(base_model):
    model = copy.deepcopy(base_model)
    recompute_every_layer(model)
    n = len(decoder_layers(model))
    assert CheckpointPolicy("false").before_micro_batch(model, 100) == n
    assert not any(layer.gradient_checkpointing for layer in decoder_layers(model))
    assert CheckpointPolicy(True).before_micro_batch(model, 100) == 0
    assert all(layer.gradient_checkpointing for layer in decoder_layers(model))
    if not torch.cuda.is_available():
        assert CheckpointPolicy("auto").before_micro_batch(model, 100) == 0  # no device budget: recompute all
    with pytest.raises(ValueError, match="true, false or auto"):
        CheckpointPolicy("sometimes")


def test_deepspeed_auto_by_world_size():
    assert resolve_deepspeed("auto", 1) == (None, None)  # one process: nothing to partition
    path, stage = resolve_deepspeed("auto", 8)
    assert stage == 3 and path.endswith("zero3.json")
    assert resolve_deepspeed("zero3", 1)[1] == 3  # an explicit choice wins
    assert resolve_deepspeed(None, 8) == (None, None)


def test_kernel_choice_is_explicit():
    kernels, why = choose_kernels("auto", cuda=False)
    assert kernels == "torch" and "CUDA" in why
    assert choose_kernels("torch", cuda=True)[0] == "torch"
    with pytest.raises(UserError, match="needs CUDA"):
        choose_kernels("liger", cuda=False)
    with pytest.raises(UserError, match="auto, liger, torch"):
        choose_kernels("fast", cuda=True)
