"""The fast training path (what `train.py experiment=stage1_*` picks by default) learns exactly what the plain path
learns: same loss, same gradients, on the tiny Qwen3-VL in-process. Plus the rules that pick it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from test_train_loss import _window  # the same two real windows as the loss tests

from streaming_vlm.data.collator import StreamCollator, split_batch
from streaming_vlm.data.stream_template import StreamTemplate, VisionBudget
from streaming_vlm.errors import UserError
from streaming_vlm.training.checkpointing import (ATTENTION_OPS, RECIPE_BYTES_PER_LOGIT, SAVE_ATTENTION,
                                                  CheckpointPolicy, SavedBytes, decoder_layers, layers_to_keep,
                                                  layers_within_recipe, set_kept_layers)
from streaming_vlm.training.compiled_layers import choose_compile, compile_layers
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


def _selective_step(model, batches, step_tokens: int) -> float:
    """One optimizer step's micro-batches through the training loss (lm_head on labelled positions), backward
    included; returns the step's loss (label-token average over the step)."""
    total = 0.0
    for b in batches:
        inputs, meta = split_batch(b)
        loss_sum, _ = selective_lm_loss(model, inputs, positions=meta["loss_positions"])
        (loss_sum / step_tokens).backward()
        total += float(loss_sum.detach()) / step_tokens
    return total


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
    fast_loss = _selective_step(fast, batches, step_tokens)

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


def test_compiled_layers_learn_what_eager_layers_learn(base_model, windows, tiny_processor):
    """The compiled decoder layers (what `model.compile_layers: auto` picks on CUDA; here Inductor's CPU backend)
    give the eager layers' loss and gradients, kept and recomputed layers alike, over two windows of different
    lengths, with one graph for every layer and no recompilation for the second length."""
    from torch._dynamo.utils import counters

    collator = StreamCollator(tiny_processor)
    batches = [collator([w]) for w in windows]
    assert batches[0]["num_tokens"] != batches[1]["num_tokens"]
    step_tokens = sum(b["num_loss_tokens"] for b in batches)

    eager = _fast(base_model, kept=2)
    eager_loss = _selective_step(eager, batches, step_tokens)
    torch._dynamo.reset()
    counters.clear()
    compiled = _fast(base_model, kept=2)
    compiled.config.text_config.use_cache = False  # as training loads it (model.load_for_training)
    assert compile_layers(compiled) == len(decoder_layers(compiled))
    compiled_loss = _selective_step(compiled, batches, step_tokens)
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    g_eager, g_compiled = _grads(eager), _grads(compiled)
    assert g_compiled.keys() == g_eager.keys()
    for k in g_eager:
        torch.testing.assert_close(g_compiled[k], g_eager[k], rtol=1e-3, atol=1e-6)
    # a kept and a recomputed layer: two graphs, shared by all four layers and both lengths
    assert counters["stats"]["unique_graphs"] == 2
    assert not counters["graph_break"]


def test_compile_choice_is_explicit():
    assert choose_compile("auto", cuda=True, zero_stage=None)[0] is True
    assert choose_compile("auto", cuda=True, zero_stage=2)[0] is True
    compiled, why = choose_compile("auto", cuda=True, zero_stage=3)
    assert compiled is False and "ZeRO-3" in why
    compiled, why = choose_compile("auto", cuda=False, zero_stage=None)
    assert compiled is False and "CUDA" in why
    assert choose_compile(False, cuda=True, zero_stage=None)[0] is False  # yaml's false arrives as a bool
    assert choose_compile(True, cuda=False, zero_stage=None)[0] is True
    with pytest.raises(UserError, match="ZeRO-3"):
        choose_compile(True, cuda=True, zero_stage=3)
    with pytest.raises(UserError, match="auto, true, false"):
        choose_compile("fast", cuda=True, zero_stage=None)
    # Liger's Functions do not trace: compiled layers take transformers' modules, an explicit liger keeps them eager
    assert choose_kernels("auto", cuda=True, compiled=True) == ("torch", "decoder layers compiled: Inductor fuses them")
    assert choose_compile("auto", cuda=True, zero_stage=None, kernels="liger")[0] is False
    with pytest.raises(UserError, match="choose one"):
        choose_compile(True, cuda=True, zero_stage=None, kernels="liger")


def test_recipe_budget_keeps_what_the_recipe_logits_would_hold():
    vocab, kib = 151936, 2**10
    kept, inp = 98.9 * kib, 8 * kib  # a kept 2B layer under autocast, and a recomputed layer's fp32 input
    k = layers_within_recipe(28, vocab, kept, inp)
    assert k * (kept - inp) <= vocab * RECIPE_BYTES_PER_LOGIT < (k + 1) * (kept - inp)
    assert 0 < k < 28
    assert layers_within_recipe(28, vocab, kept / 4, inp / 4) >= min(28, 4 * k)  # smaller layers: more kept
    assert layers_within_recipe(4, vocab, inp, inp) == 4  # nothing extra to keep
    with pytest.raises(ValueError, match="recipe, device"):
        CheckpointPolicy("auto", budget="everything")


class _CountAttention(TorchDispatchMode):
    """Counts the SDPA kernels that run. It ignores compile internals so that compiled layers still run compiled
    under it (Dynamo leaves frames eager under other modes); their SDPA call is an aten op it sees. SAC's own modes
    are entered after it, so an attention output SAC hands back from its cache is not counted."""

    def __init__(self):
        super().__init__()
        self.n = 0

    @classmethod
    def ignore_compile_internals(cls):
        return True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in ATTENTION_OPS:
            self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_recomputed_layers_keep_their_attention(base_model, windows, tiny_processor, compiled):
    """A recomputed layer under `auto` keeps its attention's outputs: its recomputation runs no attention forward
    (one per layer, not two), with the plain recomputation's loss and gradients; eager and compiled layers alike."""
    collator = StreamCollator(tiny_processor)
    batches = [collator([w]) for w in windows]
    step_tokens = sum(b["num_loss_tokens"] for b in batches)
    n = len(decoder_layers(base_model))
    runs = {}
    for save in (False, True):
        torch._dynamo.reset()
        model = _fast(base_model, kept=0)
        set_kept_layers(decoder_layers(model), 0, save_attention=save)
        assert all((layer._gradient_checkpointing_func is SAVE_ATTENTION) == save for layer in decoder_layers(model))
        if compiled:
            model.config.text_config.use_cache = False  # as training loads it (model.load_for_training)
            compile_layers(model)
            _selective_step(model, batches[:1], step_tokens)  # compiles (and its tracing is not counted)
            model.zero_grad(set_to_none=True)
        with _CountAttention() as count:
            loss = _selective_step(model, batches, step_tokens)
        runs[save] = loss, _grads(model), count.n
    (plain_loss, g_plain, plain_n), (loss, g, n_attention) = runs[False], runs[True]
    assert plain_n - n_attention == n * len(batches)  # the recomputations' attention forwards, and only those
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    assert g.keys() == g_plain.keys()
    for k in g_plain:
        torch.testing.assert_close(g[k], g_plain[k], rtol=1e-5, atol=1e-7)


def test_only_auto_keeps_attention_and_only_over_default_kwargs(base_model):
    """`true` is the recipe's plain recomputation (least memory); `auto` keeps attention outputs unless
    `trainer.save_attention: false`; a checkpoint function other than the Trainer's default one is left as given."""
    model = copy.deepcopy(base_model)
    recompute_every_layer(model)
    layers = decoder_layers(model)
    plain = layers[0]._gradient_checkpointing_func
    CheckpointPolicy("auto").before_micro_batch(model, 100)  # the default: attention kept
    assert all(layer._gradient_checkpointing_func is SAVE_ATTENTION for layer in layers)
    CheckpointPolicy(True).before_micro_batch(model, 100)
    assert all(layer._gradient_checkpointing_func is plain for layer in layers)
    CheckpointPolicy("auto", save_attention=False).before_micro_batch(model, 100)
    assert all(layer._gradient_checkpointing_func is plain for layer in layers)
    explicit = {"use_reentrant": False, "determinism_check": "default"}  # kwargs of the user's own
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=explicit)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=explicit)
    CheckpointPolicy("auto", save_attention=True).before_micro_batch(model, 100)
    assert not any(layer._gradient_checkpointing_func is SAVE_ATTENTION for layer in layers)


def test_recipe_budget_counts_the_recomputed_layers_attention():
    vocab, kib = 151936, 2**10
    kept, inp, attention = 82.9 * kib, 8 * kib, 4.06 * kib  # a compiled 2B layer, its input, its SDPA outputs
    k = layers_within_recipe(28, vocab, kept, inp, attention)
    assert k * (kept - inp) + (28 - k) * attention <= vocab * RECIPE_BYTES_PER_LOGIT
    assert (k + 1) * (kept - inp) + (27 - k) * attention > vocab * RECIPE_BYTES_PER_LOGIT
    assert k <= layers_within_recipe(28, vocab, kept, inp)
    assert layers_within_recipe(28, vocab, kept, inp, vocab * RECIPE_BYTES_PER_LOGIT) == 0  # nothing left to keep
    free = 1000 * (4 * kept + 6 * (inp + attention) + 2 * kept)  # exactly 4 of 10 kept (+ 2 in flight)
    assert layers_to_keep(10, 1000, kept, inp, free, attention) == 4
    assert layers_to_keep(10, 1000, kept, inp, free - 1, attention) == 3
