"""Where one streamed second's time goes: torch.profiler over a few seconds after warm-up, top ops by self time.

    python bench/profile_second.py --size 2b            # on a GPU (random-init real-size model)
    python bench/profile_second.py --size tiny --device cpu --height 96 --width 160

Uses the stream_latency benchmark's model and frame source, 20 forced tokens per second, default decode mode.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_latency import warm_engine  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="2b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--warmup", type=int, default=30, help="seconds streamed before profiling (fills the window)")
    p.add_argument("--seconds", type=int, default=3, help="seconds profiled")
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--decode_mode", default="auto")
    p.add_argument("--rows", type=int, default=30)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    engine, source = warm_engine(args.size, device, args.warmup, args.seconds, args.height, args.width,
                                 args.decode_mode)
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                    if device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(args.seconds):
            seg = engine.step(next(source))
        if device.type == "cuda":
            torch.cuda.synchronize()
    print({k: round(v * 1000, 1) for k, v in seg["timings"].items()}, "ms in the last second")
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    main()
