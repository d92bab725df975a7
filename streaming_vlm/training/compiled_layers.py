"""torch.compile of the text decoder layers and the vision blocks (regional compilation), applied from outside the
model, chosen per run.

`model.compile_layers`:
    auto    on CUDA without ZeRO-3 and without `model.kernels=liger`: every decoder layer's `forward` compiled;
            otherwise eager, and the reason is logged once (so the eager path is never taken silently)
    true    compiled, or one clear error where it cannot be (ZeRO-3, Liger's kernels); on a CPU it needs Inductor's
            C++ toolchain
    false   eager

Why: an eager decoder layer launches dozens of small elementwise kernels (norms, rotations, SwiGLU, residual adds,
casts, q/k reshapes) whose memory traffic is a large share of a step at 2B widths; Liger's kernels fuse some of
them. Inductor fuses all of them, and what it keeps for the backward is smaller than eager's (more layers then keep
their activations within the same memory budget: `checkpointing.py` measures a kept layer as compiled). Liger's
autograd Functions do not trace under Dynamo, so compiled layers use transformers' modules (`kernels.py`).

Per layer and per `forward` (`model/compiled_blocks.py`): one graph for every layer and window length; a layer
that keeps its activations and one that is recomputed (`gradient_checkpointing`, set per micro-batch by
`CheckpointPolicy`) are two graphs; eval (`training=False`) is a third. Module hooks (the checkpoint policy's probe)
stay eager.

`model.compile_vision` (same choices, same rules, Liger aside): every vision block's `forward` compiled, one graph for
every frame size. The tower's own forward stays eager (its grid computations loop on the host). A block fuses its
LayerNorms, rotations, GELU and bias adds; its attention is one SDPA call over equal-length frames
(`streaming_vlm.model.vision_attention`, which `load_for_training` switches the tower to): transformers' `sdpa` split
per frame would break the graph at every block on a `.tolist()`. A frozen tower runs under no_grad, so its graph is
inference-only.

ZeRO-3 is excluded because it gathers each submodule's partitioned weights in module hooks inside the layer, which
Dynamo does not trace; ZeRO-2 and no DeepSpeed keep whole weights and compile.

Contract: the same loss and gradients as the eager layers within float tolerance, kept or recomputed
(tests/test_train_fast_path.py); compiled vision blocks give the eager tower's output (tests/test_vision_attention.py).
"""

from __future__ import annotations

import torch

from streaming_vlm.errors import UserError
from streaming_vlm.model.compiled_blocks import compile_forwards, vision_blocks
from streaming_vlm.training.checkpointing import decoder_layers

COMPILE_CHOICES = ("auto", "true", "false")


def choose_compile(choice, cuda: bool, zero_stage: int | None, kernels=None) -> tuple[bool, str]:
    """(compile?, why) for `model.compile_layers` (given `model.kernels`); UserError when `true` cannot run here."""
    choice = str(choice if choice is not None else "auto").lower()
    if choice not in COMPILE_CHOICES:
        raise UserError(f"model.compile_layers must be one of {', '.join(COMPILE_CHOICES)}, got {choice!r}")
    if choice == "false":
        return False, "model.compile_layers=false"
    if str(kernels).lower() == "liger":
        if choice == "true":
            raise UserError("model.compile_layers=true cannot run with model.kernels=liger (Liger's kernels do not "
                            "trace under Dynamo; compiled layers fuse the same work): choose one")
        return False, "model.kernels=liger asks for Liger's eager kernels"
    if zero_stage == 3:
        if choice == "true":
            raise UserError("model.compile_layers=true cannot run under ZeRO-3 (its weight gathering runs in module "
                            "hooks inside each layer); use model.compile_layers=auto or deepspeed=zero2")
        return False, "ZeRO-3 gathers weights inside each layer"
    if choice == "true":
        return True, "model.compile_layers=true"
    if not cuda:
        return False, "no CUDA"
    return True, "CUDA, no ZeRO-3"


def compile_layers(model) -> int:
    """Compile every text decoder layer's `forward` in place (see the module docstring); returns how many."""
    return compile_forwards(decoder_layers(model))


def compile_vision_blocks(model) -> int:
    """Compile every vision block's `forward` in place (see the module docstring); returns how many."""
    return compile_forwards(vision_blocks(model))


def setup_compile(model, choice, cuda: bool, zero_stage: int | None, kernels=None, vision_choice=None,
                  announce: bool = True) -> bool:
    """Choose, apply, log the choices once; returns whether the decoder layers are compiled (`kernels.setup_kernels`
    takes it: compiled layers use transformers' modules). Compilation is lazy: it traces on the first forward."""
    compiled, why = choose_compile(choice, cuda, zero_stage, kernels)
    n = compile_layers(model) if compiled else len(decoder_layers(model))
    vision, vision_why = choose_compile(vision_choice, cuda, zero_stage)
    if vision:
        compile_vision_blocks(model)
    if announce:
        what = f"{n} decoder layers compiled (one graph, dynamic lengths)" if compiled else "decoder layers eager"
        attention = vision_blocks(model)[0].attn.config._attn_implementation
        print(f"compile: {what} ({why}); vision blocks {'compiled' if vision else 'eager'} ({vision_why}), "
              f"attention {attention}", flush=True)
    return compiled
