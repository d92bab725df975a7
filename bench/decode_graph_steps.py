"""Decode cost vs steps per CUDA graph: where a decoded token's time goes on the slot decoder.

    python bench/decode_graph_steps.py --size 2b --steps 1,2,4,8       # on a GPU (random-init real-size model)
    python bench/decode_graph_steps.py --size tiny --device cpu --steps 1   # checks the script (eager, no graph)

Streams `--warmup` seconds of random 720p frames (20 forced tokens per second, the stream_latency settings) so
the cache is at its steady size, then for each k in `--steps` decodes `--seconds` more seconds with k steps per
graph launch and reports decode ms/token as the engine times it (slot load + replays + the chunk's token read +
store), and, on the loaded slots, the raw replay cost: host ms per launch call and GPU ms per step (CUDA events
around `--replays` queued steps). The engine's default is `SlotDecoder(steps_per_graph=4)`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_latency import build_model  # noqa: E402

from streaming_vlm.inference.engine import StreamingEngine  # noqa: E402
from streaming_vlm.inference.frames import SyntheticFrameSource  # noqa: E402


def raw_replay(slots, cache, k: int, replays: int) -> tuple[float, float]:
    """(host ms per launch call, GPU ms per step) for k-step graphs, on slots loaded from `cache`."""
    slots.load(cache)
    slots.step_index.zero_()
    slots.first_slot.fill_(slots.base)
    graph = slots.graphs.get(k) or slots._capture(k)
    n = max(1, replays // k)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    host = 0.0
    start.record()
    for _ in range(n):
        slots.step_index.zero_()  # stay inside the slots the decoder was sized for
        t0 = time.perf_counter()
        graph.replay()
        host += time.perf_counter() - t0
    end.record()
    torch.cuda.synchronize()
    return 1000 * host / n, start.elapsed_time(end) / (n * k)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="2b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", default="1,2,4,8", help="comma list of steps per graph")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--replays", type=int, default=40)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, processor = build_model(args.size, device, dtype, "sdpa")
    engine = StreamingEngine(model, processor, {"max_new_tokens": 20, "min_new_tokens": 20, "seed": 0,
                                                "temperature": 0.9, "decode_mode": "auto"})
    engine.start()
    ks = [int(k) for k in args.steps.split(",")]
    source = iter(SyntheticFrameSource(args.warmup + args.seconds * len(ks), fps=2.0, height=args.height,
                                       width=args.width))
    for _ in range(args.warmup):
        engine.step(next(source))
    rows = []
    for k in ks:
        if engine.slots is not None:
            engine.slots.steps_per_graph = k
        decode, tokens = 0.0, 0
        for _ in range(args.seconds):
            seg = engine.step(next(source))
            decode += seg["timings"].get("decode", 0.0)
            tokens += seg["tokens"]
        row = {"k": k, "decode_ms_per_token": 1000 * decode / max(tokens, 1)}
        if device.type == "cuda" and engine.slots is not None:
            row["host_ms_per_launch"], row["gpu_ms_per_step"] = raw_replay(engine.slots, engine.cache, k,
                                                                           args.replays)
        rows.append(row)
        print(row, flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{args.size} on {name}, cache {engine.cache.num_tokens} tokens, slots "
          f"{engine.slots.capacity if engine.slots else 0}")
    print("| steps per graph | decode ms/token (engine) | host ms per launch | GPU ms per step |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['k']} | {r['decode_ms_per_token']:.2f} | {r.get('host_ms_per_launch', float('nan')):.2f} | "
              f"{r.get('gpu_ms_per_step', float('nan')):.2f} |")


if __name__ == "__main__":
    main()
