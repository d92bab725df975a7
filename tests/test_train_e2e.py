"""train.py end to end on CPU with the tiny Qwen3-VL and generated synthetic football streams.

- learning: stage-1 loss on HELD-OUT windows (eval games) drops >= 30% vs the untrained model in the reference
  run's 6 steps of 4 windows; stage 2 initialises from the stage-1 output dir;
- kill -9: a run SIGKILLed mid-checkpoint and again at a random step, then resumed, follows the uninterrupted
  run bitwise (every step's loss, the samples of every step, the final weights); no checkpoint is ever half-written;
- real ZeRO-3 on 2 CPU ranks (gloo; the deepspeed launcher, then torchrun): same per-step losses as one process,
  a final model gathered for from_pretrained, and an exact resume from a ZeRO-3 checkpoint;
- LoRA: the adapter is saved in peft's format and reloads with PeftModel.from_pretrained; the same run (over data
  with a truncated video) counts the bad samples per reason in every step's logged metrics.

The uninterrupted reference run and the data are the session's (conftest.py), shared with test_train_finished; so
are the two ZeRO-3 runs (conftest.py `zero3_runs`: they carry the win-rate callback, checked in
test_eval_callback.py, and must still train exactly as the reference run).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from streaming_vlm.training import checkpoints
from train_runs import common_args, reference_args, train, train_env  # tests/train_runs.py

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


_env = train_env  # (names kept for the modules that import them from here)


def records(out: Path) -> list[dict]:
    from streaming_vlm.training.curve import read_records

    return read_records(out)


def curve(out: Path) -> dict[int, dict]:
    return {r["step"]: r for r in records(out)}  # later attempts overwrite redone steps


def assert_no_partial_checkpoint(out: Path) -> None:
    for d in out.glob("checkpoint-*"):
        assert checkpoints.is_complete(d), f"published checkpoint {d} is not complete"
        for f in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "model.safetensors", "rng_state.pth"):
            assert (d / f).is_file(), (d, f)


def load_state(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


# ---- learning + stage 2 -------------------------------------------------------------------------------------------
def test_stage1_learns_heldout_and_stage2_initialises_from_it(reference_run, synth_data, tiny_ckpt, tmp_path):
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    s1, r, _ = reference_run  # stage 1: 6 steps of 4 windows, held-out loss before and after
    held = json.loads((s1 / "heldout_loss.json").read_text())
    before, after = held["0"]["loss"], held["6"]["loss"]
    assert held["0"]["tokens"] == held["6"]["tokens"] > 100
    assert before > 10.0, before  # untrained: ~ln(151936) = 11.9
    assert after <= 0.70 * before, (before, after)  # the stated margin: >= 30% lower on held-out windows
    doc = json.loads((s1 / "loss_curve.json").read_text())
    assert doc["steps"] == list(range(1, 7)) and doc["loss"][-1] < doc["loss"][0]
    assert "loss curve" in r.stdout and "held-out loss: step 0" in r.stdout
    assert (s1 / checkpoints.TRAINING_COMPLETE).exists() and not (s1 / checkpoints.STAGING).exists()
    # the final model loads the way the hub checkpoints do
    model = Qwen3VLForConditionalGeneration.from_pretrained(s1)
    processor = AutoProcessor.from_pretrained(s1)
    assert type(processor).__name__ == "Qwen3VLProcessor" and model.config.text_config.hidden_size == 128

    s2 = tmp_path / "stage2"
    r2 = train(common_args(synth_data, tiny_ckpt, s2, experiment="smoke_stage2", steps=1)
               + [f"init_from={s1}", "data.min_words=4", "trainer.global_batch_size=1"])  # one 64-s clip
    assert f"model {s1}" in r2.stdout
    first = curve(s2)[1]["loss"]
    assert first < 0.8 * before, (first, before)  # starts from stage 1's weights, not from scratch
    assert (s2 / "config.json").exists() and (s2 / "model.safetensors").exists()


def test_frames_processed_by_the_trainer_train_exactly_as_in_the_loader(reference_run, synth_data, tiny_ckpt, tmp_path):
    """`data.process_frames=trainer` (the default when training on CUDA): the loader sends uint8 frames and the
    training process runs the video processor, for the training steps and the held-out loss alike. Here both run on
    the CPU, so every step's loss and the held-out losses equal the reference run's (frames processed in the loader,
    the CPU default)."""
    ref_out = reference_run[0]
    out = tmp_path / "run"
    r = train([a if not a.startswith("trainer.save_steps") else "trainer.save_steps=100"
               for a in reference_args(synth_data, tiny_ckpt, out)] + ["data.process_frames=trainer"])
    assert "video frames: decoded and tokenized by the loader workers, resized and normalised by the training " \
           "process on its device (data.process_frames=trainer)" in r.stdout
    ours, ref = curve(out), curve(ref_out)
    assert sorted(ours) == sorted(ref) == list(range(1, 7))
    assert [ours[s]["loss"] for s in ours] == [ref[s]["loss"] for s in ours]
    held, held_ref = (json.loads((d / "heldout_loss.json").read_text()) for d in (out, ref_out))
    assert held == held_ref


# ---- kill -9 and exact resume -------------------------------------------------------------------------------------
def _wait_for(predicate, proc, timeout=300.0, what="", poll=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited (rc {proc.returncode}) before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill9_mid_checkpoint_and_at_random_step_then_exact_resume(reference_run, synth_data, tiny_ckpt, tmp_path):
    ref_out = reference_run[0]
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), *common_args(synth_data, tiny_ckpt, out)]
    logs = []

    # attempt 1: SIGKILL while checkpoint-4 is being written: frozen (SIGSTOP) as soon as its staging folder
    # appears, which is while its files are still being written, before the atomic publish
    with open(tmp_path / "a1.log", "w") as log:
        p = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        _wait_for(lambda: (out / checkpoints.STAGING / "checkpoint-4").exists(), p, what="checkpoint-4 staging",
                  poll=0.005)
        p.send_signal(signal.SIGSTOP)
        frozen_mid_save = not (out / "checkpoint-4").exists()
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert frozen_mid_save, "checkpoint-4 was published before the kill: the save was not interrupted"
    logs.append((tmp_path / "a1.log").read_text())
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-4").exists()
    assert_no_partial_checkpoint(out)

    # attempt 2: resumes from checkpoint-2 (not the half-written 4); SIGKILL right after a random step
    seed = int(os.environ.get("TRAIN_KILL_SEED", time.time_ns() % 10_000))
    kill_step = random.Random(seed).choice([4, 5])
    print(f"kill seed {seed}: SIGKILL after step {kill_step}")
    attempts_before = {r["attempt"] for r in records(out)}
    with open(tmp_path / "a2.log", "w") as log:
        p = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        _wait_for(lambda: any(r["step"] == kill_step and r["attempt"] not in attempts_before for r in records(out)),
                  p, what=f"step {kill_step}")
        p.send_signal(signal.SIGKILL)
        p.wait()
    logs.append((tmp_path / "a2.log").read_text())
    assert "resuming from" in logs[1] and logs[1].split("resuming from ")[1].split()[0].endswith("checkpoint-2")
    assert_no_partial_checkpoint(out)

    # attempt 3: resume to the end
    r = train(common_args(synth_data, tiny_ckpt, out))
    assert "resuming from" in r.stdout
    assert_no_partial_checkpoint(out)

    ref, got = curve(ref_out), curve(out)
    assert sorted(got) == sorted(ref) == list(range(1, 7))
    for step in ref:  # bitwise: same losses and the same samples in every step
        assert got[step]["loss"] == ref[step]["loss"], (step, got[step], ref[step])
        assert got[step]["samples"] == ref[step]["samples"], step
        assert got[step]["lr"] == ref[step]["lr"], step
    # resumed attempts redid steps after their checkpoint with identical results, e.g. step 3 twice
    redone = [r for r in records(out) if r["step"] == 3]
    assert len(redone) >= 2 and len({r["loss"] for r in redone}) == 1
    a, b = load_state(ref_out), load_state(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- ZeRO-3 on 2 CPU ranks ----------------------------------------------------------------------------------------
def test_zero3_two_cpu_ranks_matches_single_process_and_resumes_exactly(reference_run, zero3_runs):
    """The session's ZeRO-3 runs (conftest.py `zero3_runs`: the deepspeed launcher, then a resume under torchrun;
    both with the win-rate callback, whose own checks are in test_eval_callback.py)."""
    from transformers import Qwen3VLForConditionalGeneration

    ref_out = reference_run[0]
    out, r = zero3_runs["first"]
    assert "world size 2 | global batch 4 = 1/device x grad-accum 2 x 2 | ZeRO-3" in r.stdout
    assert "weights partitioned at load (ZeRO-3)" in r.stdout  # TrainingArguments(deepspeed=...) came first
    assert "deepspeed_shm_comm" not in r.stdout + r.stderr  # training on gloo neither builds nor loads the shm op
    ref, got = curve(ref_out), curve(out)
    assert sorted(got) == list(range(1, 7))
    for step in ref:  # same data, same math, partitioned over 2 ranks: equal up to float reduction order
        assert abs(got[step]["loss"] - ref[step]["loss"]) <= 1e-4 * ref[step]["loss"], (step, got[step], ref[step])
    ckpt = out / "checkpoint-4"
    assert checkpoints.is_complete(ckpt) and any(ckpt.glob("global_step*"))  # DeepSpeed's partitioned states
    # the final model was gathered from the partitions: it loads and matches the single-process weights
    z3 = Qwen3VLForConditionalGeneration.from_pretrained(out)
    one = load_state(ref_out)
    for name, p in z3.state_dict().items():
        if name in one:
            torch.testing.assert_close(p, one[name], rtol=1e-3, atol=2e-4, msg=name)

    # exact resume from a ZeRO-3 checkpoint: a copy of the run redoes steps 5-6 from checkpoint-4, under torchrun
    first = {s: got[s]["loss"] for s in (5, 6)}
    resumed, r, ckpt = zero3_runs["resumed"]
    assert "world size 2" in r.stdout and f"resuming from {ckpt}" in r.stdout
    redo = [rec for rec in records(resumed) if rec["step"] in (5, 6)]
    assert len(redo) == 4
    for rec in redo:
        assert abs(rec["loss"] - first[rec["step"]]) <= 1e-6 * first[rec["step"]], (rec, first)


# ---- LoRA, and bad samples in the logged metrics: one run over data with a truncated video ----------------------
@pytest.fixture(scope="module")
def lora_run_over_a_corrupt_video(synth_data, tiny_ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora_bad")
    data = tmp / "data"
    shutil.copytree(synth_data, data)
    video = sorted((data / "videos" / "train").glob("*.mp4"))[1]
    video.write_bytes(video.read_bytes()[:4096])  # truncated: exists, not empty, undecodable
    out = tmp / "run"
    r = train(common_args(data, tiny_ckpt, out, steps=3)
              + ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8", "trainer.learning_rate=1e-2",
                 "data.max_bad_fraction=0.5", "trainer.save_steps=100"])
    return out, r


def test_lora_adapter_saved_in_peft_format_and_reloads(lora_run_over_a_corrupt_video, tiny_ckpt):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import Qwen3VLForConditionalGeneration

    out, r = lora_run_over_a_corrupt_video
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert saved and all("language_model" in k for k in saved)
    assert any("lora_B" in k and float(v.abs().sum()) > 0 for k, v in saved.items())  # trained (B starts at 0)
    base = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt)
    with warnings.catch_warnings():  # peft's read of a property transformers 5 deprecates (apply_lora says more)
        warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        peft_model = PeftModel.from_pretrained(base, out)
    loaded = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(saved)
    for k, v in saved.items():
        match = [lk for lk in loaded if lk.replace(".default", "").endswith(k.split("base_model.model.", 1)[-1])]
        assert match and torch.equal(loaded[match[0]], v), k
    assert "trainable params" in r.stdout
    assert "Warning" not in r.stderr, r.stderr  # the LoRA run itself prints no library deprecation


def test_bad_samples_counted_per_reason_in_logged_metrics(lora_run_over_a_corrupt_video):
    out, r = lora_run_over_a_corrupt_video
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["bad_samples"].get("corrupt_video", 0) > 0, summary
    # every step's logged metrics carry the per-reason totals (the final checkpoint holds the log history)
    history = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    step_logs = [h for h in history if "loss" in h]
    assert len(step_logs) == 3 and step_logs[-1]["data/bad/corrupt_video"] == summary["bad_samples"]["corrupt_video"]
    assert 0 < step_logs[-1]["data/bad_fraction"] <= 0.5
    assert "data/bad/corrupt_video" in r.stdout
