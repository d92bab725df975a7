"""Where a decoded token's time goes on the slot decoder: host launch cost vs the graph's GPU time.

    python bench/decode_replay.py --size 2b                       # on a GPU (random-init real-size model)
    python bench/decode_replay.py --size tiny --device cpu         # checks the script (eager, no graph)
    python bench/decode_replay.py --size 2b --eager                # the engine's debugging plan

Streams `--warmup` seconds of random 720p frames (20 forced tokens per second, the stream_latency settings) so
the cache is at its steady size, decodes `--seconds` more seconds and reports decode ms/token as the engine times
it (slot load + replays + the chunk's token read + store), and, on the loaded slots, the raw replay cost: host ms
per launch call and GPU ms per step (CUDA events around `--replays` queued steps). Decode is launch-bound when
the host column is close to the GPU column, kernel-bound when it is far below it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_latency import warm_engine  # noqa: E402


def raw_replay(slots, cache, replays: int) -> tuple[float, float]:
    """(host ms per launch call, GPU ms per step), on slots loaded from `cache`."""
    slots.load(cache)
    slots.first_slot.fill_(slots.base)
    if slots.graph is None:
        slots._capture()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    host = 0.0
    start.record()
    for _ in range(replays):
        slots.step_index.zero_()  # stay inside the slots the decoder was sized for
        t0 = time.perf_counter()
        slots.graph.replay()
        host += time.perf_counter() - t0
    end.record()
    torch.cuda.synchronize()
    return 1000 * host / replays, start.elapsed_time(end) / replays


def measure(engine, source, seconds: int, replays: int, device) -> dict:
    """Engine-timed decode ms/token and per-second split over `seconds`, then the raw replay cost."""
    split, tokens = {}, 0
    for _ in range(seconds):
        seg = engine.step(next(source))
        for k, v in seg["timings"].items():
            split[k] = split.get(k, 0.0) + 1000 * v / seconds
        tokens += seg["tokens"]
    host = gpu = float("nan")
    if device.type == "cuda" and engine.slots is not None and engine.slots.use_graph:
        host, gpu = raw_replay(engine.slots, engine.cache, replays)
    return dict(decode=split.get("decode", 0.0) * seconds / max(tokens, 1), host=host, gpu=gpu, split=split)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="2b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--replays", type=int, default=40)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--eager", action="store_true", help="the engine's debugging plan: no compile, no CUDA graph")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    engine, source = warm_engine(args.size, device, args.warmup, args.seconds + 1, args.height, args.width,
                                 eager=args.eager)
    t0 = time.perf_counter()
    engine.step(next(source))
    print(f"first measured second: {time.perf_counter() - t0:.1f} s ({engine.plan.describe()})", flush=True)
    rows = {"step as the engine runs it": measure(engine, source, args.seconds, args.replays, device)}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{args.size} on {name}, cache {engine.cache.num_tokens} tokens, slots "
          f"{engine.slots.capacity if engine.slots else 0}, {args.seconds} s each")
    stages = ("preprocess", "vision", "prefill", "decode", "eviction")
    print("| run | ms/token (engine) | host ms per launch | GPU ms per step | "
          + " | ".join(f"{k} ms/s" for k in stages) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(stages))
    for label, r in rows.items():
        print(f"| {label} | {r['decode']:.2f} | {r['host']:.3f} | {r['gpu']:.2f} | "
              + " | ".join(f"{r['split'].get(k, 0.0):.1f}" for k in stages) + " |")


if __name__ == "__main__":
    main()
