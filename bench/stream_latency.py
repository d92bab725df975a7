"""Streaming latency benchmark: random-init real-size Qwen3-VL 2B/4B, N minutes of stream, 20 tokens per second.

    # on a GPU (one command must fit the device tool's 10 minutes: cap the comparison runs)
    python bench/stream_latency.py --sizes 2b --minutes 10 --full_minutes 4 --anchor_minutes 2
    python bench/stream_latency.py --sizes 2b,4b --minutes 60          # the issue's full run, ~1 h+ per size
    # longer than one device call: bench/device_job.sh starts it detached and polls it
    # on CPU, the tiny model, to check the script itself
    python bench/stream_latency.py --smoke
    # the CLI itself, as a user runs it (only the seed's flags), on a real video file: start-up to the first cue,
    # FPS processed, decode ms/token and read time, parsed from the CLI's own summary line
    python bench/stream_latency.py --cli --model_path ckpt-2b --video match.mp4 --label "2B 1080p50"

The model is built from `streaming_vlm.model.tiny.build_config(size)` directly on the device (no weights on disk),
the processor from `build_processor()` (real Qwen tokenizer). Frames are random uint8 at `--height`×`--width`
(default 720p), read at `--fps` (default 2) and resized by the stream template to the per-frame pixel budget a
`--window_size`-second training window gets (768·32² pixels/frame at 2 fps × 16 s: the 2B/4B budget, ~768 vision
tokens per second). Every second generates exactly `--tokens` new tokens (<|im_end|> suppressed until then), so
runs compare.

Six modes, side by side in the same process and on the same frames:
- `streaming`  our engine with the plan it picks in `start()` (the CLI's): StreamingCache, eviction before each
               second, one key rotation per eviction, on CUDA a compiled prefill layer and decode steps
               replayed as one CUDA graph over fixed slot buffers;
- `per_layer`  `streaming` with the prefill run eagerly layer by layer, not through the compiled layer
               (`Plan(compiled=False)`; the decode step stays graphed but not compiled);
- `stepwise`   `streaming` without lookahead: the next second is read and prepared only after this one's reply
               (`lookahead=False`), where `streaming` does it while the reply decodes (`engine.stream`);
- `eager`      the same engine on the reference path (`Plan(fast=False)`: transformers' forward, one eager forward
               per decoded token, host sampler);
- `full`       eager forwards with a full, growing cache (no eviction): transformers' own forward over everything
               seen, until out-of-memory or `--full_minutes`;
- `anchor`     our engine, but every forward also re-rotates the whole key cache of every layer, as the anchor
               implementation does (it caches un-rotated keys and re-applies mRoPE to all of them at every decoded
               token). Cost emulation: the rotation is by the recomputed angles × 0, so the numbers are ours and the
               extra work is the anchor's (cos/sin over all cached positions + 4 elementwise ops over the keys).

Reported per mode: stream seconds, FPS processed (frames / wall), real-time factor (wall / stream s; < 1 is faster
than real time), per-second latency p50/p99, decode ms/token (whole run and last minute), the per-second split
vision / prefill / decode / eviction / preprocess, memory at start / end / peak and its slope after warm-up
(MB per stream minute), and a PNG of memory (and decode ms/token) over stream time. Results are printed as a
table and appended, with device and date, to BENCHMARKS.md (`--record`, off in --smoke unless given).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
from typing import Iterator
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streaming_vlm.inference.cache import StreamingCache  # noqa: E402
from streaming_vlm.inference.engine import Plan, StreamingEngine  # noqa: E402
from streaming_vlm.data.stream_template import Second  # noqa: E402
from streaming_vlm.inference.frames import VideoFrameSource  # noqa: E402
from streaming_vlm.model.mrope import apply_rotation  # noqa: E402
from tests.score_trace import TracingEngine  # noqa: E402

ENGINE_MODES = ("streaming", "per_layer", "stepwise")  # our engine as the CLI runs it, and variants
VARIANTS = ("per_layer", "stepwise")
MODES = ("streaming", "per_layer", "stepwise", "eager", "full", "anchor")


class SyntheticFrameSource:
    """`seconds` seconds of random uint8 frames (height × width) at `fps`, with absolute times from `start`."""

    def __init__(self, seconds: float, fps: float = 2.0, height: int = 448, width: int = 448, start: float = 0.0,
                 seed: int = 0):
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.seconds, self.fps, self.height, self.width = float(seconds), float(fps), height, width
        self.start = float(start)
        self.rng = np.random.default_rng(seed)

    @property
    def duration(self) -> float:
        return self.seconds

    def __iter__(self) -> Iterator[Second]:
        first = math.ceil(round(self.start * self.fps, 6))
        for s in range(int(math.floor(self.start)), int(math.ceil(self.start + self.seconds))):
            ticks = range(max(first, math.ceil(round(s * self.fps, 6))), math.ceil(round((s + 1) * self.fps, 6)))
            times = [k / self.fps for k in ticks]
            frames = self.rng.integers(0, 256, size=(len(times), self.height, self.width, 3), dtype=np.uint8)
            yield Second(float(s), float(s + 1), frames, times)


class AnchorRotationCache(StreamingCache):
    """StreamingCache + the anchor's per-forward work: recompute angles for every cached position and rotate
    every cached key of the layer (by angle·0, so attention sees the same keys and the outputs stay ours)."""

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        n = keys.shape[-2]
        if layer_idx == 0 or getattr(self, "_emb_len", -1) != n:
            # once per forward, shared by the layers (the anchor recomputes the 3-D ids over the whole sequence)
            inv = self.inv_freq.to(keys.device)
            angle = torch.arange(n, device=keys.device, dtype=torch.float32)[:, None] * inv * 0.0
            emb = torch.cat([angle, angle], dim=-1)
            self._cos, self._sin, self._emb_len = emb.cos(), emb.sin(), n
        return apply_rotation(keys, self._cos, self._sin), values


class AnchorEngine(StreamingEngine):
    """Our engine on the anchor's cache (`anchor` mode)."""
    cache_class = AnchorRotationCache


# ---- model -------------------------------------------------------------------------------------------------
def build_model(size: str, device: torch.device, dtype: torch.dtype, attn: str):
    from transformers import Qwen3VLForConditionalGeneration

    from streaming_vlm.model.tiny import build_config, build_processor

    config = build_config(size)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(config, attn_implementation=attn, dtype=dtype)
    return model.eval().requires_grad_(False), build_processor()


def warm_engine(size: str, device: torch.device, warmup: int, more: int, height: int, width: int,
                plan: Plan | None = None, **config):
    """A real-size engine (20 forced tokens per second, seed 0) after `warmup` streamed seconds of random frames,
    so its cache is at its steady size; returns (engine, an iterator over `more` further seconds)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, processor = build_model(size, device, dtype, "sdpa")
    engine = StreamingEngine(model, processor, {"max_new_tokens": 20, "min_new_tokens": 20, "seed": 0, **config},
                             plan=plan)
    engine.start()
    source = iter(SyntheticFrameSource(warmup + more, fps=2.0, height=height, width=width))
    for _ in range(warmup):
        engine.step(next(source))
    return engine, source


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---- one run -------------------------------------------------------------------------------------------------
def run_mode(mode, size, model, processor, args, device) -> dict:
    cfg = {"fps": args.fps, "window_size": args.window_size, "text_sink": args.text_sink,
           "text_sliding_window": args.text_sliding_window, "max_new_tokens": args.tokens,
           "min_new_tokens": args.tokens, "temperature": 0.9, "repetition_penalty": 1.05, "seed": 0,
           "max_cache_tokens": args.max_cache_tokens, "min_pixels": args.min_pixels, "max_pixels": args.max_pixels,
           "eager": args.eager, "progress": False}
    minutes = args.minutes
    if mode == "full":
        # same pixel budget per frame as the streaming run, nothing ever evicted
        window = 10**7
        cfg.update(window_size=window, text_sink=10**9, text_sliding_window=10**9, max_cache_tokens=10**13,
                   max_pixels=_streaming_cap(args), total_pixels=_streaming_cap(args) * math.ceil(window * args.fps))
        minutes = min(minutes, args.full_minutes)
    if mode == "anchor":
        minutes = min(minutes, args.anchor_minutes)
    if mode in VARIANTS and args.variant_minutes:
        minutes = min(minutes, args.variant_minutes)
    plan = None if mode in ("streaming", "stepwise") else Plan(fast=False)
    if mode == "per_layer":
        plan = Plan(fast=True, cuda_graph=device.type == "cuda",
                    preprocess_device=str(device) if device.type == "cuda" else None)
    engine = (AnchorEngine if mode == "anchor" else StreamingEngine)(model, processor, cfg, plan=plan)
    if args.video:
        source = VideoFrameSource(args.video, args.fps, end=minutes * 60)
    else:
        source = SyntheticFrameSource(minutes * 60, fps=args.fps, height=args.height, width=args.width, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    engine.start()
    print(f"[{size}] {mode}: {engine.plan.describe()}", flush=True)
    started = engine.timings.snapshot()  # the split counts stream seconds, not start's prefill and compilation
    rows, oom, frames = [], False, 0
    wall0 = time.perf_counter()
    segments = engine.stream(source, lookahead=mode != "stepwise")
    while True:
        try:
            seg = next(segments, None)
        except torch.OutOfMemoryError:
            oom = True
            break
        if seg is None:
            break
        frames += seg["frames"]
        wall = time.perf_counter() - wall0
        rows.append({"t": seg["end"], "wall": wall, "latency": seg["latency"], "tokens": seg["tokens"],
                     "decode": seg["timings"]["decode"], "generated": args.tokens,
                     "mem": memory_mb(device), "cache": seg["cache_tokens"], "position": seg["next_position"]})
        if args.wall_cap_s and wall > args.wall_cap_s:
            break
    wall = time.perf_counter() - wall0
    stats = summarize(mode, size, rows, engine, wall, frames, oom, device, started)
    del engine
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return stats


def check_graph(size, model, processor, args, device, seconds: int) -> dict:
    """Greedy decoding, the engine's own plan (CUDA graph, compiled) vs the reference path, on the same frames: max
    |Δlogit| over the first decoded tokens and how many
    seconds produce identical tokens (bf16 kernels differ between the two paths, so greedy paths may part later)."""

    runs = {}
    for mode in ("dynamic", "auto"):
        cfg = {"fps": args.fps, "window_size": args.window_size, "text_sink": args.text_sink,
               "text_sliding_window": args.text_sliding_window, "max_new_tokens": args.tokens,
               "min_new_tokens": args.tokens, "temperature": 0.0, "repetition_penalty": 1.0,  # greedy = argmax
               "max_cache_tokens": args.max_cache_tokens, "min_pixels": args.min_pixels,
               "max_pixels": args.max_pixels, "eager": args.eager, "progress": False}
        engine = TracingEngine(model, processor, cfg, plan=Plan(fast=False) if mode == "dynamic" else None)
        engine.start()
        source = SyntheticFrameSource(seconds, fps=args.fps, height=args.height, width=args.width, seed=1)
        runs[mode] = (engine, [seg["text"] for seg in engine.stream(source)])
    (dyn, dyn_text), (graph, graph_text) = runs["dynamic"], runs["auto"]
    same = next((i for i, (a, b) in enumerate(zip(dyn_text, graph_text)) if a != b), len(dyn_text))
    first = dyn_text[0] == graph_text[0]
    pairs = list(zip(dyn.score_trace[:args.tokens], graph.score_trace[:args.tokens]))
    diff = max((a - b).abs().max().item() for a, b in pairs)
    scale = max(a.abs().max().item() for a, _ in pairs)
    # where the greedy paths part: once a token differs the contexts differ, so only the steps before it compare
    # the two decoders; a parting at a near-tie (top-2 margin below that difference) is bf16 rounding, not a bug
    parted = next((i for i, (a, b) in enumerate(pairs) if int(a.argmax()) != int(b.argmax())), None)
    before = pairs[:parted] if parted is not None else pairs
    top2 = dyn.score_trace[parted].float().topk(2).values if parted is not None else None
    out = {"size": size, "seconds": seconds, "identical_seconds": same, "first_second_same": first,
           "max_logit_diff_first_second": diff, "logit_scale": scale,
           "parted_at_token": parted,
           "max_logit_diff_before_parting": max(((a - b).abs().max().item() for a, b in before), default=0.0),
           "top2_margin_at_parting": None if top2 is None else float(top2[0] - top2[1]),
           "graph_used": graph.slots is not None and graph.slots.graph is not None,
           "slot_capacity": graph.slots.capacity if graph.slots is not None else None}
    print(f"[{size}] graph check: {out}", flush=True)
    if not first and diff > 0.25 * scale:
        raise SystemExit(f"[{size}] graph check failed: the graph run's first second differs from the eager "
                         f"run's (max |Δlogit| {diff:.3g} at logits up to {scale:.3g})")
    return out


def _streaming_cap(args) -> int:
    from streaming_vlm.inference.config import StreamingConfig
    from streaming_vlm.inference.engine import vision_budget

    return vision_budget(StreamingConfig(fps=args.fps, window_size=args.window_size, min_pixels=args.min_pixels,
                                         max_pixels=args.max_pixels)).max_pixels


def summarize(mode, size, rows, engine, wall, frames, oom, device, started=None) -> dict:
    n = len(rows)
    t = engine.timings.diff(engine.timings.snapshot(), started or {})
    lat = np.array([r["latency"] for r in rows]) if rows else np.zeros(1)
    steady = lat[min(10, n // 2):] if n > 2 else lat
    decode_ms = [1000 * r["decode"] / r["generated"] for r in rows]
    last_min = decode_ms[-60:] if decode_ms else [float("nan")]
    first_min = decode_ms[5:65] if len(decode_ms) > 70 else decode_ms
    mem = [r["mem"] for r in rows]
    warm = max(60, n // 10)
    slope = float("nan")
    if n - warm >= 30:
        x = np.array([r["t"] for r in rows[warm:]]) / 60
        slope = float(np.polyfit(x, np.array(mem[warm:]), 1)[0])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else max(mem or [float("nan")])
    total = torch.cuda.get_device_properties(device).total_memory / 2**20 if device.type == "cuda" else float("nan")
    per_s = {k: 1000 * v / max(n, 1) for k, v in t.items()}
    return {
        "mode": mode, "size": size, "stream_s": float(rows[-1]["t"] - rows[0]["t"] + 1) if rows else 0.0,
        "wall_s": wall, "oom": oom, "fps_processed": frames / wall if wall else 0.0,
        "rtf": wall / n if n else float("nan"),
        "latency_p50_ms": float(np.percentile(steady, 50) * 1000), "latency_p99_ms": float(np.percentile(steady, 99) * 1000),
        "decode_ms_per_token": 1000 * t["decode"] / max(engine.tokens_generated, 1),
        "decode_ms_per_token_first_min": float(np.mean(first_min)) if first_min else float("nan"),
        "decode_ms_per_token_last_min": float(np.mean(last_min)),
        "split_ms_per_s": {k: per_s.get(k, 0.0) for k in ("vision", "prefill", "decode", "eviction", "preprocess")},
        "mem_start_mb": mem[0] if mem else float("nan"), "mem_end_mb": mem[-1] if mem else float("nan"),
        "mem_peak_mb": peak, "mem_slope_mb_per_min": slope, "device_mem_mb": total,
        **runs_out([r["t"] for r in rows], mem, total),
        "cache_tokens_end": rows[-1]["cache"] if rows else 0, "position_end": rows[-1]["position"] if rows else 0,
        "series": {"t": [r["t"] for r in rows], "mem": mem, "decode_ms": decode_ms},
    }


def runs_out(t: list[float], mem: list[float], total_mb: float) -> dict:
    """Memory growth over the second half of a run (MB per stream minute) and the stream minute at which, growing
    so, allocations would reach the device's memory: a projection for runs stopped before they run out."""
    n = len(t)
    if n < 10:
        return {"growth_mb_per_min": float("nan"), "runs_out_min": float("nan")}
    x, y = np.array(t[n // 2:]) / 60, np.array(mem[n // 2:])
    growth = float(np.polyfit(x, y, 1)[0])
    end = float(x[-1])
    out = end + float(total_mb - y[-1]) / growth if growth > 1.0 and math.isfinite(total_mb) else float("nan")
    return {"growth_mb_per_min": growth, "runs_out_min": out}


# ---- reporting ---------------------------------------------------------------------------------------------
def table(results: list[dict]) -> str:
    head = ("| size | mode | stream | wall s | FPS | RTF | p50 ms | p99 ms | decode ms/tok (all / last min) | "
            "vision / prefill / decode / evict ms per s | mem start → end (peak) MB | slope MB/min | cache tok | "
            "OOM |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        s = r["split_ms_per_s"]
        lines.append(
            f"| {r['size']} | {r['mode']} | {r['stream_s'] / 60:.1f} min | {r['wall_s']:.0f} | "
            f"{r['fps_processed']:.1f} | {r['rtf']:.3f} | {r['latency_p50_ms']:.0f} | {r['latency_p99_ms']:.0f} | "
            f"{r['decode_ms_per_token']:.1f} / {r['decode_ms_per_token_last_min']:.1f} | "
            f"{s['vision']:.0f} / {s['prefill']:.0f} / {s['decode']:.0f} / {s['eviction']:.1f} | "
            f"{r['mem_start_mb']:.0f} → {r['mem_end_mb']:.0f} ({r['mem_peak_mb']:.0f}) | "
            f"{r['mem_slope_mb_per_min']:.2f} | {r['cache_tokens_end']} | {'yes' if r['oom'] else 'no'} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path, device: torch.device) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_dec) = plt.subplots(1, 2, figsize=(13, 4.5))
    for r in results:
        t = np.array(r["series"]["t"]) / 60
        label = f"{r['size']} {r['mode']}"
        ax_mem.plot(t, r["series"]["mem"], label=label)
        ax_dec.plot(t, r["series"]["decode_ms"], label=label, linewidth=0.8)
    ax_mem.set_xlabel("stream time (min)")
    ax_mem.set_ylabel("GPU memory allocated (MB)" if device.type == "cuda" else "process RSS (MB)")
    ax_dec.set_xlabel("stream time (min)")
    ax_dec.set_ylabel("decode ms / token")
    for ax in (ax_mem, ax_dec):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def record(path: Path, results: list[dict], args, device: torch.device, png: Path, checks=()) -> None:
    import transformers

    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = [f"\n## stream_latency — {device_name(device)} — {stamp}\n",
            f"`python bench/stream_latency.py {' '.join(sys.argv[1:])}`  ",
            f"torch {torch.__version__}, transformers {transformers.__version__}, attn {args.attn}, "
            f"dtype {args.dtype}, {args.fps:g} fps, window {args.window_size} s, text {args.text_sink}+"
            f"{args.text_sliding_window}, {args.tokens} tokens/s forced, frames {args.height}×{args.width}"
            f"{' (' + args.video + ')' if args.video else ' random'}.  ",
            f"Plot: `{png}`\n", table(results), ""]
    for r in results:
        # the full cache is the one that grows without bound; a bounded mode's growth in a short run is warm-up
        if r["mode"] == "full" and not r["oom"] and math.isfinite(r.get("runs_out_min", float("nan"))):
            text.append(f"{r['size']} {r['mode']}: memory grows {r['growth_mb_per_min']:.0f} MB per stream minute "
                        f"(second half of its run); at that rate it fills the device's "
                        f"{r['device_mem_mb'] / 1024:.0f} GiB at about {r['runs_out_min']:.0f} min of stream "
                        f"(projected, not run).\n")
    for c in checks:
        text.append(f"Graph check ({c['size']}, greedy, {c['seconds']} s): CUDA graph used {c['graph_used']}, max "
                    f"|Δlogit| over the first second's tokens {c['max_logit_diff_first_second']:.3g} (logits up to "
                    f"{c['logit_scale']:.3g}), identical text for the first {c['identical_seconds']} seconds"
                    + ("" if c["parted_at_token"] is None else
                       f"; the greedy paths part at token {c['parted_at_token']} (top-2 margin "
                       f"{c['top2_margin_at_parting']:.3g}), max |Δlogit| before it "
                       f"{c['max_logit_diff_before_parting']:.3g}") + ".\n")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(text) + "\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2b,4b", help="comma list of 2b, 4b (tiny in --smoke)")
    p.add_argument("--minutes", type=float, default=60.0, help="stream minutes for the streaming mode")
    p.add_argument("--full_minutes", type=float, default=10.0, help="cap for the full-cache run (or OOM first)")
    p.add_argument("--anchor_minutes", type=float, default=5.0, help="cap for the anchor-rotation run")
    p.add_argument("--variant_minutes", type=float, default=0.0,
                   help=f"cap for the engine variants ({', '.join(VARIANTS)}); 0 = --minutes")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--wall_cap_s", type=float, default=0.0, help="stop any run after this many wall seconds")
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--window_size", type=int, default=16)
    p.add_argument("--text_sink", type=int, default=512)
    p.add_argument("--text_sliding_window", type=int, default=512)
    p.add_argument("--max_cache_tokens", type=int, default=65536)
    p.add_argument("--tokens", type=int, default=20, help="new tokens forced per second")
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--min_pixels", type=int, default=None)
    p.add_argument("--max_pixels", type=int, default=None)
    p.add_argument("--video", default=None, help="stream this file instead of random frames")
    p.add_argument("--eager", action="store_true", help="the engine's debugging plan: no compile, no CUDA graph")
    p.add_argument("--cli", action="store_true",
                   help="run the CLI itself (a subprocess, the seed's flags) on --video with --model_path")
    p.add_argument("--model_path", default=None, help="--cli: the checkpoint")
    p.add_argument("--label", default=None, help="--cli: the row's name")
    p.add_argument("--cli_timeout", type=float, default=600, help="--cli: kill the CLI after this many seconds")
    p.add_argument("--cli_extra", default="", help="--cli: more CLI flags (e.g. --end 60 for a dry run)")
    p.add_argument("--attn", default=None, help="sdpa | flash_attention_2 | eager (default: flash-attn if installed)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default=None)
    p.add_argument("--out_dir", default="outputs/bench")
    p.add_argument("--record", default=None, help="append results to this markdown file (default BENCHMARKS.md; "
                                                 "not in --smoke)")
    p.add_argument("--check_seconds", type=int, default=6, help="graph-vs-eager greedy check first (0 = skip)")
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU, 40 s of small frames")
    args = p.parse_args(argv)
    if args.cli:
        return args
    if args.smoke:
        args.sizes, args.device, args.dtype = "tiny", args.device or "cpu", "float32"
        args.minutes = min(args.minutes, 40 / 60)
        args.full_minutes, args.anchor_minutes = min(args.full_minutes, 0.5), min(args.anchor_minutes, 0.5)
        args.height, args.width, args.window_size = 96, 160, min(args.window_size, 8)
        args.text_sink, args.text_sliding_window, args.tokens = 32, 64, min(args.tokens, 5)
    elif args.record is None:
        args.record = "BENCHMARKS.md"
    if args.attn is None:
        import importlib.util

        args.attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    return args


# ---- the CLI as users run it ----------------------------------------------------------------------------------
SEED_FLAGS = ("--fps", "2", "--attn_implementation", "auto", "--window_size", "16", "--text_sliding_window", "512")
SUMMARY = re.compile(r"timing: (\d+) stream s in ([\d.]+) s wall \(rtf ([\d.]+), ([\d.]+) frames/s, "
                     r"decode ([\d.]+) ms/token\); read ([\d.]+)s \(([\d.]+) ms/s\)")


def first_cue_time(paths: list[Path]) -> bool:
    for path in paths:
        try:
            if "-->" in path.read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:
            continue
    return False


def run_cli(model_path: str, video: str, out_dir: Path, label: str, extra: list[str] = (),
            timeout: float = 600) -> dict:
    """`python -m streaming_vlm.inference.inference` with the seed's flags on `video`, as a fresh process: the
    time from process start to the first cue in the output (or its `.partial`), and the CLI's own summary line
    (stream FPS processed, decode ms/token, read ms a stream second). Its stderr goes to `<label>.log`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")
    vtt, log = out_dir / f"{slug}.vtt", out_dir / f"{slug}.log"
    for stale in (vtt, Path(str(vtt) + ".partial")):
        stale.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "streaming_vlm.inference.inference", "--model_path", model_path,
           "--video_path", video, "--output_path", str(vtt), *SEED_FLAGS, *extra]
    t0 = time.perf_counter()
    first = None
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                cwd=Path(__file__).resolve().parents[1])
        while proc.poll() is None:
            if first is None and first_cue_time([vtt, Path(str(vtt) + ".partial")]):
                first = time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                break
            time.sleep(0.05)
        proc.wait()
    wall = time.perf_counter() - t0
    if first is None and first_cue_time([vtt]):
        first = wall  # written only at the end
    text = log.read_text(encoding="utf-8", errors="replace")
    match = SUMMARY.search(text)
    row = {"label": label, "rc": proc.returncode, "startup_to_first_cue_s": first, "wall_s": wall,
           "cmd": " ".join(cmd), "log": str(log), "plan": next((ln for ln in text.splitlines()
                                                                 if ln.startswith("engine:")), None)}
    if match:
        stream_s, stream_wall, rtf, fps, decode, read_s, read_ms = match.groups()
        row.update(stream_s=float(stream_s), stream_wall_s=float(stream_wall), rtf=float(rtf),
                   fps_processed=float(fps), decode_ms_per_token=float(decode), read_ms_per_stream_s=float(read_ms))
    elif proc.returncode:
        row["error"] = text.strip().splitlines()[-1] if text.strip() else f"exit {proc.returncode}"
    return row


def cli_table(rows: list[dict]) -> str:
    lines = ["| run | FPS processed | decode ms/token | read ms per stream-s | start-up to first cue s | wall s | rc |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        def f(key, fmt):
            return format(r[key], fmt) if r.get(key) is not None else "—"
        lines.append(f"| {r['label']} | {f('fps_processed', '.1f')} | {f('decode_ms_per_token', '.2f')} | "
                     f"{f('read_ms_per_stream_s', '.0f')} | {f('startup_to_first_cue_s', '.1f')} | "
                     f"{f('wall_s', '.0f')} | {r['rc']} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.cli:
        if not (args.model_path and args.video):
            raise SystemExit("--cli needs --model_path and --video")
        row = run_cli(args.model_path, args.video, Path(args.out_dir), args.label or Path(args.video).stem,
                      args.cli_extra.split(), args.cli_timeout)
        print(cli_table([row]))
        print("json: " + json.dumps(row), flush=True)
        return [row]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    modes = [m for m in args.modes.split(",") if m]
    results, checks = [], []
    for size in [s for s in args.sizes.split(",") if s]:
        t0 = time.perf_counter()
        model, processor = build_model(size, device, dtype, args.attn)
        print(f"[{size}] built on {device} in {time.perf_counter() - t0:.1f} s "
              f"({sum(p.numel() for p in model.parameters()) / 1e9:.3f} B params)", flush=True)
        if args.check_seconds:
            checks.append(check_graph(size, model, processor, args, device, args.check_seconds))
        for mode in modes:
            r = run_mode(mode, size, model, processor, args, device)
            results.append(r)
            print(f"[{size}] {mode}: {r['stream_s']:.0f} stream s in {r['wall_s']:.1f} s, RTF {r['rtf']:.3f}, "
                  f"decode {r['decode_ms_per_token']:.1f} ms/token, mem {r['mem_start_mb']:.0f} → "
                  f"{r['mem_end_mb']:.0f} MB{' (OOM)' if r['oom'] else ''}", flush=True)
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    png = out_dir / f"stream_latency-{stamp}.png"
    plot(results, png, device)
    (out_dir / f"stream_latency-{stamp}.json").write_text(json.dumps(
        {"device": device_name(device), "args": vars(args), "results": results, "graph_checks": checks}, indent=1))
    print(table(results))
    print(f"plot: {png}")
    if args.record:
        record(Path(args.record), results, args, device, png, checks)
        print(f"appended to {args.record}")
    return results


if __name__ == "__main__":
    main()
