"""The prefill's compile time at start-up: one compiled decoder layer (`layer_forward`, what the engine compiles)
against the whole 28-layer stack as one compiled function (the engine's design before), cold and warm.

    python bench/prefill_compile_cpu.py                 # CPU: both designs, cold then warm, a table
    python bench/prefill_compile_cpu.py --one layer --cache DIR   # (internal) one process's measurement

A Qwen3-VL text stack with the 2B's depth (28 layers) at the tiny model's widths, so that Dynamo's and
AOTAutograd's tracing, which grow with the number of ops traced and which no on-disk cache skips, are what is timed;
Inductor's code generation for the tiny widths is cheap. Cold = an empty Inductor cache; warm = a second process
on the cache the first filled. Each measurement is a fresh process (a warm start is one). A bench, not the user's
path: the CLI's own start-up line on the GPU is the figure that counts (bench/cli_gpu_job.sh --startup).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(design: str) -> float:
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    sys.path.insert(0, str(ROOT))
    from streaming_vlm.model.text_step import add_deepstack, layer_forward, rms_norm, text_step_for
    from streaming_vlm.model.tiny import build_config

    torch.manual_seed(0)
    config = build_config("tiny")
    config.text_config.num_hidden_layers = 28
    model = Qwen3VLForConditionalGeneration(config).eval().requires_grad_(False)
    step = text_step_for(model.model.language_model)
    if design == "layer":
        step.compile()
    else:  # the whole stack as one compiled function, built from the same layer function

        def stack_forward(h, cos, sin, weights, keys, values, n, index, deepstack, final_norm, final_eps, eps, heads,
                          kv_heads, scaling):
            for i, ((w_in, w_out), kbuf, vbuf) in enumerate(zip(weights, keys, values)):
                h = layer_forward(h, cos, sin, w_in, w_out, kbuf, vbuf, n, eps, heads, kv_heads, scaling)
                if i < len(deepstack):
                    h = add_deepstack(h, index, deepstack[i])
            return rms_norm(h, final_norm, final_eps)

        compiled = torch.compile(stack_forward, dynamic=True)

        def stack(hidden, positions, keys, values, n, visual):
            cos, sin = step.lm.rotary_emb(hidden, positions)
            return compiled(hidden, cos, sin, step.weights, keys, values, n, visual[0], visual[1],
                            step.lm.norm.weight, step.lm.norm.variance_epsilon, step.eps, step.heads,
                            step.kv_heads, step.scaling)

        step._layer, step.stack = True, stack
    tc = config.text_config
    keys = [torch.zeros(1, tc.num_key_value_heads, 64, tc.head_dim) for _ in range(28)]
    values = [torch.zeros_like(k) for k in keys]
    began = time.perf_counter()
    step.warm_up(keys, values, 0)
    return time.perf_counter() - began


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--one", choices=("layer", "stack"))
    ap.add_argument("--cache", default=None)
    args = ap.parse_args()
    if args.one:
        print(json.dumps({"design": args.one, "warm_up_s": measure(args.one)}))
        return 0
    rows = []
    for design in ("layer", "stack"):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            for start in ("cold", "warm"):
                out = subprocess.run([sys.executable, __file__, "--one", design], env=env, capture_output=True,
                                     text=True, check=True).stdout.strip().splitlines()[-1]
                rows.append((design, start, json.loads(out)["warm_up_s"]))
                print(f"{design} {start}: {rows[-1][2]:.1f} s", flush=True)
    print("\n| prefill compiled as | start | warm-up s |\n|---|---|---:|")
    for design, start, s in rows:
        name = "one layer, called 28 times" if design == "layer" else "the 28-layer stack, one function"
        print(f"| {name} | {start} | {s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
