"""Activation checkpointing per decoder layer, chosen per micro-batch from memory: recompute only what must be.

`trainer.gradient_checkpointing`:
    true    every decoder layer is recomputed in the backward (the recipe's setting; least memory)
    false   none is
    auto    as many layers as fit KEEP their activations; the rest are recomputed. On CUDA:
              1. the first micro-batch recomputes every layer but the last, whose saved activations are counted
                 as they are saved (the real kernels, dtype, autocast, compilation and sequence length: nothing
                 is modelled);
              2. each later micro-batch keeps the last k layers, k the largest that fits both budgets:
                 device  allocated now + optimizer state and gradients not allocated yet
                         + k x (bytes/token of a kept layer) x tokens + (L - k) x (its input) x tokens
                         + 2 x (bytes/token of a kept layer) x tokens   (one layer's recompute and gradients in flight)
                         stays under `trainer.memory_fraction` of the GPU's memory;
                 recipe  (`trainer.memory_budget: recipe`, the default) the memory kept layers add over recomputed
                         ones, k x (kept - input) x tokens, is at most what the recipe's loss holds and ours does
                         not: its full logits, bf16, their fp32 copy and its log-softmax, 10 bytes x vocabulary x
                         tokens (RECIPE_BYTES_PER_LOGIT).
                         So a step never needs more memory than the recipe's (every layer recomputed, full
                         logits), and k does not depend on the window's length. `memory_budget: device` drops
                         this bound: the most layers the GPU holds, for the most speed.
            Off CUDA there is no device budget to read: every layer is recomputed.
With `trainer.save_attention: true` (the default) a recomputed layer under `auto` keeps its attention's outputs
(SDPA's output and logsumexp, selective activation checkpointing): its recomputation runs the layer's GEMMs and
elementwise work again but not the attention forward. What that keeps beyond the layer's input is measured on the
first micro-batch (CUDA allocation across a recomputed layer's forward, less its output) and counted in both budgets
above for every recomputed layer. Its cost is on the host where the checkpoint wraps the compiled forward (SAC's
dispatch modes then intercept the compiled code's ops); whether the attention saved outweighs that depends on the
transformers version and the host, so an experiment may turn it off (BENCHMARKS.md). `gradient_checkpointing: true`
keeps the recipe's plain recomputation (least memory), and so does any checkpoint function other than the Trainer's
default one.
Recomputation gives the same values (the same kernels run on the same inputs), so loss and gradients do not depend
on k (tests/test_train_fast_path.py). The frozen vision tower runs under no_grad (`model.freeze_vision`): its blocks
are never checkpointed, there is nothing to recompute.

transformers reads each layer's `gradient_checkpointing` flag on every call; the Trainer sets them all at the start
of training (`gradient_checkpointing_enable`), and `before_micro_batch` sets them per micro-batch after that.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import CheckpointPolicy as _SAC, checkpoint, create_selective_checkpoint_contexts

MODES = ("true", "false", "auto")
BUDGETS = ("recipe", "device")
IN_FLIGHT_LAYERS = 2  # one layer's recomputed activations and its gradients during the backward
# What the recipe's loss holds at its forward peak, per token x vocab: transformers' ForCausalLMLoss keeps the bf16
# logits (2), the fp32 copy it makes of them (`logits.float()`, 4) and their fp32 log-softmax (4).
RECIPE_BYTES_PER_LOGIT = 10
DEFAULT_CHECKPOINT_KWARGS = {"use_reentrant": False}  # what config.py gives the Trainer unless told otherwise

# The attention ops a recomputed layer keeps the outputs of: SDPA's backends (cuDNN and flash on CUDA at bf16,
# efficient attention elsewhere on CUDA, flash on a CPU). Each overload exists only in some builds.
ATTENTION_OPS = frozenset(
    getattr(torch.ops.aten, name).default for name in (
        "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu")
    if hasattr(torch.ops.aten, name))


def _keep_attention(ctx, op, *args, **kwargs):
    return _SAC.MUST_SAVE if op in ATTENTION_OPS else _SAC.PREFER_RECOMPUTE


# One object for every layer and micro-batch: with the checkpoint call inside a compiled layer (transformers >= 5.23
# checkpoints `forward`), Dynamo guards on this function, and a new one per micro-batch would recompile. Outside a
# compiled layer (transformers 5.17 checkpoints `__call__`) SAC's dispatch modes see the compiled code's SDPA call
# too: both ways the attention forward runs once (tests/test_train_fast_path.py).
SAVE_ATTENTION = functools.partial(checkpoint, use_reentrant=False, context_fn=functools.partial(
    create_selective_checkpoint_contexts, _keep_attention))


def parse_mode(value) -> str:
    mode = str(value).lower()
    if mode not in MODES:
        raise ValueError(f"trainer.gradient_checkpointing must be true, false or auto, got {value!r}")
    return mode


def decoder_layers(model) -> list[torch.nn.Module]:
    """The text decoder layers (any wrapper: peft, DDP, DeepSpeed engine)."""
    for name, module in model.named_modules():
        if name.endswith("language_model.layers") and isinstance(module, torch.nn.ModuleList):
            return list(module)
    raise ValueError("no language_model.layers in this model")


def layers_to_keep(n_layers: int, tokens: int, kept_bytes_per_token: float, input_bytes_per_token: float,
                   free_bytes: float, recomputed_extra_per_token: float = 0.0) -> int:
    """The largest k <= n_layers whose activations fit `free_bytes` (see the module docstring); a recomputed layer
    holds its input and `recomputed_extra_per_token` (its attention's outputs)."""
    for k in range(n_layers, -1, -1):
        need = tokens * (k * kept_bytes_per_token
                         + (n_layers - k) * (input_bytes_per_token + recomputed_extra_per_token)
                         + IN_FLIGHT_LAYERS * kept_bytes_per_token)
        if need <= free_bytes:
            return k
    return 0


def layers_within_recipe(n_layers: int, vocab_size: int, kept_bytes_per_token: float,
                         input_bytes_per_token: float, recomputed_extra_per_token: float = 0.0) -> int:
    """The most layers k whose memory beyond the recipe's plain recomputation fits the recipe's logits memory: k kept
    layers beyond a recomputed layer's input, and what the other n - k recomputed layers keep beyond their input."""
    room = vocab_size * RECIPE_BYTES_PER_LOGIT - n_layers * recomputed_extra_per_token
    extra = kept_bytes_per_token - input_bytes_per_token - recomputed_extra_per_token
    if room < 0:
        return 0
    if extra <= 0:
        return n_layers
    return max(0, min(n_layers, int(room // extra)))


def skip_frozen_vision(model) -> None:
    """A vision tower that runs under no_grad (`model.freeze_vision`) has nothing to recompute: no checkpointing."""
    for name, module in model.named_modules():
        if getattr(module, "_runs_without_grad", False):
            for block in module.modules():
                if hasattr(block, "gradient_checkpointing"):
                    block.gradient_checkpointing = False


def set_kept_layers(layers, k: int, save_attention: bool = True) -> None:
    """The last k layers keep their activations; the others are recomputed, keeping their attention's outputs if
    `save_attention` and their checkpoint function is the Trainer's default one (other kwargs are used as given)."""
    n = len(layers)
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = i < n - k
        func = getattr(layer, "_gradient_checkpointing_func", None)
        if func is SAVE_ATTENTION:
            if save_attention:
                continue
            layer._gradient_checkpointing_func = layer._plain_checkpointing_func  # `true` after `auto`
        elif save_attention and is_default_checkpoint(func) and not partitioned(layer):
            layer._plain_checkpointing_func = func
            layer._gradient_checkpointing_func = SAVE_ATTENTION


def is_default_checkpoint(func) -> bool:
    """transformers' `partial(checkpoint, **kwargs)` with config.py's default kwargs (not offloading, not reentrant,
    no context of the user's)."""
    return isinstance(func, functools.partial) and func.func is checkpoint and not func.args \
        and func.keywords == DEFAULT_CHECKPOINT_KWARGS


def partitioned(layer) -> bool:
    """Weights partitioned by ZeRO-3 (gathered in hooks inside the layer): saving attention there is not measured,
    plain recomputation stays."""
    return any(hasattr(p, "ds_id") for p in layer.parameters())


class SavedBytes:
    """Counts the distinct storages autograd saves while a module runs forward (parameters excluded)."""

    def __init__(self, module, skip_storages: set[int]):
        self.skip = skip_storages
        self.saved: dict[int, int] = {}
        self.input_bytes = 0
        self.tokens = 0
        self._ctx = None
        self._handles = [module.register_forward_pre_hook(self._enter, with_kwargs=True),
                         module.register_forward_hook(self._exit, with_kwargs=True)]

    def _pack(self, t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in self.skip:
            self.saved[ptr] = t.untyped_storage().nbytes()
        return t

    def _enter(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        self.input_bytes = hidden.numel() * hidden.element_size()
        self.tokens = hidden.shape[0] * hidden.shape[1]
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()

    def _exit(self, module, args, kwargs, output):
        self._ctx.__exit__(None, None, None)
        self._ctx = None
        for h in self._handles:
            h.remove()

    @property
    def done(self) -> bool:
        return self.tokens > 0 and self._ctx is None


class RetainedBytes:
    """CUDA memory a module's forward leaves allocated beyond its output: what a recomputed layer keeps for the backward
    besides its input (the input was allocated before). Counts what SAC caches outside autograd's saved tensors."""

    def __init__(self, module):
        self.retained = 0
        self.tokens = 0
        self._before = 0
        self._handles = [module.register_forward_pre_hook(self._enter, with_kwargs=True),
                         module.register_forward_hook(self._exit, with_kwargs=True)]

    def _enter(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        self._before = torch.cuda.memory_allocated(hidden.device)
        self._device = hidden.device

    def _exit(self, module, args, kwargs, output):
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        out_bytes = sum(t.untyped_storage().nbytes() for t in outputs if isinstance(t, torch.Tensor))
        self.retained = max(0, torch.cuda.memory_allocated(self._device) - self._before - out_bytes)
        hidden = args[0] if args else kwargs["hidden_states"]
        self.tokens = hidden.shape[0] * hidden.shape[1]
        for h in self._handles:
            h.remove()

    @property
    def done(self) -> bool:
        return self.tokens > 0


class CheckpointPolicy:
    def __init__(self, mode, memory_fraction: float = 0.85, budget: str = "recipe", save_attention: bool = True):
        self.mode = parse_mode(mode)
        self.save_attention = bool(save_attention)  # under `auto`: recomputed layers keep their attention outputs
        self.memory_fraction = float(memory_fraction)
        self.budget = str(budget or "recipe").lower()
        if self.budget not in BUDGETS:
            raise ValueError(f"trainer.memory_budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
        self.probe: SavedBytes | None = None
        self.recompute_probe: RetainedBytes | None = None
        self.kept_per_token: float | None = None  # bytes a kept layer saves, per token
        self.input_per_token: float | None = None  # bytes of a recomputed layer's input, per token
        self.recomputed_extra_per_token = 0.0  # bytes a recomputed layer keeps beyond its input (attention outputs)
        self.kept: int | None = None
        self.announced = False

    def before_micro_batch(self, model, tokens: int, optimizer=None) -> int:
        """Set the layers' flags for a micro-batch of `tokens` tokens; returns how many keep their activations."""
        layers = decoder_layers(model)
        skip_frozen_vision(model)
        if self.mode == "true":
            k = 0
        elif self.mode == "false":
            k = len(layers)
        elif not torch.cuda.is_available():
            k = 0
            self._announce(f"activation checkpointing auto: no CUDA budget to read, all {len(layers)} layers "
                           "recomputed")
        else:
            k = self._auto(model, layers, tokens, optimizer)
        set_kept_layers(layers, k, save_attention=self.mode == "auto" and self.save_attention)
        self.kept = k
        return k

    def _auto(self, model, layers, tokens: int, optimizer) -> int:
        if self.kept_per_token is None:
            if self.probe is None:  # first micro-batch: measure the last layer, recompute the others
                params = {p.untyped_storage().data_ptr() for p in model.parameters()}
                self.probe = SavedBytes(layers[-1], params)
                if len(layers) > 1:  # and what a recomputed one keeps, as it runs (its attention's outputs)
                    self.recompute_probe = RetainedBytes(layers[0])
                return 1
            if not self.probe.done or (self.recompute_probe is not None and not self.recompute_probe.done):
                return 1
            self.kept_per_token = sum(self.probe.saved.values()) / self.probe.tokens
            self.input_per_token = self.probe.input_bytes / self.probe.tokens
            if self.recompute_probe is not None:
                self.recomputed_extra_per_token = self.recompute_probe.retained / self.recompute_probe.tokens
        free = self.memory_fraction * torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        free -= torch.cuda.memory_allocated() + pending_state_bytes(model, optimizer)
        k = layers_to_keep(len(layers), tokens, self.kept_per_token, self.input_per_token, free,
                           self.recomputed_extra_per_token)
        why = f"{self.memory_fraction:g} of GPU memory"
        if self.budget == "recipe":
            k_recipe = layers_within_recipe(len(layers), vocab_size(model), self.kept_per_token, self.input_per_token,
                                            self.recomputed_extra_per_token)
            if k_recipe < k:
                k, why = k_recipe, "the recipe's logits memory"
        self._announce(f"activation checkpointing auto: {k} of {len(layers)} decoder layers keep their activations "
                       f"at {tokens} tokens (a kept layer saves {self.kept_per_token / 2**10:.1f} KiB/token, a "
                       f"recomputed one {self.recomputed_extra_per_token / 2**10:.1f} KiB/token of attention outputs; "
                       f"bound: {why}; trainer.memory_budget={self.budget})")
        return k

    def _announce(self, line: str) -> None:
        if not self.announced:
            print(line, flush=True)
            self.announced = True


def vocab_size(model) -> int:
    """The output vocabulary from the config (weights may be partitioned by ZeRO-3)."""
    config = model.config
    return int(getattr(getattr(config, "text_config", None), "vocab_size", None) or config.vocab_size)


def pending_state_bytes(model, optimizer) -> int:
    """Gradients and Adam moments of trainable parameters that are not allocated yet (before the first step).

    Local sizes: parameters partitioned by ZeRO-3 count 0 here (DeepSpeed allocates their state up front)."""
    state = getattr(optimizer, "state", None) or {}
    total = 0
    for p in model.parameters():
        if not p.requires_grad:
            continue
        size = p.numel() * p.element_size()
        if p.grad is None:
            total += size
        if p not in state:
            total += 2 * p.numel() * 4  # exp_avg, exp_avg_sq in fp32
    return total
