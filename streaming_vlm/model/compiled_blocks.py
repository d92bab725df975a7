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
