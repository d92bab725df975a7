"""Tensor ops and host syncs in one vision-tower call, with the grid's tensors computed per call (transformers as is)
or once per grid (`VisionGrids`), side by side on the same tower and frames.

    python bench/vision_call_ops.py [--size 2b] [--grid 1,16,16] [--record BENCHMARKS.md]

The real-size tower (random init, fp32, CPU) runs on a small grid: the counts depend on the tower's depth and the
number of temporal patches, not on the frame size, and a small grid keeps the CPU run short. On a GPU every op is a
kernel launch and every sync stalls the host until the GPU has drained. On a GPU the per-call path also syncs once
per block (`.tolist()` of the segment lengths, which then live on the GPU): 24 more a call for the 2B, not counted
here, where every tensor is on the CPU. CPU wall time is not reported: here it is compute, not launch cost.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from streaming_vlm.model.vision_grid import VisionGrids  # noqa: E402

from opcount import count_ops  # noqa: E402
from recording import append_section, cpu_device  # noqa: E402

def main(argv=None):
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

    from streaming_vlm.model.tiny import build_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="2b")
    p.add_argument("--grid", default="1,16,16", help="t,h,w in patches (t = temporal patches: 1 at 2 fps, 2 at 4)")
    p.add_argument("--record", default=None)
    args = p.parse_args(argv)
    vision_config = build_config(args.size).vision_config
    vision_config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    tower = Qwen3VLVisionModel._from_config(vision_config).eval()
    grid = torch.tensor([[int(x) for x in args.grid.split(",")]])
    c = vision_config
    pixels = torch.randn(int(grid.prod()), c.in_channels * c.temporal_patch_size * c.patch_size ** 2)
    grids = VisionGrids(tower, torch.device("cpu"))
    rows = []
    with torch.no_grad():
        tower(pixels, grid_thw=grid)  # warm-up
        with grids.precomputed(grid):
            tower(pixels, grid_thw=grid)
        for label, ctx in (("per call (transformers as is)", None), ("once per grid (VisionGrids)", grids)):
            def call():
                if ctx is None:
                    return tower(pixels, grid_thw=grid)
                with ctx.precomputed(grid):
                    return tower(pixels, grid_thw=grid)
            rows.append((label, *count_ops(call)))
    head = "| grid tensors | tensor ops per call | host syncs per call |"
    table = [head, "|---|---:|---:|"] + [f"| {a} | {b} | {s} |" for a, b, s in rows]
    print("\n".join(table))
    if args.record:
        append_section(args.record, "vision_call_ops", cpu_device(),
                       f"{args.size} vision tower, depth {c.depth}, grid {args.grid}, torch {torch.__version__}",
                       "\n".join(table))


if __name__ == "__main__":
    main()
