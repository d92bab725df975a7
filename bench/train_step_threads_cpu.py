"""One demo training step on the tiny model, on one thread and on two, alternating: what `make demo`'s choice to
train its two arms side by side (one thread each) rests on.

    python bench/train_step_threads_cpu.py --data-root outputs/demo/data [--model checkpoints/tiny-qwen3vl --reps 4]

The demo's stage-1 recipe (`experiment=smoke_stage1`): 4 windows of 8 s, collated ahead, then forward, backward and
the fused AdamW step of the trainer's default optimizer. Prints wall and CPU seconds per step for each thread count.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True, help="data made by `python -m data.synthetic` (the demo's)")
    ap.add_argument("--model", default=str(ROOT / "checkpoints" / "tiny-qwen3vl"))
    ap.add_argument("--reps", type=int, default=4)
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
    model, processor = load_for_training(cfg.model, plan, deepspeed_enabled=False)
    model.train()
    dataset, collate, _ = build_train(plan.data_sources, processor)
    batches = [split_batch(collate([dataset[i]]))[0] for i in range(4)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)

    def step():
        for batch in batches:
            loss, n = selective_lm_loss(model, batch)
            (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up
    rows = {1: [], 2: []}
    for _ in range(args.reps):
        for threads in rows:
            torch.set_num_threads(threads)
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            rows[threads].append((time.perf_counter() - wall, time.process_time() - cpu))
    print("| threads | wall s per step | CPU s per step |\n|---:|---|---|")
    for threads, r in rows.items():
        print(f"| {threads} | {', '.join(f'{w:.2f}' for w, _ in r)} | {', '.join(f'{c:.2f}' for _, c in r)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
