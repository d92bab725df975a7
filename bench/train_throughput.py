"""Stage-1 training throughput: our trainer vs the anchor recipe, on real 24 s synthetic chunks.

    python bench/train_throughput.py                  # GPU: random-init Qwen3-VL-2B, ZeRO-3, 1 GPU, 2B pixel budget
    python bench/train_throughput.py --variants ours,anchor --steps 8 --warmup 2 --workers 12
    python bench/train_throughput.py --smoke          # CPU check: tiny model, tiny frames, no DeepSpeed (~2 min)

Every variant is a real `train.py` run (`torchrun --nproc_per_node 1` on GPU, so ZeRO-3 has its process group),
in a fresh process, over the same windows in the same order. Figures come from the per-step records the trainer
writes (`train_losses.jsonl`: wall time, non-padding tokens, merged vision tokens, label tokens, peak memory), over
the steps after `--warmup`.

Variants (all stage-1: 24 s windows, 2 fps, 2B pixel budget, bf16, gradient checkpointing, vision tower frozen):
    anchor        HF Trainer recipe: batch 1, right padding, no packing, the model's own loss over full logits
                  (`trainer.loss_impl=hf`), ZeRO-3
    ours          the same under ZeRO-3 with our loss: the lm_head only on labelled positions
    ours_packed   ours + 2 windows packed per micro-batch row (no cross-sample attention), ZeRO-3
    ours_nozero   ours without DeepSpeed (fused torch AdamW, fp32 master weights, bf16 autocast): what one GPU
                  does without ZeRO-3's partition/gather tax

MFU = model FLOPs / step time / 790 TFLOP/s (the dense bf16 figure used for the project's goal). Model FLOPs per
step, the same for every variant (useful work, not what an implementation happens to execute):
    LLM      6 x (non-embedding decoder params) x tokens  +  6 x L x heads x head_dim x sum(seq_len^2) (causal)
             + 6 x hidden x vocab x label tokens (the lm_head is only needed where a label is)
    vision   2 x (tower params) x patches + mergers (forward only: the tower is frozen and needs no backward)
Gradient-checkpointing recomputation is not counted (hardware FLOPs would be ~4/3 of the LLM part higher).

Results print as a table and are appended, with device and date, to BENCHMARKS.md (GPU runs; `--append` for smoke).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_FLOPS = 790e12

VARIANTS = {
    "anchor": ("HF Trainer recipe: batch 1, padding, full-logits loss, ZeRO-3",
               ["deepspeed=zero3", "trainer.loss_impl=hf"]),
    "ours": ("selective-logits loss, batch 1, padding, ZeRO-3", ["deepspeed=zero3"]),
    "ours_packed": ("selective-logits loss, 2 windows packed per row, ZeRO-3",
                    ["deepspeed=zero3", "data.packing=true", "trainer.per_device_train_batch_size=2"]),
    "ours_nozero": ("selective-logits loss, batch 1, no DeepSpeed (fused AdamW)",
                    ["deepspeed=none", "trainer.optim=adamw_torch_fused"]),
}
SMOKE_VARIANTS = {
    "anchor": ("HF recipe: batch 1, padding, full-logits loss (CPU, no DeepSpeed)", ["trainer.loss_impl=hf"]),
    "ours": ("selective-logits loss, batch 1, padding (CPU, no DeepSpeed)", []),
    "ours_packed": ("selective-logits loss, 2 windows packed per row (CPU)",
                    ["data.packing=true", "trainer.per_device_train_batch_size=2"]),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- inputs -----------------------------------------------------------------------------------------------------
def ensure_model(path: Path, size: str) -> Path:
    if (path / "config.json").exists():
        return path
    print(f"building a random-init Qwen3-VL-{size.upper()} checkpoint in {path} ...", flush=True)
    dtype = "float32" if size == "tiny" else "bfloat16"
    subprocess.run([sys.executable, "-m", "streaming_vlm.model.tiny", "--out", str(path), "--size", size,
                    "--dtype", dtype], cwd=ROOT, check=True)
    return path


def ensure_data(path: Path, smoke: bool, games: int, duration: float, workers: int) -> Path:
    if (path / "train_with_seeks.jsonl").exists():
        return path
    sys.path.insert(0, str(ROOT))
    from data.synthetic import generate_dataset

    print(f"generating {games} synthetic games x {duration:g} s in {path} ...", flush=True)
    size = dict(size="tiny") if smoke else dict(width=1280, height=720)
    generate_dataset(path, train_games=games, eval_games=0, duration=duration, clips=0, seed=11,
                     workers=workers, **size)
    return path


# ---- FLOPs ------------------------------------------------------------------------------------------------------
def model_flops(cfg: dict, rec: dict, seq_sq: float) -> float:
    """Model FLOPs of one optimizer step (see the module docstring)."""
    t, v = cfg["text_config"], cfg["vision_config"]
    d, ff, L = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    h, kv = t["num_attention_heads"], t["num_key_value_heads"]
    hd = t.get("head_dim") or d // h
    vocab = t["vocab_size"]
    layer = d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * ff
    llm = 6 * L * layer * rec["tokens"] + 6 * L * h * hd * seq_sq + 6 * d * vocab * rec["label_tokens"]
    dv, ffv, depth = v["hidden_size"], v["intermediate_size"], v["depth"]
    m = v.get("spatial_merge_size", 2)
    patch_in = v.get("in_channels", 3) * v.get("temporal_patch_size", 2) * v.get("patch_size", 16) ** 2
    patches = rec["vision_tokens"] * m * m
    tower = depth * (4 * dv * dv + 2 * dv * ffv) + patch_in * dv
    n_mergers = 1 + len(v.get("deepstack_visual_indexes", []))
    merger = n_mergers * ((dv * m * m) ** 2 + dv * m * m * v.get("out_hidden_size", d))
    vision = 2 * tower * patches + 2 * merger * rec["vision_tokens"]
    return float(llm + vision)


# ---- one variant ------------------------------------------------------------------------------------------------
def run_variant(name: str, overrides: list[str], args, model: Path, data: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / name
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    steps = args.warmup + args.steps
    common = [f"model.name_or_path={model}", f"data.root={data}", "data.generate=null", f"output_dir={run_dir}",
              f"trainer.max_steps={steps}", "trainer.save_steps=1000000", "eval=none", "resume=never",
              "wandb.mode=disabled", f"trainer.global_batch_size={args.global_batch}",
              f"data.num_workers={args.workers}", "trainer.logging_steps=1"]
    if args.smoke:
        base = ["experiment=smoke_stage1", "data.window=24", "data.stride=12", "data.min_words=48",
                "data.text_sink=512", "data.text_sliding_window=512"]
        launcher = [sys.executable]
    else:
        base = ["experiment=stage1_2b", "~extra_data.live_whisperx", "model.build_if_missing=null"]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
                    "--master_port", str(_free_port())]
    cmd = launcher + [str(ROOT / "train.py"), *base, *common, *overrides, *args.extra]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    print(f"\n[{name}] {' '.join(cmd)}", flush=True)
    log = out / f"{name}.log"
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    recs = []
    if (run_dir / "train_losses.jsonl").exists():
        for line in (run_dir / "train_losses.jsonl").read_text().splitlines():
            try:
                recs.append(json.loads(line))
            except ValueError:
                pass
    if rc != 0 or len(recs) <= args.warmup:
        tail = [ln for ln in log.read_text().splitlines() if ln.strip()][-1:] if log.exists() else ["?"]
        return {"variant": name, "error": f"rc {rc}: {tail[0][:160]} (log: {log})"}
    cfg = json.loads((model / "config.json").read_text())
    measured = recs[args.warmup:]
    elapsed = measured[-1]["time"] - recs[args.warmup - 1]["time"] if args.warmup else None
    if elapsed is None:  # no warmup: time from the first record to the last, one step fewer
        measured, elapsed = recs[1:], recs[-1]["time"] - recs[0]["time"]
    n = len(measured)
    tokens = sum(r["tokens"] for r in measured)
    vision = sum(r["vision_tokens"] for r in measured)
    labels = sum(r["label_tokens"] for r in measured)
    # sum(seq_len^2) per step ~ tokens x mean sequence length (micro-batches of whole windows)
    seqs_per_step = args.global_batch
    flops = sum(model_flops(cfg, r, r["tokens"] * (r["tokens"] / max(seqs_per_step, 1))) for r in measured)
    step_times = [b["time"] - a["time"] for a, b in zip(recs[args.warmup - 1 if args.warmup else 0:], measured)]
    return {
        "variant": name, "steps": n, "step_s": elapsed / n, "step_s_median": statistics.median(step_times),
        "tokens_per_s": tokens / elapsed, "vision_tokens_per_s": vision / elapsed,
        "tokens_per_sample": tokens / (n * args.global_batch), "vision_per_sample": vision / (n * args.global_batch),
        "label_frac": labels / max(tokens, 1), "mfu": flops / elapsed / PEAK_FLOPS,
        "peak_mem_gb": max((r.get("max_mem_gb") or 0.0) for r in recs) or None,
        "final_loss": recs[-1]["loss"],
    }


# ---- report -----------------------------------------------------------------------------------------------------
def device_line() -> str:
    import torch
    import transformers

    parts = []
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        parts.append(f"{p.name} ({p.total_memory / 2**30:.0f} GiB)")
    else:
        parts.append(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs")
    try:
        import deepspeed

        ds = deepspeed.__version__
    except Exception:  # noqa: BLE001 - optional on CPU
        ds = "absent"
    parts.append(f"torch {torch.__version__}, transformers {transformers.__version__}, deepspeed {ds}")
    return "; ".join(parts)


def table(results: list[dict], descriptions: dict) -> str:
    anchor = next((r for r in results if r["variant"] == "anchor" and "error" not in r), None)
    rows = ["| variant | what | step (s) | tokens/s | vision tokens/s | MFU | peak mem (GB) | vs anchor |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        what = descriptions[r["variant"]][0]
        if "error" in r:
            rows.append(f"| {r['variant']} | {what} | failed: {r['error']} | | | | | |")
            continue
        speed = f"{r['tokens_per_s'] / anchor['tokens_per_s']:.2f}x" if anchor else "-"
        mem = f"{r['peak_mem_gb']:.1f}" if r.get("peak_mem_gb") else "-"
        rows.append(f"| {r['variant']} | {what} | {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | "
                    f"{r['vision_tokens_per_s']:,.0f} | {100 * r['mfu']:.1f}% | {mem} | {speed} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU check with the tiny model (no DeepSpeed)")
    ap.add_argument("--variants", default=None, help="comma list (default: all for the mode)")
    ap.add_argument("--steps", type=int, default=None, help="measured optimizer steps (default 6; smoke 2)")
    ap.add_argument("--warmup", type=int, default=None, help="steps not measured (default 2; smoke 1)")
    ap.add_argument("--global-batch", type=int, default=None, help="windows per optimizer step (default 4; smoke 2)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 12; smoke 0)")
    ap.add_argument("--model", default=None, help="checkpoint dir (default: build a random-init one in --cache)")
    ap.add_argument("--size", default="2b", help="2b | 4b for the random-init checkpoint (default 2b)")
    ap.add_argument("--data", default=None, help="synthetic data dir (default: generate in --cache)")
    ap.add_argument("--cache", default=str(ROOT / "outputs" / "bench_train"), help="work dir")
    ap.add_argument("--games", type=int, default=None, help="synthetic games to generate (default 3; smoke 2)")
    ap.add_argument("--append", action="store_true", help="append to BENCHMARKS.md (default on GPU only)")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("extra", nargs="*", help="extra train.py overrides for every variant")
    args = ap.parse_args(argv)
    s = args.smoke
    args.steps = args.steps if args.steps is not None else (2 if s else 6)
    args.warmup = args.warmup if args.warmup is not None else (1 if s else 2)
    args.global_batch = args.global_batch or (2 if s else 4)
    args.workers = args.workers if args.workers is not None else (0 if s else 12)
    descriptions = SMOKE_VARIANTS if s else VARIANTS
    names = args.variants.split(",") if args.variants else list(descriptions)
    unknown = [n for n in names if n not in descriptions]
    if unknown:
        print(f"error: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(descriptions)}",
              file=sys.stderr)
        return 2

    import torch

    if not s and not torch.cuda.is_available():
        print("error: no GPU here; use --smoke for the CPU check", file=sys.stderr)
        return 2
    cache = Path(args.cache) / ("smoke" if s else args.size)
    cache.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else ensure_model(cache / "model", "tiny" if s else args.size)
    duration = 72.0 if s else 180.0
    data = Path(args.data) if args.data else ensure_data(cache / "data", s, args.games or (2 if s else 3), duration,
                                                         workers=min(8, os.cpu_count() or 1))
    results = [run_variant(n, descriptions[n][1], args, model, data, cache / "runs") for n in names]
    ok = [r for r in results if "error" not in r]
    sample = ok[0] if ok else {}
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    header = (f"## Training throughput (`bench/train_throughput.py{' --smoke' if s else ''}`), {when}\n\n"
              f"Device: {device_line()}.\n"
              f"Model: {'tiny Qwen3-VL' if s else f'random-init Qwen3-VL-{args.size.upper()}'} ({model}). "
              f"Stage-1 windows of 24 s at 2 fps (stride 12 s), "
              f"{'tiny frames' if s else '1280x720 synthetic video at the 2B pixel budget'}: "
              f"~{sample.get('tokens_per_sample', 0):,.0f} tokens and ~{sample.get('vision_per_sample', 0):,.0f} "
              f"vision tokens per window, {100 * sample.get('label_frac', 0):.1f}% of tokens labelled. "
              f"Global batch {args.global_batch} windows per step on 1 {'CPU process' if s else 'GPU'}; "
              f"{args.warmup} warm-up + {args.steps} measured steps; "
              f"{'fp32, no gradient checkpointing (CPU smoke)' if s else 'bf16, gradient checkpointing'}, "
              f"vision frozen. "
              f"MFU = model FLOPs / step time / 790 TFLOP/s (see the script's docstring for the FLOP count).\n")
    text = header + "\n" + table(results, descriptions) + "\n"
    print("\n" + text)
    if (args.append or not s) and not args.no_append:
        bench_md = ROOT / "BENCHMARKS.md"
        prev = bench_md.read_text() if bench_md.exists() else "# Benchmarks\n"
        bench_md.write_text(prev.rstrip("\n") + "\n\n" + text)
        print(f"appended to {bench_md}")
    (cache / "results.json").write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
