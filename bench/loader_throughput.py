"""Throughput of the full streaming-SFT loader: decord decoding, Qwen3-VL resizing, templating, collation.

    python bench/loader_throughput.py [--games 3 --duration 36 --width 1280 --height 720 --stride 4
                                       --workers 1 2 4 --batch-size 2 --epochs 2 --no-append]

Generates a few commentated games (PyAV, H.264) at a resolution above the 2B recipe's per-frame cap, so the pixel
budget binds (min 100*32^2, max 768*32^2, total 24576*32^2 per sample: a 24-s window at 2 fps = 48 frames is cut to
<= 524288 px per frame, ~24K vision tokens), builds the dataset with the 2B recipe (W=24, fps 2) and the tiny
checkpoint's processor (the same video processor settings as Qwen3-VL-2B), and measures samples/s and vision
tokens/s through a DataLoader for each worker count, packing off and on. It also reports the in-process time split
(decode vs. processor+template) and the padding packing removes. Results are printed and appended to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
BUDGET_2B = dict(min_pixels=100 * 32 * 32, max_pixels=768 * 32 * 32, total_pixels=24576 * 32 * 32)


def make_data(d: Path, games: int, duration: float, width: int, height: int) -> Path:
    from tests.fixture_video import conversation, timed_words, write_jsonl_with_seeks, write_video

    rows = []
    for g in range(games):
        name = f"game_{g:03d}.mp4"
        if not (d / name).exists():
            write_video(d / name, duration, fps=24, width=width, height=height,
                        options={"preset": "ultrafast", "crf": "28"})
        rows.append(conversation(name, 0.0, duration, timed_words(0, duration, 0.35, prefix=f"g{g}w")))
    return write_jsonl_with_seeks(d / "bench_with_seeks.jsonl", rows)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_loader(ds, collate, workers: int, batch_size: int, epochs: int) -> dict:
    import torch

    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                                         shuffle=False, persistent_workers=False, prefetch_factor=2)
    n = vis = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            n += batch["n_good"]
            vis += batch["num_vision_tokens"]
    dt_s = time.perf_counter() - t0
    return dict(samples=n, seconds=dt_s, samples_per_s=n / dt_s, vision_tokens_per_s=vis / dt_s)


def padding_fraction(lengths: list[int], batch_size: int) -> float:
    """Fraction of the (B, L) tokens of unpacked micro-batches that are padding (packing in one row: none)."""
    total = real = 0
    for i in range(0, len(lengths), batch_size):
        group = lengths[i:i + batch_size]
        total += max(group) * len(group)
        real += sum(group)
    return 1 - real / total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--games", type=int, default=3)
    ap.add_argument("--duration", type=float, default=36.0)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--window", type=int, default=24)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--data-dir", default=None, help="reuse generated games here (default: a temp dir)")
    ap.add_argument("--processor", default=None, help="processor/checkpoint dir (default: build the tiny one)")
    ap.add_argument("--packing", choices=("both", "off", "on"), default="both", help="collator packing to measure")
    ap.add_argument("--skip-padding", action="store_true",
                    help="skip the serial in-process pass over every window that measures padding (slow)")
    ap.add_argument("--cpu-note", default="shared with other jobs", help="what the device line says about the CPUs")
    ap.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    args = ap.parse_args(argv)

    from transformers import AutoProcessor

    from streaming_vlm.data.collator import StreamCollator
    from streaming_vlm.data.dataset import build_train_dataset, count_vision_tokens

    work = Path(args.data_dir or tempfile.mkdtemp(prefix="loader_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    data = make_data(work, args.games, args.duration, args.width, args.height)
    print(f"data: {args.games} games x {args.duration:g}s at {args.width}x{args.height} in {work} "
          f"({time.perf_counter() - t:.1f}s)", flush=True)
    proc_dir = args.processor
    if proc_dir is None:
        proc_dir = work / "tiny-ckpt"
        if not (proc_dir / "config.json").exists():
            from streaming_vlm.model.tiny import build_checkpoint

            build_checkpoint(proc_dir)
    processor = AutoProcessor.from_pretrained(proc_dir)
    cfg = dict(train_file=str(data), window=args.window, stride=args.stride, fps=2.0, **BUDGET_2B)
    ds = build_train_dataset(cfg, processor)
    print(f"dataset: {len(ds)} windows of {args.window}s (stride {args.stride}s)", flush=True)

    # in-process split: decode vs. processor + template, and per-sample sizes
    decode_s = encode_s = 0.0
    lens, vis = [], []
    k = min(4, len(ds))
    for i in range(k):
        from streaming_vlm.data.chunker import previous_text, second_texts
        from streaming_vlm.data.video import VideoReader

        c = ds.chunks[i]
        rec = ds.record(c.record)
        t = time.perf_counter()
        seconds = VideoReader(rec.video, fps=ds.fps).seconds(c.start, c.end, texts=second_texts(rec, c.start, c.end))
        decode_s += time.perf_counter() - t
        t = time.perf_counter()
        prev = previous_text(rec, c.start, ds.template.tokenizer, ds.text_sink, ds.text_sliding_window)
        enc = ds.template.encode_window(prev, seconds)
        encode_s += time.perf_counter() - t
        lens.append(len(enc))
        vis.append(count_vision_tokens({"video_grid_thw": enc.video_grid_thw}))
    frame_hw = tuple(int(x) * 16 for x in enc.video_grid_thw[0, 1:])
    print(f"per sample (in-process, {k} samples): decode {decode_s / k * 1e3:.0f} ms, resize+template "
          f"{encode_s / k * 1e3:.0f} ms; {lens[0]} tokens, {vis[0]} vision tokens, frames resized to "
          f"{frame_hw[1]}x{frame_hw[0]}", flush=True)
    pad_frac = None if args.skip_padding else padding_fraction([len(ds[i]["input_ids"]) for i in range(len(ds))],
                                                               args.batch_size)

    rows = []
    for packing in {"both": (False, True), "off": (False,), "on": (True,)}[args.packing]:
        collate = StreamCollator(processor, packing=packing)
        for w in args.workers:
            r = run_loader(ds, collate, w, args.batch_size, args.epochs)
            rows.append((w, packing, r))
            print(f"workers {w} packing {'on ' if packing else 'off'}: {r['samples_per_s']:.2f} samples/s, "
                  f"{r['vision_tokens_per_s']:.0f} vision tokens/s ({r['samples']} samples, {r['seconds']:.1f}s)",
                  flush=True)

    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    device = f"{cpu_name()}, {os.cpu_count()} logical CPUs ({args.cpu_note})"
    lines = [
        f"\n## Data loader throughput (`bench/loader_throughput.py`), {when}\n",
        f"Device: {device}; torch {__import__('torch').__version__}, transformers "
        f"{__import__('transformers').__version__}, decord. {args.games} games x {args.duration:g} s, "
        f"{args.width}x{args.height} H.264 24 fps; windows W={args.window} s / S={args.stride} s at 2 fps "
        f"(48 frames); 2B pixel budget (min 100·32², max 768·32², total 24576·32²) -> frames resized to "
        f"{frame_hw[1]}x{frame_hw[0]}, {vis[0]} vision tokens and {lens[0]} tokens per sample; micro-batch "
        f"{args.batch_size}.\n",
        f"In-process split per sample: decode {decode_s / k * 1e3:.0f} ms, resize + template "
        f"{encode_s / k * 1e3:.0f} ms. "
        + ("Padding not measured (--skip-padding).\n" if pad_frac is None else
           f"Padding in unpacked micro-batches: {100 * pad_frac:.1f}% of tokens "
           f"(what packing saves on the GPU; the loader cost of packing is a concatenation).\n"),
        "| workers | packing | samples/s | vision tokens/s |",
        "|---:|:---:|---:|---:|",
    ]
    for w, packing, r in rows:
        lines.append(f"| {w} | {'on' if packing else 'off'} | {r['samples_per_s']:.2f} | "
                     f"{r['vision_tokens_per_s']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_append:
        bench = ROOT / "BENCHMARKS.md"
        if not bench.exists():
            bench.write_text("# Benchmarks\n\nMeasured numbers, newest sections appended at the end. Each section "
                             "says which script, device and date produced it.\n")
        with open(bench, "a") as f:
            f.write(text)
        print(f"appended to {bench}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
