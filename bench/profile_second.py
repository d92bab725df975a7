"""Where one streamed second's time goes: torch.profiler over a few seconds after warm-up, per stage and per op.

    python bench/profile_second.py --size 2b            # on a GPU (random-init real-size model)
    python bench/profile_second.py --size 2b --lookahead   # as the CLI streams
    python bench/profile_second.py --size tiny --device cpu --height 96 --width 160

Uses the stream_latency benchmark's model and frame source, 20 forced tokens per second, default decode mode.
The stage table reads the engine's profiler ranges (`stage:<name>`, from `Timings.section` and the forward's vision
hooks): wall time per stage, host time inside the range, GPU kernel time and kernel count launched from it. A
stage whose wall time is well above its kernel time is host-bound (launches, syncs, Python); one near it is
kernel-bound.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_latency import warm_engine  # noqa: E402


def stage_table(prof, wall: dict[str, float], seconds: int) -> str:
    """Per stage and stream second: wall ms (engine timings), host ms in its range, GPU kernel ms, kernels."""
    host, gpu, kernels = {}, {}, {}
    for ev in prof.events():
        stage, parent = None, ev
        while parent is not None and stage is None:  # the innermost stage range the op ran under
            if parent.name.startswith("stage:"):
                stage = parent.name[len("stage:"):]
            parent = parent.cpu_parent
        if stage is None:
            continue
        if ev.name.startswith("stage:") and ev.name[len("stage:"):] == stage:
            host[stage] = host.get(stage, 0.0) + ev.cpu_time_total / 1e3
        launched = getattr(ev, "kernels", [])
        kernels[stage] = kernels.get(stage, 0) + len(launched)
        gpu[stage] = gpu.get(stage, 0.0) + sum(k.duration for k in launched) / 1e3
    host["prefill"] = host.get("prefill", 0.0) - host.get("vision", 0.0)  # the vision range sits inside it
    rows = ["| stage | wall ms/s | host ms/s in range | GPU kernel ms/s | kernels/s |", "|---|---:|---:|---:|---:|"]
    for stage in sorted(set(host) | set(k for k, v in wall.items() if v > 0)):
        rows.append(f"| {stage} | {1000 * wall.get(stage, 0.0) / seconds:.1f} | {host.get(stage, 0.0) / seconds:.1f} "
                    f"| {gpu.get(stage, 0.0) / seconds:.1f} | {kernels.get(stage, 0) / seconds:.0f} |")
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="2b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--warmup", type=int, default=30, help="seconds streamed before profiling (fills the window)")
    p.add_argument("--seconds", type=int, default=3, help="seconds profiled")
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--eager", action="store_true", help="the engine's debugging plan: no compile, no CUDA graph")
    p.add_argument("--lookahead", action="store_true", help="profile engine.stream (lookahead) instead of step()")
    p.add_argument("--trace", default=None, help="also write the profile as a Chrome trace here (.json or .json.gz)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    engine, source = warm_engine(args.size, device, args.warmup, args.seconds, args.height, args.width,
                                 eager=args.eager)
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                    if device.type == "cuda" else [])
    before = engine.timings.snapshot()
    with torch.profiler.profile(activities=acts) as prof:
        if args.lookahead:  # as the CLI streams: the next second prepared while this one decodes
            for _ in zip(range(args.seconds), engine.stream(source)):
                pass
        else:
            for _ in range(args.seconds):
                engine.step(next(source))
        if device.type == "cuda":
            torch.cuda.synchronize()
    wall = engine.timings.diff(engine.timings.snapshot(), before)
    if args.trace:
        prof.export_chrome_trace(args.trace)
    print(stage_table(prof, wall, args.seconds))
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    main()
