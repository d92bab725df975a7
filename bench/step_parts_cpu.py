"""Where a demo stage-1 step's host time goes on the CPU, part by part: loading a window (dataset item + collate),
forward, backward, and the optimizer step, each timed alone on the demo's recipe (`experiment=smoke_stage1`).

    python bench/step_parts_cpu.py --data-root outputs/demo/data [--model checkpoints/tiny-qwen3vl --steps 6]

Run it with OMP_NUM_THREADS=1 for the demo's per-job thread count. Prints the median seconds per part per step
(4 windows a step), and the process's user/system CPU seconds (system time is page faults of fresh allocations).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True, help="data made by `python -m data.synthetic` (the demo's)")
    ap.add_argument("--model", default=str(ROOT / "checkpoints" / "tiny-qwen3vl"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--glibc-default", action="store_true",
                    help="leave glibc's mmap threshold as it is (what training on the CPU did before)")
    args = ap.parse_args(argv)

    import torch
    from hydra import compose, initialize_config_dir

    from streaming_vlm.data.collator import split_batch
    from streaming_vlm.training.data import build_train
    from streaming_vlm.training.loss import selective_lm_loss
    from streaming_vlm.training.model import load_for_training
    from streaming_vlm.training.run import make_plan

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("config", overrides=["experiment=smoke_stage1", f"data.root={args.data_root}",
                                           f"model.name_or_path={args.model}", "output_dir=/tmp/unused"])
    plan = make_plan(cfg)
    if not args.glibc_default:
        from streaming_vlm.training.host_memory import keep_freed_memory

        print(f"freed blocks kept for reuse: {keep_freed_memory()}")
    model, processor = load_for_training(cfg.model, plan, deepspeed_enabled=False)
    model.train()
    dataset, collate, _ = build_train(plan.data_sources, processor)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    parts = {"load": [], "forward": [], "backward": [], "clip+optimizer+zero": []}
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    t_cpu = os.times()
    for s in range(args.steps + 1):
        acc = dict.fromkeys(parts, 0.0)
        for i in order[4 * s:4 * s + 4]:
            t = time.perf_counter()
            batch, meta = split_batch(collate([dataset[i]]))
            acc["load"] += time.perf_counter() - t
            t = time.perf_counter()
            loss, n = selective_lm_loss(model, batch, positions=meta["loss_positions"])
            acc["forward"] += time.perf_counter() - t
            t = time.perf_counter()
            (loss / n).backward()
            acc["backward"] += time.perf_counter() - t
        t = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        acc["clip+optimizer+zero"] += time.perf_counter() - t
        if s:  # the first step warms up
            for k in parts:
                parts[k].append(acc[k])
    t_end = os.times()
    print("| part | s per step (median) |\n|---|---:|")
    for k, v in parts.items():
        print(f"| {k} | {statistics.median(v):.3f} |")
    print(f"| total | {sum(statistics.median(v) for v in parts.values()):.3f} |")
    print(f"process CPU: user {t_end.user - t_cpu.user:.1f} s, system {t_end.system - t_cpu.system:.1f} s "
          f"over {args.steps + 1} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
