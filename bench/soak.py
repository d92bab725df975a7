"""Soak test: hours of stream time through the engine, to show memory stays flat and positions stay bounded.

    nice -n 19 python bench/soak.py --hours 10                      # the tiny model on CPU (random frames)
    python bench/soak.py --size 2b --hours 3 --device cuda          # the 2B on a GPU (random-init, 720p frames)
    bash bench/device_job.sh start soak python3 bench/soak.py --size 2b --hours 3 --device cuda \\
        --out_dir /tmp/soak/work --record /tmp/soak/work/BENCHMARKS.md    # longer than one device call: detached
    bash bench/device_job.sh poll soak 560 ../work                  # ... repeated until it has ended

The model is built from `streaming_vlm.model.tiny.build_config(size)` with random weights (as
`bench/stream_latency.py` does) and fed `SyntheticFrameSource` frames through `StreamingEngine.stream`, the loop
the CLI runs. Every second decodes exactly `--tokens` tokens (<|im_end|> suppressed until then), so the text
window fills and evicts at a steady rate.

Every `--every` stream seconds one sample is appended (and flushed) to `soak-<stamp>.jsonl`: stream time, wall
time, process RSS, device memory (CUDA), cached tokens, the largest position in the cache, decode ms/token over
the interval, and how many seconds of the interval produced a segment with at least one token. Ctrl-C / SIGTERM
or `--wall_cap_s` end the run early; the samples so far are still summarised. At the end: a PNG of the series, a
table (one row per `--table_every` stream minutes) and the checks:
- memory flat after warm-up: slope of RSS (CPU) or allocated device memory (CUDA) over the samples after
  `--warmup_min`, in MB per stream minute, below `--max_slope_mb_per_min` (growth; RSS also falls when the OS
  reclaims file-backed pages of a process under memory pressure);
- positions bounded: the largest position in the second half of the run is no larger than in the first half's
  last sample plus one second's tokens;
- output every second: every stream second produced a segment with tokens;
- decode steady (with at least 20 minutes of stream): mean decode ms/token of the last 10 minutes within
  `--max_decode_drift` of the first 10 (after warm-up).
`--record FILE` appends the command, device, date, table and checks to FILE (BENCHMARKS.md). `--summarize JSONL`
redoes the table, plot and checks from a run's samples (one killed before its end, say) without streaming.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_latency import SyntheticFrameSource, build_model, device_name, memory_mb  # noqa: E402

from streaming_vlm.inference.engine import StreamingEngine  # noqa: E402



class Stop:
    """Set by SIGINT/SIGTERM: the stream loop ends after the current second and the run is summarised."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.request)

    def request(self, *_):
        self.requested = True


def soak(args, out_jsonl: Path) -> tuple[list[dict], str]:
    device = torch.device(args.device)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    model, processor = build_model(args.size, device, dtype, "sdpa")
    cfg = {"fps": args.fps, "window_size": args.window_size, "text_sink": args.text_sink,
           "text_sliding_window": args.text_sliding_window, "max_new_tokens": args.tokens,
           "min_new_tokens": args.tokens, "seed": 0, "device": str(device)}
    engine = StreamingEngine(model, processor, cfg)
    engine.start()
    seconds = int(round(args.hours * 3600))
    source = SyntheticFrameSource(seconds, fps=args.fps, height=args.height, width=args.width, seed=0)
    stop = Stop()
    samples: list[dict] = []
    ended = "completed"
    wall0 = time.perf_counter()
    last = {"decode": engine.timings.snapshot().get("decode", 0.0), "tokens": 0, "seconds": 0, "with_tokens": 0}
    interval = {"seconds": 0, "with_tokens": 0, "expected_start": 0.0, "gaps": 0}
    with open(out_jsonl, "w", encoding="utf-8") as fh:
        for segment in engine.stream(source):
            interval["seconds"] += 1
            interval["with_tokens"] += segment["tokens"] > 0
            interval["gaps"] += segment["start"] != interval["expected_start"]
            interval["expected_start"] = segment["end"]
            t = segment["end"]
            if t % args.every == 0 or t >= seconds or stop.requested:
                snap = engine.timings.snapshot()
                tokens = engine.tokens_generated
                row = {"t": t, "wall": time.perf_counter() - wall0, "rss_mb": memory_mb(torch.device("cpu")),  # the process's RSS
                       "device_mb": (torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda"
                                     else None),
                       "cache_tokens": engine.cache.num_tokens, "max_position": engine.cache.next_position - 1,
                       "decode_ms_per_token": 1000 * (snap["decode"] - last["decode"])
                       / max(tokens - last["tokens"], 1),
                       "seconds": interval["seconds"], "seconds_with_tokens": interval["with_tokens"],
                       "gaps": interval["gaps"]}
                last = {"decode": snap["decode"], "tokens": tokens}
                interval.update(seconds=0, with_tokens=0, gaps=0)
                samples.append(row)
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                if args.progress:
                    print(f"[soak] {t / 3600:.2f} h stream in {row['wall'] / 60:.1f} min: rss {row['rss_mb']:.0f} MB,"
                          f" cache {row['cache_tokens']} tok, max pos {row['max_position']}, decode "
                          f"{row['decode_ms_per_token']:.2f} ms/tok", flush=True)
            if stop.requested:
                ended = "stopped by signal"
                break
            if args.wall_cap_s and time.perf_counter() - wall0 > args.wall_cap_s:
                ended = f"stopped at the wall cap ({args.wall_cap_s:.0f} s)"
                break
    return samples, ended


def memory_key(samples: list[dict]) -> str:
    return "device_mb" if samples and samples[0]["device_mb"] is not None else "rss_mb"


def checks(samples: list[dict], args) -> dict:
    """The soak's verdicts over the samples (see the module docstring)."""
    out: dict = {"stream_s": samples[-1]["t"] if samples else 0, "wall_s": samples[-1]["wall"] if samples else 0.0}
    if len(samples) < 4:
        out["note"] = "too few samples for the checks"
        return out
    key = memory_key(samples)
    t_min = np.array([s["t"] for s in samples]) / 60
    mem = np.array([s[key] for s in samples])
    warm = t_min >= args.warmup_min
    if warm.sum() >= 3:
        slope = float(np.polyfit(t_min[warm], mem[warm], 1)[0])
        out["memory"] = {"key": key, "after_warmup_start_mb": float(mem[warm][0]), "end_mb": float(mem[-1]),
                         "max_mb": float(mem[warm].max()), "slope_mb_per_min": slope,
                         "ok": slope < args.max_slope_mb_per_min}  # growth; a fall is pages the OS took back
    half = len(samples) // 2
    first_half_end = samples[half - 1]["max_position"]
    second_half_max = max(s["max_position"] for s in samples[half:])
    per_second = max(s["cache_tokens"] for s in samples)  # generous: one second never adds a whole cache
    out["positions"] = {"first_half_end": first_half_end, "second_half_max": second_half_max,
                        "max": max(s["max_position"] for s in samples),
                        "ok": second_half_max <= first_half_end + per_second}
    seconds = sum(s["seconds"] for s in samples)
    out["output_every_second"] = {"seconds": seconds, "with_tokens": sum(s["seconds_with_tokens"] for s in samples),
                                  "gaps": sum(s["gaps"] for s in samples),
                                  "ok": seconds == samples[-1]["t"]
                                  and all(s["seconds"] == s["seconds_with_tokens"] for s in samples)
                                  and not any(s["gaps"] for s in samples)}
    steady = [s for s in samples if s["t"] / 60 >= args.warmup_min]
    if steady and (steady[-1]["t"] - steady[0]["t"]) >= 20 * 60:
        first = [s["decode_ms_per_token"] for s in steady if s["t"] <= steady[0]["t"] + 600]
        final = [s["decode_ms_per_token"] for s in steady if s["t"] > steady[-1]["t"] - 600]
        a, b = float(np.mean(first)), float(np.mean(final))
        out["decode"] = {"first_10_min_ms": a, "last_10_min_ms": b, "drift": b / a - 1,
                         "ok": abs(b / a - 1) <= args.max_decode_drift}
    return out


def table(samples: list[dict], every_min: float) -> str:
    key = memory_key(samples)
    head = (f"| stream h | wall min | {'device MB' if key == 'device_mb' else 'RSS MB'} | cache tokens | "
            f"max position | decode ms/tok |")
    lines = [head, "|---:|---:|---:|---:|---:|---:|"]
    next_t = 0.0
    for i, s in enumerate(samples):
        if s["t"] >= next_t or i == len(samples) - 1:
            lines.append(f"| {s['t'] / 3600:.2f} | {s['wall'] / 60:.1f} | {s[key]:.0f} | {s['cache_tokens']} | "
                         f"{s['max_position']} | {s['decode_ms_per_token']:.2f} |")
            next_t = s["t"] + every_min * 60
    return "\n".join(lines)


def plot(samples: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = memory_key(samples)
    t = np.array([s["t"] for s in samples]) / 3600
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    series = ((key, "device memory allocated (MB)" if key == "device_mb" else "process RSS (MB)"),
              ("cache_tokens", "cached tokens"), ("max_position", "largest position in the cache"),
              ("decode_ms_per_token", "decode ms / token"))
    for ax, (name, label) in zip(axes, series):
        ax.plot(t, [s[name] for s in samples], linewidth=0.9)
        ax.set_xlabel("stream time (h)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict_lines(c: dict, args) -> list[str]:
    lines = []
    if "memory" in c:
        m = c["memory"]
        lines.append(f"- memory after {args.warmup_min:g} min of warm-up: {m['after_warmup_start_mb']:.0f} → "
                     f"{m['end_mb']:.0f} MB (max {m['max_mb']:.0f}), slope {m['slope_mb_per_min']:+.3f} MB per "
                     f"stream minute (limit {args.max_slope_mb_per_min:g}): {'ok' if m['ok'] else 'FAILED'}")
    if "positions" in c:
        p = c["positions"]
        lines.append(f"- positions bounded: largest {p['max']}; {p['first_half_end']} at the middle of the run, at "
                     f"most {p['second_half_max']} after it: {'ok' if p['ok'] else 'FAILED'}")
    if "output_every_second" in c:
        o = c["output_every_second"]
        lines.append(f"- output every second: {o['with_tokens']} of {o['seconds']} seconds produced tokens, "
                     f"{o['gaps']} gaps: {'ok' if o['ok'] else 'FAILED'}")
    if "decode" in c:
        d = c["decode"]
        lines.append(f"- decode: {d['first_10_min_ms']:.2f} ms/token in the first 10 min after warm-up, "
                     f"{d['last_10_min_ms']:.2f} in the last 10 ({d['drift']:+.1%}; limit "
                     f"±{args.max_decode_drift:.0%}): {'ok' if d['ok'] else 'FAILED'}")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="tiny", help="tiny | 2b | 4b (random-init weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--hours", type=float, default=10.0, help="stream hours")
    p.add_argument("--wall_cap_s", type=float, default=0.0, help="end the run after this many wall seconds")
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--window_size", type=int, default=None, help="vision window s (default: tiny 4, else 16)")
    p.add_argument("--text_sink", type=int, default=512)
    p.add_argument("--text_sliding_window", type=int, default=512)
    p.add_argument("--tokens", type=int, default=None, help="tokens forced per second (default: tiny 4, else 20)")
    p.add_argument("--height", type=int, default=None, help="frame height (default: tiny 64, else 720)")
    p.add_argument("--width", type=int, default=None, help="frame width (default: tiny 64, else 1280)")
    p.add_argument("--every", type=int, default=60, help="stream seconds between samples")
    p.add_argument("--table_every", type=float, default=60.0, help="stream minutes between table rows")
    p.add_argument("--warmup_min", type=float, default=10.0, help="stream minutes left out of the memory slope")
    p.add_argument("--max_slope_mb_per_min", type=float, default=1.0)
    p.add_argument("--max_decode_drift", type=float, default=0.05)
    p.add_argument("--out_dir", default="outputs/bench")
    p.add_argument("--record", default=None, help="append the results to this markdown file (BENCHMARKS.md)")
    p.add_argument("--quiet", dest="progress", action="store_false", help="no line per sample")
    p.add_argument("--summarize", default=None, metavar="JSONL", help="summarise this run's samples; no streaming")
    args = p.parse_args(argv)
    tiny = args.size == "tiny"
    for name, small, big in (("window_size", 4, 16), ("tokens", 4, 20), ("height", 64, 720), ("width", 64, 1280)):
        if getattr(args, name) is None:
            setattr(args, name, small if tiny else big)
    if args.hours <= 0 or args.every < 1:
        p.error("--hours must be > 0 and --every >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.summarize:
        jsonl = Path(args.summarize)
        samples = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
        ended = "summarised from its samples"
    else:
        jsonl = out_dir / f"soak-{args.size}-{stamp}.jsonl"
        samples, ended = soak(args, jsonl)
    c = checks(samples, args)
    device = torch.device(args.device)
    title = (f"soak: {args.size} on {device_name(device)}, {c['stream_s'] / 3600:.2f} h of stream "
             f"in {c['wall_s'] / 3600:.2f} h ({ended})")
    png = out_dir / f"soak-{args.size}-{stamp}.png"
    if samples:
        plot(samples, png, title)
    text = [title, "", f"`python bench/soak.py {' '.join(sys.argv[1:])}`  ",
            f"{args.fps:g} fps, {args.height}×{args.width} random frames, window {args.window_size} s, text "
            f"{args.text_sink}+{args.text_sliding_window}, {args.tokens} tokens a second forced, torch "
            f"{torch.__version__}. Samples: `{jsonl}`, plot: `{png}`", "",
            table(samples, args.table_every) if samples else "(no samples)", "", *verdict_lines(c, args)]
    print("\n".join(text))
    (out_dir / f"soak-{args.size}-{stamp}.json").write_text(json.dumps({"args": vars(args), "ended": ended,
                                                                       "checks": c}, indent=1))
    if args.record:
        when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        with open(args.record, "a", encoding="utf-8") as fh:
            fh.write(f"\n## soak — {device_name(device)} — {when}\n\n" + "\n".join(text[2:]) + "\n")
        print(f"appended to {args.record}")
    return c


if __name__ == "__main__":
    main()
