"""torch.compile of a model's repeated blocks, one `forward` at a time (regional compilation), applied from outside.

The blocks of a stack are identical, so Dynamo traces one and every block reuses that graph (its guards are on the
block's type and flags, not its identity); `dynamic=True` because what flows through changes length (windows,
frame sizes): one graph serves every length. Compiling `forward` rather than the module's call keeps module hooks
eager and works whichever of `__call__` or `forward` transformers' `GradientCheckpointingLayer` wraps. Compilation
is lazy: it traces on the first call.

Training compiles the text decoder layers and the vision blocks (`training/compiled_layers.py` decides when); the
CLI compiles the vision blocks (`inference/engine.py`, on the compiled plan).
"""

from __future__ import annotations

import torch


def tracing_settings():
    """Dynamo's settings for tracing the compiled layer and blocks with `dynamic=True`, as a context around the calls
    that may trace (the guards they leave, the floats' values, do not depend on it): Python floats (a norm's eps,
    an attention scale) are constants. With every input dynamic torch makes such a float a symbol, and Inductor's
    pass that turns float symbols into tensors gives up on them and restarts the whole trace with the floats
    specialised: every compilation, a warm start's too (the on-disk caches do not skip Dynamo), paid for Dynamo's
    trace, AOTAutograd and an AOTAutograd cache miss twice."""
    return torch._dynamo.config.patch(specialize_float=True)


def compile_forwards(modules) -> int:
    """Compile every module's `forward` in place (once); returns how many."""
    for module in modules:
        if not getattr(module, "_forward_compiled", False):
            module.forward = torch.compile(module.forward, dynamic=True)
            module._forward_compiled = True
    return len(modules)


def vision_blocks(model) -> list[torch.nn.Module]:
    """The vision tower's blocks (any wrapper: peft, DDP, DeepSpeed engine)."""
    for name, module in model.named_modules():
        if name.endswith("visual.blocks") and isinstance(module, torch.nn.ModuleList):
            return list(module)
    raise ValueError("no visual.blocks in this model")
