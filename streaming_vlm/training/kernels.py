"""Fused training kernels for the Qwen3-VL language model: Liger's Triton kernels where they apply, chosen per run.

`model.kernels`:
    auto    Liger on CUDA when `liger_kernel` is installed and the decoder layers run eager; transformers' own
            modules otherwise (the reason is logged once, so the plain path is never taken silently). Compiled
            decoder layers (`compiled_layers.py`) take transformers' modules: Liger's autograd Functions do not
            trace under Dynamo, and Inductor fuses the same norms, rotations and SwiGLU itself
    liger   Liger, or one clear error when it cannot run here (no CUDA, not installed)
    torch   transformers' own modules

What Liger replaces (liger-kernel >= 0.8.5, whose `apply_liger_kernel_to_qwen3_vl` is the entry point used):
    RMSNorm   every text RMSNorm (layer norms, q/k norms, final norm): one kernel each way, the fp32 statistics
              kept instead of fp32 copies of the activations ("llama" casting, the same math as transformers')
    RoPE      the rotation of q and k (after Qwen3-VL's interleaved mRoPE has built cos/sin), in place
    SwiGLU    the MLP's silu(gate) * up as one kernel that keeps only gate and up for the backward. Liger's
              Qwen3-VL entry point does not wire it (its `swiglu` flag is accepted and ignored), so it is put on
              each text MLP here with Liger's own `LigerSwiGLUMLP.forward`; the MLP is Qwen3's (gate/up/down, silu).
Not used: Liger's fused linear cross-entropy. Our loss (`loss.py`) already runs the lm_head on the labelled
positions only; the fused loss would replace the model's forward and drop `logits_to_keep`.

The kernels are Triton (CUDA only), so no CPU test can run them: `bench/check_kernels.py` compares them with
transformers' modules on the GPU (loss and gradients) before any training figure is taken, and stops on a mismatch.
"""

from __future__ import annotations

import importlib.util
import logging

from streaming_vlm.errors import UserError

log = logging.getLogger(__name__)

KERNEL_CHOICES = ("auto", "liger", "torch")
LIGER_CONFIG = dict(rope=True, rms_norm=True, cross_entropy=False, fused_linear_cross_entropy=False)


def choose_kernels(choice: str | None, cuda: bool, compiled: bool = False) -> tuple[str, str]:
    """("liger" | "torch", why) for `model.kernels`; UserError when `liger` is asked for and cannot run."""
    choice = str(choice or "auto")
    if choice not in KERNEL_CHOICES:
        raise UserError(f"model.kernels must be one of {', '.join(KERNEL_CHOICES)}, got {choice!r}")
    installed = importlib.util.find_spec("liger_kernel") is not None
    if choice == "torch":
        return "torch", "model.kernels=torch"
    if choice == "liger":
        if not cuda:
            raise UserError("model.kernels=liger needs CUDA (Liger's kernels are Triton); use model.kernels=auto")
        if not installed:
            raise UserError("model.kernels=liger needs liger-kernel: pip install 'liger-kernel>=0.8.5'")
        return "liger", "model.kernels=liger"
    if not cuda:
        return "torch", "no CUDA (Liger's kernels are Triton)"
    if compiled:
        return "torch", "decoder layers compiled: Inductor fuses them"
    if not installed:
        return "torch", "liger-kernel is not installed (pip install 'liger-kernel>=0.8.5' for the fused kernels)"
    return "liger", "CUDA and liger-kernel found"


def _fused_swiglu(mlp) -> None:
    """Liger's own SwiGLU MLP forward on this MLP instance (same gate/up/down weights, silu)."""
    from types import MethodType

    from liger_kernel.transformers.swiglu import LigerSwiGLUMLP

    if getattr(mlp.config, "hidden_act", "silu") not in ("silu", "swish"):
        raise UserError(f"Liger's SwiGLU needs a silu MLP, this model's is {mlp.config.hidden_act!r}")
    mlp.forward = MethodType(LigerSwiGLUMLP.forward, mlp)


def apply_liger(model) -> None:
    """Liger's RMSNorm + RoPE (its Qwen3-VL entry point) and SwiGLU on every text MLP, on this model instance.

    The RoPE swap is module-wide (transformers' `modeling_qwen3_vl.apply_rotary_pos_emb`), as Liger does it."""
    from liger_kernel.transformers.monkey_patch import apply_liger_kernel_to_qwen3_vl

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft (LoRA) wrapper
    apply_liger_kernel_to_qwen3_vl(model=base, **LIGER_CONFIG)
    for layer in base.model.language_model.layers:
        _fused_swiglu(layer.mlp)


def setup_kernels(model, choice: str | None, cuda: bool, compiled: bool = False, announce: bool = True) -> str:
    """Choose (see the module docstring), apply, log the choice once; returns "liger" or "torch"."""
    kernels, why = choose_kernels(choice, cuda, compiled)
    if kernels == "liger":
        apply_liger(model)
    if announce:
        what = "Liger RMSNorm + RoPE + SwiGLU" if kernels == "liger" else "transformers' own modules"
        print(f"kernels: {what} ({why})", flush=True)
    return kernels
