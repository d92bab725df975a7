"""Liger's kernels and the compiled decoder layers (CUDA) against transformers' own modules, on the GPU, before any
training figure is taken.

    python bench/check_kernels.py            # GPU: exit 1 on a mismatch (the training bench then stops),
                                             # 3 when Liger cannot run here (every other check passed)
    python bench/check_kernels.py --tiny     # CPU: the reference path only (Liger is Triton: nothing to compare)

A Qwen3-VL with the 2B's real widths (hidden 2048, head_dim 128, GQA 16/8, MLP 6144, interleaved mRoPE, DeepStack)
but 2 decoder layers and a 2-block vision tower, on a real stream window (the stream template over random frames),
through the training loss (`selective_lm_loss`). Loss and every gradient are computed with transformers' modules,
then Liger is applied exactly as `train.py` applies it (`streaming_vlm.training.kernels.apply_liger`) and they are
computed again; before that, on a fresh copy, with the decoder layers compiled (`compiled_layers.compile_layers`,
transformers' modules under Inductor, as the defaults run them):
    fp32 (TF32 off)      loss within 1e-5 relative, every parameter's gradient within 1e-3 (relative L2)
    bf16 autocast        loss within 2e-2 relative, all gradients together within 5e-2 (relative L2): the kernels
                         round at different points than transformers' modules do, as bf16 kernels may
and the patched modules must really be Liger's (a silent no-op would pass the comparison).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOLERANCES = {"fp32": (1e-5, 1e-3), "bf16": (2e-2, 5e-2)}  # (loss, gradient) relative
UNAVAILABLE = 3  # exit code: everything else passed, Liger could not run (not installed, import or launch error);
#                  1: a mismatch (Liger's or any other kernel's)


def build_model(device: str):
    from transformers import Qwen3VLForConditionalGeneration

    from streaming_vlm.model.tiny import build_config
    from streaming_vlm.training.model import freeze_vision

    config = build_config("2b")
    config.text_config.num_hidden_layers = 2
    config.vision_config.depth = 2
    config.vision_config.deepstack_visual_indexes = [0, 1]
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config).to(device=device, dtype=torch.float32)
    freeze_vision(model)
    return model.train()


def build_batch(device: str):
    from streaming_vlm.data.collator import StreamCollator, split_batch
    from streaming_vlm.data.stream_template import Second, StreamTemplate, VisionBudget
    from streaming_vlm.model.tiny import build_processor

    processor = build_processor()
    template = StreamTemplate(processor, budget=VisionBudget(min_pixels=16384, max_pixels=16384,
                                                             total_pixels=16384 * 8))
    rng = np.random.default_rng(0)
    texts = ["kick off", "Red press high", "", "a long ball forward", "shot saved", "corner"]
    seconds = [Second(float(t), float(t + 1), rng.integers(0, 255, (2, 128, 128, 3), dtype=np.uint8),
                      [t + 0.25, t + 0.75], text) for t, text in enumerate(texts)]
    enc = template.encode_window("earlier: Blue won a free kick", seconds)
    sample = {"input_ids": enc.input_ids, "labels": enc.labels, "position_ids": enc.position_ids,
              "pixel_values_videos": enc.pixel_values_videos, "video_grid_thw": enc.video_grid_thw, "index": 0}
    inputs, meta = split_batch(StreamCollator(processor)([sample]))
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    return inputs, meta["loss_positions"].to(device)


def loss_and_grads(model, inputs, positions, bf16: bool):
    from streaming_vlm.training.loss import selective_lm_loss

    model.zero_grad(set_to_none=True)
    device = inputs["input_ids"].device.type
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        loss_sum, n = selective_lm_loss(model, inputs, positions=positions)
    loss = loss_sum / n
    loss.backward()
    grads = {k: p.grad.detach().float().clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def liger_is_wired(model) -> list[str]:
    """What is not Liger's after apply_liger (empty when everything is)."""
    from liger_kernel.transformers.rope import liger_rotary_pos_emb
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    missing = []
    if modeling_qwen3_vl.apply_rotary_pos_emb is not liger_rotary_pos_emb:
        missing.append("rope")
    layer = model.model.language_model.layers[0]
    if "Liger" not in type(layer.input_layernorm).__name__ and "liger" not in \
            getattr(layer.input_layernorm.forward, "__module__", ""):
        missing.append("rms_norm")
    if "liger" not in getattr(layer.mlp.forward, "__module__", ""):
        missing.append("swiglu")
    return missing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU: run the reference path only")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        print("error: no GPU here; use --tiny for the CPU check of this script", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = build_model(device)
    inputs, positions = build_batch(device)
    modes = ["fp32", "bf16"] if cuda else ["fp32"]
    reference = {m: loss_and_grads(model, inputs, positions, bf16=m == "bf16") for m in modes}
    tokens = inputs["input_ids"].numel()
    if not cuda:
        print(f"kernel check (CPU, reference only: Liger is Triton): {tokens} tokens, loss "
              f"{reference['fp32'][0]:.4f}, {len(reference['fp32'][1])} gradients; Liger not compared")
        return 0

    # on a fresh copy, BEFORE Liger patches transformers' module classes: the decoder layers compiled with
    # transformers' modules, as train.py's defaults run them (Inductor's Triton kernels)
    from streaming_vlm.model.vision_attention import use_segment_attention
    from streaming_vlm.training.compiled_layers import compile_layers, compile_vision_blocks
    from streaming_vlm.training.kernels import apply_liger

    fresh = build_model(device)
    fresh.config.text_config.use_cache = False
    use_segment_attention(fresh)
    compile_layers(fresh)
    compile_vision_blocks(fresh)
    compiled = {m: loss_and_grads(fresh, inputs, positions, bf16=m == "bf16") for m in modes}

    liger, missing, unavailable = None, [], None
    try:
        apply_liger(model)
        missing = liger_is_wired(model)
        liger = {m: loss_and_grads(model, inputs, positions, bf16=m == "bf16") for m in modes}
    except Exception as err:  # noqa: BLE001 - not installed, or does not run here: no Liger comparison
        unavailable = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    ok = not missing
    lines = [f"Kernel check ({torch.cuda.get_device_name()}, {tokens} tokens, 2B widths, 2 layers) against "
             f"transformers' modules" + (f"; Liger NOT wired: {missing}" if missing else "")]
    checks = [("compiled decoder layers and vision blocks (segment attention)", compiled)]
    if liger is not None:
        checks.insert(0, ("Liger RMSNorm + RoPE + SwiGLU", liger))
    for what, result in checks:
        for m in modes:
            good, line = compare(reference[m], result[m], m)
            ok &= good
            lines.append(f"  {what}, {line}")
    for line, good in vision_checks(device):
        ok &= good
        lines.append(f"  {line}")
    if unavailable:  # the other CUDA kernels are still checked: Liger's absence never skips them
        lines.append(f"  Liger could not run here: {unavailable}")
    lines.append("kernel check: " + ("FAILED" if not ok else "passed, Liger not compared" if unavailable else "passed"))
    print("\n".join(lines), flush=True)
    return 1 if not ok else UNAVAILABLE if unavailable else 0


VISION_GRIDS = {"equal frames": [[4, 16, 16]], "unequal frames": [[2, 16, 16], [1, 8, 12], [1, 16, 16]]}


def vision_checks(device: str):
    """The vision tower's segment attention (equal frames: one batched SDPA call; unequal: torch's varlen flash
    kernel on CUDA), eager then with the blocks compiled, against transformers' per-frame `sdpa`: [(line, ok)]."""
    from streaming_vlm.model.vision_attention import use_segment_attention
    from streaming_vlm.training.compiled_layers import compile_vision_blocks

    model = build_model(device).eval()
    visual = model.model.visual
    c = visual.config
    g = torch.Generator().manual_seed(0)
    cases = []
    for what, grid in VISION_GRIDS.items():
        grid = torch.tensor(grid)
        pixels = torch.randn(int(grid.prod(-1).sum()), c.in_channels * c.temporal_patch_size * c.patch_size ** 2,
                             generator=g).to(device)
        cases += [(what, mode, grid.to(device), pixels) for mode in ("fp32", "bf16")]

    def outputs():
        with torch.no_grad():
            return [_vision_out(visual, grid, pixels, mode == "bf16") for _, mode, grid, pixels in cases]

    reference = outputs()
    if not use_segment_attention(model):
        return [(f"vision segment attention: not applied (the tower runs {c._attn_implementation})", False)]
    eager = outputs()
    compile_vision_blocks(model)
    compiled = outputs()
    out = []
    for label, result in (("eager", eager), ("compiled blocks", compiled)):
        for (what, mode, _, _), ref, new in zip(cases, reference, result):
            err, tol = rel(new, ref), TOLERANCES[mode][1]
            out.append((f"vision segment attention, {label}, {what}, {mode}: rel L2 {err:.1e} (tol {tol:g}) -> "
                        f"{'ok' if err <= tol else 'MISMATCH'}", err <= tol))
    return out


def _vision_out(visual, grid, pixels, bf16: bool):
    with torch.autocast(pixels.device.type, dtype=torch.bfloat16, enabled=bf16):
        return visual(pixels, grid_thw=grid).pooler_output.float()


def compare(reference, candidate, mode: str) -> tuple[bool, str]:
    """(within tolerance?, one line) for one (loss, gradients) pair against the reference's."""
    (loss_ref, g_ref), (loss_new, g_new) = reference, candidate
    loss_tol, grad_tol = TOLERANCES[mode]
    loss_err = abs(loss_new - loss_ref) / abs(loss_ref)
    if g_new.keys() != g_ref.keys():
        return False, f"{mode}: gradients of different parameters"
    if mode == "fp32":
        worst_name, grad_err = max(((k, rel(g_new[k], g_ref[k])) for k in g_ref), key=lambda kv: kv[1])
    else:
        worst_name = "all"
        grad_err = rel(torch.cat([g_new[k].flatten() for k in g_ref]), torch.cat([g_ref[k].flatten() for k in g_ref]))
    good = loss_err <= loss_tol and grad_err <= grad_tol
    return good, (f"{mode}: loss {loss_ref:.6f} vs {loss_new:.6f} (rel {loss_err:.1e}, tol {loss_tol:g}); gradients "
                  f"rel L2 {grad_err:.1e} ({worst_name}; tol {grad_tol:g}) -> {'ok' if good else 'MISMATCH'}")


if __name__ == "__main__":
    sys.exit(main())
