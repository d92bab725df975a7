"""CPU seconds one stage-1 window costs the training loader, as a DataLoader worker spends them (one thread).

    python bench/loader_window_cpu.py [--windows 4 --runs 3 --data-dir DIR --process-frames loader|trainer]

One synthetic 1280x720 24 fps game of 36 s (`loader_throughput.py`'s data), the 2B recipe's 24-s windows at 2 fps
and its pixel budget, `dataset[i]` timed by `time.process_time` (decord's decoding, the stream template, the
video processor; with `--process-frames trainer`, as training on CUDA runs it: the video processor is left to the
training process). Prints a table of CPU and wall seconds per window for each run, then where the time goes (cProfile
of the last run). To compare two trees, run it from each (`git worktree add`), alternating.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=4, help="windows per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data-dir", default=None, help="reuse the game and processor here (default: a temp dir)")
    ap.add_argument("--process-frames", default="loader", choices=("loader", "trainer"),
                    help="data.process_frames (default loader: the CPU default)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # as in a DataLoader worker
    from transformers import AutoProcessor

    from bench.loader_throughput import BUDGET_2B, make_data
    from streaming_vlm.data.dataset import build_train_dataset

    work = Path(args.data_dir or tempfile.mkdtemp(prefix="loader_cpu_"))
    work.mkdir(parents=True, exist_ok=True)
    data = make_data(work, 1, 36.0, 1280, 720)
    proc_dir = work / "tiny-ckpt"
    if not (proc_dir / "config.json").exists():
        from streaming_vlm.model.tiny import build_checkpoint

        build_checkpoint(proc_dir)
    ds = build_train_dataset(dict(train_file=str(data), window=24, stride=4, fps=2.0, **BUDGET_2B,
                                  process_frames=args.process_frames),
                             AutoProcessor.from_pretrained(proc_dir))
    ds[0]  # warm-up: the reader's handle, the processor's first call
    print(f"| run | CPU s per window | wall s per window |   ({args.windows} windows a run, tree {ROOT}, "
          f"data.process_frames={args.process_frames})")
    print("|---:|---:|---:|")
    profile = cProfile.Profile(time.process_time)
    for run in range(args.runs):
        if run == args.runs - 1:
            profile.enable()
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(args.windows):
            ds[i % len(ds)]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"| {run + 1} | {cpu / args.windows:.2f} | {wall / args.windows:.2f} |", flush=True)
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
