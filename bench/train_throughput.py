"""Stage-1 training throughput: the anchor recipe, each speed lever alone, and `train.py`'s own defaults.

    python bench/train_throughput.py                       # GPU: 2B then 4B, random-init, one GPU (see train_gpu_job.sh)
    python bench/train_throughput.py --sizes 2b --variants anchor,defaults --steps 3
    python bench/train_throughput.py --tiny                # CPU: every piece once, tiny model and frames (~minutes)

Every row is a real `train.py` run, in a fresh process, over the same windows in the same order (random-init
checkpoint, synthetic 1280x720 games, stage-1 24 s windows at 2 fps and the 2B pixel budget). Figures come from the
per-step records the trainer writes (`train_losses.jsonl`: wall time, non-padding tokens, merged vision tokens,
label tokens, peak memory) over the measured steps; a run is stopped once they are written (no final save).

Rows (every one `experiment=stage1_<size>` with the model, data, step budget and output overridden):
    anchor       the HF Trainer recipe: batch 1, right padding, the model's own loss over full logits
                 (`trainer.loss_impl=hf`), ZeRO-3 (`deepspeed=zero3`), every decoder layer recomputed
                 (`trainer.gradient_checkpointing=true`), transformers' kernels (`model.kernels=torch`), eager
                 decoder layers (`model.compile_layers=false`; ZeRO-3 leaves them eager anyway), eager vision blocks
                 with transformers' per-frame attention (`model.compile_vision=false model.vision_attention=transformers`)
    selective    anchor + the lm_head on labelled positions only (loss_impl back to its default)
    no_zero      anchor + `deepspeed: auto` (one GPU: no DeepSpeed; fused AdamW over fp32 weights, bf16 autocast)
    liger        anchor + Liger's RMSNorm, RoPE and SwiGLU kernels (`model.kernels: auto`)
    ckpt_auto    anchor + activation checkpointing only where memory needs it (`gradient_checkpointing: auto`)
    compiled     anchor + compiled decoder layers; compilation needs no ZeRO-3, so this row is no_zero + compile
    segments     anchor + a window's frames in one SDPA call per vision block (`model.vision_attention: segments`)
    eager_layers     defaults with eager decoder layers (`model.compile_layers=false`), which take Liger's kernels
    device_budget    defaults with `trainer.memory_budget=device`: kept layers bounded by 0.85 of the GPU only, not
                     by the recipe's logits memory (the speed the recipe-memory bound costs)
    vision_eager     defaults with eager vision blocks (`model.compile_vision=false`; the frames' attention is one
                     SDPA call either way)
    zero2        defaults + `deepspeed=zero2` on the one GPU: DeepSpeed's bf16 weights with fp32 masters in the
                 optimizer, against the defaults' fp32 weights under bf16 autocast
    mem_capped   defaults with `trainer.memory_budget=device` and `trainer.memory_fraction` = the anchor's peak memory
                 (this job's anchor row) over the GPU's: what meeting the anchor's measured memory costs
    frames_in_loader defaults with the frames resized and normalised in the loader workers (`data.process_frames=loader`)
    save_attention   defaults with `trainer.save_attention=true`: recomputed layers keep their attention outputs
    bound6       defaults with the recipe bound counting 6 bytes per logit, not 10 (bench/recipe_bound.py)
    defaults     `python train.py experiment=stage1_<size>`: the user's command and launch (no torchrun), with
                 every lever at its default; one extra step after the measured ones is profiled
                 (bench/step_profile.py through the config's callback hook)
Always on, in every row (not switches): the frozen vision tower under no_grad, the host-sync fixes.

MFU = model FLOPs / step time / 790 TFLOP/s. Model FLOPs per step, the same for every row (useful work):
    LLM      6 x (non-embedding decoder params) x tokens  +  6 x L x heads x head_dim x sum(seq_len^2) (causal)
             + 6 x hidden x vocab x label tokens (the lm_head is only needed where a label is)
    vision   2 x (tower params) x patches + mergers (forward only: the tower is frozen and needs no backward)
Recomputation (activation checkpointing) is not counted.

Also measured in the same job: the loader's window rate with the default `data.num_workers` against the trainer's
(defaults row), with the defaults' `data.process_frames` and with the frames processed in the workers, and (bench/check_kernels.py, first) Liger and the compiled layers against transformers' modules: a
mismatch stops the bench.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_FLOPS = 790e12

ANCHOR = ["deepspeed=zero3", "trainer.loss_impl=hf", "trainer.gradient_checkpointing=true", "model.kernels=torch",
          "model.compile_layers=false", "model.compile_vision=false", "model.vision_attention=transformers",
          "data.process_frames=loader"]


def without(*levers: str) -> list[str]:
    return [o for o in ANCHOR if not o.startswith(levers)]


# name -> (what, overrides on top of experiment=stage1_<size>, launcher: torchrun | python)
VARIANTS = {
    "anchor": ("HF Trainer recipe: batch 1, padding, full-logits loss, ZeRO-3, all layers recomputed", ANCHOR,
               "torchrun"),
    "selective": ("anchor + lm_head on labelled positions only", without("trainer.loss_impl"), "torchrun"),
    "no_zero": ("anchor + deepspeed auto (1 GPU: no DeepSpeed)", without("deepspeed"), "torchrun"),
    "liger": ("anchor + Liger RMSNorm/RoPE/SwiGLU", without("model.kernels"), "torchrun"),
    "ckpt_auto": ("anchor + checkpointing only where memory needs it", without("trainer.gradient_checkpointing"),
                  "torchrun"),
    "segments": ("anchor + a window's frames in one SDPA call per vision block", without("model.vision_attention"),
                 "torchrun"),
    "defaults": ("`python train.py experiment=stage1_<size>`: its own defaults", [], "python"),
    "compiled": ("anchor + compiled decoder layers (needs no ZeRO-3: no DeepSpeed on the one GPU)",
                 without("deepspeed", "model.compile_layers"), "torchrun"),
    "eager_layers": ("defaults with eager decoder layers (`model.compile_layers=false`: Liger's kernels instead)",
                     ["model.compile_layers=false"], "python"),
    "device_budget": ("defaults with `trainer.memory_budget=device`: as many kept layers as fit 0.85 of the GPU",
                      ["trainer.memory_budget=device"], "python"),
    "zero2": ("defaults + ZeRO-2 on the one GPU (bf16 weights, fp32 masters in the optimizer, no autocast casts)",
              ["deepspeed=zero2"], "torchrun"),
    "vision_eager": ("defaults with eager vision blocks (`model.compile_vision=false`)",
                     ["model.compile_vision=false"], "python"),
    "mem_capped": ("defaults + checkpointing auto within the anchor's peak memory (measured in this job)",
                   ["trainer.memory_budget=device"], "python"),
    "frames_in_loader": ("defaults with the frames resized and normalised in the loader workers "
                         "(`data.process_frames=loader`)", ["data.process_frames=loader"], "python"),
    "save_attention": ("defaults with `trainer.save_attention=true`: recomputed layers keep their attention outputs "
                       "(selective activation checkpointing)", ["trainer.save_attention=true"], "python"),
    "bound6": ("defaults with the recipe bound at 6 bytes per logit (bf16 logits and their log-softmax; not the fp32 "
               "copy transformers' loss makes)",
               ["+callbacks.recipe_bound={_target_:bench.recipe_bound.RecipeBound,bytes_per_logit:6}"], "python"),
}
ORDER = ["anchor", "defaults", "liger", "ckpt_auto", "selective", "no_zero", "compiled", "segments", "eager_layers",
         "device_budget", "vision_eager", "zero2", "mem_capped", "frames_in_loader"]
ESTIMATE_S = {"2b": 90, "4b": 120}  # a run's start-up + steps, to decide whether it still fits the time budget
LOADER_S = 90  # the loader's two measurements, at the end (kept out of the rows' budget)


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


def ensure_data(path: Path, tiny: bool, games: int, duration: float, workers: int) -> Path:
    if (path / "train_with_seeks.jsonl").exists():
        return path
    sys.path.insert(0, str(ROOT))
    from data.synthetic import generate_dataset

    print(f"generating {games} synthetic games x {duration:g} s in {path} ...", flush=True)
    size = dict(size="tiny") if tiny else dict(size=None, width=1280, height=720)
    generate_dataset(path, train_games=games, eval_games=0, duration=duration, clips=0, seed=11,
                     workers=workers, **size)
    return path


def build_in_background(path: Path, size: str):
    """Start building a later size's checkpoint now, at low priority, into a temp dir renamed when complete."""
    if (path / "config.json").exists():
        return None
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    script = (f"nice -n 19 {sys.executable} -m streaming_vlm.model.tiny --out {tmp} --size {size} --dtype bfloat16 "
              f"&& mv {tmp} {path}")
    print(f"building the {size} checkpoint in the background (nice 19, 4 threads): {path}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["bash", "-c", script], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "4"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


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
# The synthetic games are whole games (cut here into the experiment's 24 s / 12 s windows), not released windows.
DATA_OVERRIDES = ["~extra_data.live_whisperx", "data.train_file=train_with_seeks.jsonl", "data.eval_file=null",
                  "data.stage=stream", "data.repeat=1", "data.generate=null"]
# --tiny: a CPU process, tiny frames and short windows (the plumbing is the same, the sizes are not)
TINY_OVERRIDES = ["trainer.bf16=false", "trainer.use_cpu=true", "trainer.dataloader_pin_memory=false",
                  "data.min_pixels=3136", "data.max_pixels=4096", "data.total_pixels=65536", "data.num_workers=2",
                  "data.window=8", "data.stride=4", "data.min_words=8", "data.text_sink=64",
                  "data.text_sliding_window=64"]


def train_command(name: str, size: str, args, model: Path, data: Path, run_dir: Path, profile: Path | None,
                  dry_run: bool = False) -> list[str]:
    """The `train.py` command line of one row (GPU overrides; --tiny maps ZeRO-3 to none, CPU has no 1-rank ZeRO)."""
    _, overrides, launcher = VARIANTS[name]
    steps = args.warmup + args.steps + (1 if profile else 0)
    experiment = "stage1_2b" if size == "tiny" else f"stage1_{size}"
    argv = [f"experiment={experiment}", *DATA_OVERRIDES, f"model.name_or_path={model}",
            "model.build_if_missing=null", f"data.root={data}", f"output_dir={run_dir}",
            f"trainer.max_steps={steps + 2}", "trainer.save_steps=1000000", "eval=none", "resume=never",
            "wandb.mode=disabled", f"trainer.global_batch_size={args.global_batch}", "trainer.logging_steps=1"]
    if profile:
        argv += [f"+callbacks.profile_step={{_target_:bench.step_profile.ProfileStep,step:{steps},out:'{profile}'}}"]
    forced = {e.split("=")[0] for e in args.extra}
    overrides = [o for o in overrides if o.split("=")[0] not in forced]
    if args.tiny:
        argv += TINY_OVERRIDES
        if not dry_run:
            overrides = ["deepspeed=none" if o.startswith("deepspeed=zero") else o for o in overrides]
    if dry_run:
        return [sys.executable, str(ROOT / "train.py"), *argv, *overrides, "dry_run=true"]
    if launcher == "torchrun":
        head = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
                "--master_port", str(_free_port())]
    else:
        head = [sys.executable]
    return head + [str(ROOT / "train.py"), *argv, *overrides, *args.extra, *getattr(args, "row_extra", [])]


def read_records(path: Path) -> list[dict]:
    recs = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                recs.append(json.loads(line))
            except ValueError:
                pass
    return recs


def stop(proc: subprocess.Popen) -> None:
    """End the run we started (its whole process group: torchrun, the trainer, its DataLoader workers)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def run_variant(name: str, size: str, args, model: Path, data: Path, runs: Path, logs: Path, timeout_s: float,
                profile: bool = False) -> dict:
    run_dir = runs / f"{size}_{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    prof_path = run_dir / "profile.md" if profile else None
    cmd = train_command(name, size, args, model, data, run_dir, prof_path)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    print(f"\n[{size} {name}] {' '.join(cmd)}", flush=True)
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{size}_{name}.log"
    need = args.warmup + args.steps + (1 if profile else 0)
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        status = None
        while status is None:
            time.sleep(1.0)
            done = len(read_records(run_dir / "train_losses.jsonl")) >= need and \
                (prof_path is None or prof_path.exists())
            if done:
                status = "ok"
            elif proc.poll() is not None:
                status = f"rc {proc.returncode}"
            elif time.time() - t0 > timeout_s:
                status = f"timed out after {timeout_s:.0f} s"
        stop(proc)
    wall = time.time() - t0
    text = log.read_text(errors="replace")
    chose = []  # what the run printed about its choices (a progress bar may share the line)
    for ln in text.splitlines():
        for marker in ("world size ", "kernels: ", "compile: ", "activation checkpointing auto:"):
            if marker in ln and ln[ln.index(marker):].strip() not in chose:
                chose.append(ln[ln.index(marker):].strip())
    recs = read_records(run_dir / "train_losses.jsonl")
    print(f"[{size} {name}] {status} in {wall:.0f} s, {len(recs)} steps recorded", flush=True)
    if status != "ok":
        tail = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["?"]
        return {"variant": name, "size": size, "error": f"{status}: {tail[0][:200]}", "log": str(log)}
    cfg = json.loads((model / "config.json").read_text())
    w = args.warmup
    measured = [r for r in recs if w < r["step"] <= w + args.steps]
    start = next(r for r in recs if r["step"] == w)
    elapsed = measured[-1]["time"] - start["time"]
    n = len(measured)
    tokens = sum(r["tokens"] for r in measured)
    flops = sum(model_flops(cfg, r, r["tokens"] ** 2 / args.global_batch) for r in measured)
    step_times = [b["time"] - a["time"] for a, b in zip([start] + measured[:-1], measured)]
    result = {
        "variant": name, "size": size, "steps": n, "step_s": elapsed / n, "step_s_median": statistics.median(step_times),
        "step_times": step_times,
        "windows_per_s": n * args.global_batch / elapsed, "tokens_per_s": tokens / elapsed,
        "vision_tokens_per_s": sum(r["vision_tokens"] for r in measured) / elapsed,
        "tokens_per_window": tokens / (n * args.global_batch),
        "vision_per_window": sum(r["vision_tokens"] for r in measured) / (n * args.global_batch),
        "label_frac": sum(r["label_tokens"] for r in measured) / max(tokens, 1),
        "mfu": flops / elapsed / PEAK_FLOPS,
        "peak_mem_gb": max((r.get("max_mem_gb") or 0.0) for r in recs[:w + args.steps]) or None,
        "loss": measured[-1]["loss"], "losses": [r["loss"] for r in recs[:w + args.steps]],
        "chose": chose, "run_wall_s": wall,
    }
    if prof_path is not None:
        result["profile"] = prof_path.read_text()
    return result


def dry_run_all(sizes, args, model: Path, data: Path, out: Path) -> list[str]:
    """--tiny: every GPU row's exact command line through `train.py dry_run=true` (config, overrides, plan)."""
    failed = []
    for size in sizes:
        for name in VARIANTS:
            cmd = train_command(name, size, args, model, data, out / "dry", out / "dry" / "profile.md", dry_run=True)
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            print(f"[dry run {size} {name}] rc {r.returncode}", flush=True)
            if r.returncode != 0:
                failed.append(f"{size} {name}: {(r.stderr.strip().splitlines() or ['?'])[-1][:200]}")
    return failed


# ---- loader ---------------------------------------------------------------------------------------------------
def loader_rate(size: str, args, model: Path, data: Path, max_windows: int = 96, max_s: float = 60.0,
                extra: tuple[str, ...] = ()) -> dict:
    """Windows/s of the training DataLoader as train.py builds it (default `data.num_workers`; `extra`: overrides),
    after start-up. With `data.process_frames=trainer` a window's pixels are made later, by the training step."""
    import torch
    from hydra import compose, initialize_config_dir
    from torch.utils.data import DataLoader

    sys.path.insert(0, str(ROOT))
    from streaming_vlm.model.loading import load_processor
    from streaming_vlm.training.config import data_sources, loader_workers
    from streaming_vlm.training.data import build_train

    overrides = [f"experiment={'stage1_2b' if size == 'tiny' else f'stage1_{size}'}", *DATA_OVERRIDES,
                 f"data.root={data}"] + ([o for o in TINY_OVERRIDES if o.startswith("data.")] if args.tiny else []) \
        + list(extra)
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        cfg = compose("config", overrides=overrides)
    workers, _ = loader_workers(cfg.data.num_workers)  # as train.py's plan resolves it
    from streaming_vlm.training.data import frames_choice

    sources = data_sources(cfg)
    _, where, _ = frames_choice(sources, None)
    dataset, collator, _ = build_train(sources, load_processor(str(model)))
    loader = DataLoader(dataset, batch_size=1, shuffle=True, num_workers=workers, collate_fn=collator,
                        pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(0),
                        persistent_workers=workers > 0)  # several passes over the windows without restarts
    skip = max(workers, 1)  # the first window of each worker pays its start-up
    seen, t_start, t0 = 0, None, time.time()
    while seen < max_windows + skip and time.time() - t0 < max_s:
        for _ in loader:
            seen += 1
            if seen == skip:
                t_start = time.time()
            if seen >= max_windows + skip or time.time() - t0 > max_s:
                break
    measured = seen - skip
    rate = measured / (time.time() - t_start) if t_start and measured > 0 else 0.0
    return {"workers": workers, "windows": measured, "windows_per_s": rate, "cpus": os.cpu_count(),
            "process_frames": where}


# ---- report -----------------------------------------------------------------------------------------------------
def device_line() -> str:
    import torch
    import transformers

    parts = []
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        parts.append(f"{p.name} ({p.total_memory / 2**30:.0f} GiB), {os.cpu_count()} CPUs")
    else:
        parts.append(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs")
    versions = [f"torch {torch.__version__}", f"transformers {transformers.__version__}"]
    for mod in ("deepspeed", "liger_kernel", "triton"):
        try:
            from importlib.metadata import version

            versions.append(f"{mod} {version(mod.replace('_', '-'))}")
        except Exception:  # noqa: BLE001 - absent on CPU machines
            versions.append(f"{mod} absent")
    return "; ".join(parts + [", ".join(versions)])


def table(results: list[dict], args) -> str:
    rows = [f"| size | row | what | step (s) | each step (s) | windows/s | tokens/s | MFU | peak mem (GiB) | loss after "
            f"step {args.warmup + args.steps} | vs anchor |",
            "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        what = VARIANTS[r["variant"]][0]
        if "error" in r:
            rows.append(f"| {r['size']} | {r['variant']} | {what} | failed: {r['error']} | | | | | | | |")
            continue
        anchor = next((a for a in results if a["size"] == r["size"] and a["variant"] == "anchor" and "error" not in a),
                      None)
        speed = f"{r['tokens_per_s'] / anchor['tokens_per_s']:.2f}x" if anchor else "-"
        mem = f"{r['peak_mem_gb']:.1f}" if r.get("peak_mem_gb") else "-"
        each = ", ".join(f"{t:.2f}" for t in r.get("step_times", []))
        rows.append(f"| {r['size']} | {r['variant']} | {what} | {r['step_s']:.3f} | {each} | {r['windows_per_s']:.2f} | "
                    f"{r['tokens_per_s']:,.0f} | {100 * r['mfu']:.1f}% | {mem} | {r['loss']:.4f} | {speed} |")
    return "\n".join(rows)


def report(results, loader, kernel_lines, args, data) -> str:
    ok = [r for r in results if "error" not in r]
    sample = ok[0] if ok else {}
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    out = [f"## Training throughput (`bench/train_throughput.py{' --tiny' if args.tiny else ''}`), {when}", "",
           f"Device: {device_line()}.",
           f"Random-init checkpoints (`python -m streaming_vlm.model.tiny --size ...`); synthetic "
           f"{'tiny' if args.tiny else '1280x720'} games ({data}); stage-1 windows of "
           f"{'8 s (--tiny)' if args.tiny else '24 s'} at 2 fps, stride {'4' if args.tiny else '12'} s: "
           f"~{sample.get('tokens_per_window', 0):,.0f} tokens and ~{sample.get('vision_per_window', 0):,.0f} vision "
           f"tokens per window, {100 * sample.get('label_frac', 0):.1f}% of tokens labelled. Global batch "
           f"{args.global_batch} windows per step on one {'CPU process' if args.tiny else 'GPU'}; {args.warmup} "
           f"warm-up + {args.steps} measured steps, the same windows in the same order in every row. MFU = model "
           f"FLOPs / step time / 790 TFLOP/s (recomputation not counted; the script's docstring has the count).", "",
           table(results, args), ""]
    if any(r["size"] == "4b" for r in results) and any(r["size"] == "2b" for r in results):
        out += ["The 4B checkpoint was built in the background (nice 19, 4 threads) while the 2B rows ran.", ""]
    for r in ok:
        if r["variant"] == "defaults":
            experiment = "stage1_2b" if r["size"] == "tiny" else f"stage1_{r['size']}"
            out += [f"What `train.py experiment={experiment}` chose ({r['size']}):", ""]
            out += [f"- {c}" for c in r["chose"]] + [""]
    for r in ok:
        if r.get("profile"):
            out += [f"One step of the {r['size']} defaults (step {args.warmup + args.steps + 1}, torch.profiler):", "",
                    r["profile"], ""]
    trainer = next((r for r in ok if r["variant"] == "defaults"), None)
    for what, one in (loader or {}).items():
        if "error" in one:
            out += [f"Loader ({what}): not measured: {one['error']}", ""]
            continue
        ratio = f"{one['windows_per_s'] / trainer['windows_per_s']:.1f}x the trainer's " \
                f"{trainer['windows_per_s']:.2f} windows/s ({trainer['size']} defaults)" if trainer else "no trainer rate"
        out += [f"Loader ({what}, frames processed in the {one['process_frames']}): {one['windows_per_s']:.2f} "
                f"windows/s with the default {one['workers']} workers ({one['windows']} windows after start-up, "
                f"{one['cpus']} CPUs) = {ratio}.", ""]
    out += ["Kernel check (`bench/check_kernels.py`):", "", "```", *kernel_lines, "```"]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU: tiny model and frames, every piece once")
    ap.add_argument("--sizes", default=None, help="comma list of 2b,4b (default both; --tiny: tiny)")
    ap.add_argument("--variants", default=None, help=f"comma list for every size, or per size as "
                    f"'2b:a,b;4b:c' (default, in order: {','.join(ORDER)})")
    ap.add_argument("--steps", type=int, default=4, help="measured optimizer steps (default 4: one slow step, e.g. "
                                                          "the allocator growing, weighs a quarter)")
    ap.add_argument("--warmup", type=int, default=1, help="steps before the measured ones (default 1, >= 1)")
    ap.add_argument("--global-batch", type=int, default=None, help="windows per optimizer step (default 4; tiny 2)")
    ap.add_argument("--cache", default=str(ROOT / "outputs" / "bench_train"), help="models and runs go here")
    ap.add_argument("--data", default=None, help="synthetic games (default: <cache>/data, generated when missing)")
    ap.add_argument("--out", default=None, help="report, results.json and logs (default <cache>/out)")
    ap.add_argument("--no-loader", action="store_true", help="skip the loader's rates (rows only)")
    ap.add_argument("--budget-s", type=float, default=0, help="stop starting runs past this many seconds (0: none)")
    args = ap.parse_args(argv)
    args.extra = []  # overrides for every row (set when the kernel check finds Liger unavailable)
    t_begin = time.time()
    args.global_batch = args.global_batch or (2 if args.tiny else 4)
    if args.warmup < 1:
        print("error: --warmup must be >= 1 (the measured time starts at the end of a step)", file=sys.stderr)
        return 2
    sizes = (args.sizes or ("tiny" if args.tiny else "2b,4b")).split(",")
    per_size = {}  # --variants "a,b" (every size) or "2b:a,b;4b:c" (per size)
    for part in (args.variants or ",".join(ORDER)).split(";"):
        size_key, _, rows = part.rpartition(":")
        for s in (size_key.split(",") if size_key else sizes):
            per_size[s] = rows.split(",")
    names = [n for s in sizes for n in per_size.get(s, [])]
    unknown = [n for n in names if n not in VARIANTS] + [s for s in sizes if s not in ("2b", "4b", "tiny")]
    if unknown:
        print(f"error: unknown {', '.join(unknown)}; rows: {', '.join(VARIANTS)}; sizes: 2b, 4b", file=sys.stderr)
        return 2
    import torch

    if not args.tiny and not torch.cuda.is_available():
        print("error: no GPU here; use --tiny for the CPU check", file=sys.stderr)
        return 2
    cache = Path(args.cache)
    out = Path(args.out) if args.out else cache / "out"
    out.mkdir(parents=True, exist_ok=True)

    def left() -> float:
        return args.budget_s - (0 if args.no_loader else LOADER_S) - (time.time() - t_begin) if args.budget_s else 1e9

    kcmd = [sys.executable, str(ROOT / "bench" / "check_kernels.py")] + (["--tiny"] if args.tiny else [])
    k = subprocess.run(kcmd, cwd=ROOT, capture_output=True, text=True)
    kernel_lines = (k.stdout.strip() or k.stderr.strip()[-2000:]).splitlines()
    print("\n".join(kernel_lines), flush=True)
    if k.returncode == 3:  # Liger cannot run here: every row uses transformers' modules, and the report says so
        print("Liger unavailable: every row runs model.kernels=torch; the liger row is dropped", flush=True)
        args.extra = ["model.kernels=torch"]
        per_size = {s: [n for n in rows if n != "liger"] for s, rows in per_size.items()}
        kernel_lines.append("=> Liger unavailable: every row ran with model.kernels=torch, no liger row")
    elif k.returncode != 0:
        print("error: the kernel check failed: no training figures are taken", file=sys.stderr)
        (out / "report.md").write_text("Kernel check FAILED; no training figures.\n\n```\n" +
                                       "\n".join(kernel_lines) + "\n```\n")
        return 1
    data = Path(args.data) if args.data else ensure_data(cache / "data", args.tiny, 2 if args.tiny else 3,
                                                         72.0 if args.tiny else 120.0, workers=min(8, os.cpu_count() or 1))
    results, loader = [], None
    if args.tiny:
        model = ensure_model(cache / "tiny" / "model", "tiny")
        failed = dry_run_all(["tiny", "4b"], args, model, data, out)  # tiny runs stage1_2b for real below
        if failed:
            print("error: dry runs failed:\n  " + "\n  ".join(failed), file=sys.stderr)
            return 1
    background = {s: build_in_background(cache / s / "model", s) for s in sizes[1:]}
    for size in sizes:
        if size in background and background[size] is not None:
            print(f"waiting for the {size} checkpoint being built in the background ...", flush=True)
            try:
                background[size].wait(timeout=max(left() - 60, 1))
            except subprocess.TimeoutExpired:
                stop(background[size])
                results += [{"variant": n, "size": size, "error": "skipped: its checkpoint was not built in the "
                                                                    "time budget"} for n in per_size.get(size, [])]
                continue
        model = ensure_model(cache / size / "model", size)
        for name in per_size.get(size, []):
            estimate = ESTIMATE_S.get(size, 60) * (1.3 if name == "anchor" else 1.0)
            if left() < estimate:
                results.append({"variant": name, "size": size, "error": f"skipped: {left():.0f} s of the time budget "
                                                                       f"left, a run needs ~{estimate:.0f} s"})
                continue
            if name == "mem_capped" and not args.tiny:  # (a CPU has no device budget: the row runs as defaults)
                anchor = next((r for r in results if r["size"] == size and r["variant"] == "anchor"
                               and r.get("peak_mem_gb")), None)
                if anchor is None:
                    results.append({"variant": name, "size": size, "error": "skipped: no anchor row to cap at"})
                    continue
                total = torch.cuda.get_device_properties(0).total_memory / 2**30
                args.row_extra = [f"trainer.memory_fraction={anchor['peak_mem_gb'] / total:.3f}"]
            else:
                args.row_extra = []
            results.append(run_variant(name, size, args, model, data, cache / "runs", out / "logs",
                                       timeout_s=min(left() - 5, 3 * estimate if not args.tiny else 900),
                                       profile=name == "defaults" and size == sizes[0]))
            (out / "results.json").write_text(json.dumps({"rows": results, "loader": loader}, indent=2))
        shutil.rmtree(cache / "runs", ignore_errors=True)
    # the loader last, on an otherwise idle host (no training run, no checkpoint build in the background)
    loader = {}
    for what, extra in () if args.no_loader else (("defaults", ()), ("frames in the workers",
                                                                       ("data.process_frames=loader",))):
        try:  # a loader failure is reported with the rows, not instead of them
            loader[what] = loader_rate(sizes[0], args, ensure_model(cache / sizes[0] / "model", sizes[0]), data,
                                       max_s=LOADER_S / 2 - 5, extra=extra)
        except Exception as err:  # noqa: BLE001 - e.g. a worker killed by the host
            loader[what] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
    print(f"loader: {loader}", flush=True)
    text = report(results, loader, kernel_lines, args, data)
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"rows": results, "loader": loader}, indent=2))
    print("\n" + text, flush=True)
    return 0 if any("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
