"""Host-side cost of the cache's per-second bookkeeping at the 2B's steady cache size, without the model.

    python bench/eviction_host.py [--seconds 80] [--record BENCHMARKS.md]

A `StreamingCache` with 28 tiny layers (so the tensor work is negligible) is streamed the way the 2B stream runs:
a 40-token sink, then per second a 750-token vision turn (spanning 40 positions) and a 23-token reply, under the
default policy (16-s vision window, 512 + 512 text). Per second it times, on the host: the policy's plan, the
cache's `apply` (segment bookkeeping, the keep index, the rotation, per layer: the same tensor ops a GPU would
launch, so its host time approximates their launch cost), and the `context` ids the decoder marks as seen
(`cache.ids_tensor()`, beside the `torch.tensor(cache.ids())` it replaced). It also counts the tensor ops of one
steady-state eviction (on a GPU, about its kernels). All of this runs before the GPU gets the second's first
kernel, so on a GPU it adds straight to the per-second latency.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from streaming_vlm.inference.cache import REPLY, SINK, USER, StreamingCache  # noqa: E402
from streaming_vlm.inference.eviction import StreamingPolicy  # noqa: E402

from opcount import count_ops  # noqa: E402
from recording import append_section, cpu_device  # noqa: E402


def run(seconds: int, layers: int = 28) -> dict:
    inv_freq = 1.0 / (5_000_000 ** (torch.arange(0, 4, 2).float() / 4))
    cache = StreamingCache(inv_freq)
    policy = StreamingPolicy(window_size=16, text_sink=512, text_sliding_window=512, max_cache_tokens=65536,
                             fold_strip=((198,), (151645,), ()))

    def add(kind, n, second=None, vision=False, span=None):
        pos = cache.next_position
        cache.add_segment(kind, list(range(1000, 1000 + n)), pos, pos + (span or n), second, vision)
        k = torch.zeros(1, 1, n, 4)
        for layer in range(layers):
            cache.update(k, k, layer)

    add(SINK, 40)
    plan_ms, apply_ms, ids_ms, list_ms = [], [], [], []
    for s in range(seconds):
        t0 = time.perf_counter()
        plan = policy.plan(cache, 800, True)
        t1 = time.perf_counter()
        cache.apply(plan)
        t2 = time.perf_counter()
        add(USER, 750, s, True, span=40)
        add(REPLY, 23, s)
        t3 = time.perf_counter()
        cache.ids_tensor()
        t4 = time.perf_counter()
        torch.tensor(cache.ids(), dtype=torch.long)
        t5 = time.perf_counter()
        plan_ms.append(1000 * (t1 - t0))
        apply_ms.append(1000 * (t2 - t1))
        ids_ms.append(1000 * (t4 - t3))
        list_ms.append(1000 * (t5 - t4))
    steady = slice(seconds // 2, None)  # after the window and the text blocks have filled
    ops, _ = count_ops(lambda: cache.apply(policy.plan(cache, 800, True)))
    return {"tokens": cache.num_tokens, "layers": layers, "ops": ops, "plan": float(np.median(plan_ms[steady])),
            "apply": float(np.median(apply_ms[steady])), "ids": float(np.median(ids_ms[steady])),
            "ids_list": float(np.median(list_ms[steady]))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=80)
    p.add_argument("--layers", type=int, default=28, help="cache layers (the 2B and 4B have 28 and 36)")
    p.add_argument("--label", default="this commit")
    p.add_argument("--record", default=None, help="append the table to this markdown file")
    args = p.parse_args(argv)
    r = run(args.seconds, args.layers)
    head = ("| code | layers | cache tokens | plan ms | apply ms | tensor ops per eviction | context ids ms | "
            "total ms per second | (context ids as torch.tensor(ids()) ms) |")
    row = (f"| {args.label} | {r['layers']} | {r['tokens']} | {r['plan']:.2f} | {r['apply']:.2f} | {r['ops']} | "
           f"{r['ids']:.2f} | {r['plan'] + r['apply'] + r['ids']:.2f} | {r['ids_list']:.2f} |")
    print(head + "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n" + row)
    if args.record:
        append_section(args.record, "eviction_host", cpu_device(), "medians over the second half",
                       head + "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n" + row)


if __name__ == "__main__":
    main()
