"""A finished training run is left alone (issue 17): re-running the same command with resume=auto says so in one
line and exits 0 without training; a run killed during its final save publishes its last checkpoint as the final
model and trains nothing; resume=auto over a checkpoint written without DeepSpeed, in a ZeRO-3 run, is one line
saying what to pass. The run never modifies its inputs (the checkpoint it starts from, the data)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {str(p): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _train(data, ckpt, out, *extra):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, str(ROOT / "train.py"), "experiment=smoke_stage1", f"data.root={data}", "data.generate=null",
           f"model.name_or_path={ckpt}", f"output_dir={out}", "trainer.max_steps=2", "trainer.save_steps=2",
           "eval=none", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_finished_runs_are_left_alone(tmp_path, tiny_ckpt):
    from data.synthetic import generate_dataset

    data = tmp_path / "data"
    generate_dataset(data, train_games=2, eval_games=1, duration=30, eval_duration=20, clips=2, seed=3)
    inputs_before = {**_tree(data), **_tree(Path(tiny_ckpt))}
    out = tmp_path / "run"
    first = _train(data, tiny_ckpt, out)
    assert first.returncode == 0, first.stderr[-3000:]
    final, losses = _sha(out / "model.safetensors"), (out / "train_losses.jsonl").read_text()
    assert len(losses.splitlines()) == 2

    again = _train(data, tiny_ckpt, out)  # the same command, resume=auto
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training already complete" in again.stdout and "nothing to do" in again.stdout
    assert "Traceback" not in again.stderr
    assert _sha(out / "model.safetensors") == final and (out / "train_losses.jsonl").read_text() == losses

    # what a kill during the final save leaves: no marker, the config not yet moved, a half-staged final model
    for name in ("TRAINING_COMPLETE", "config.json", "model.safetensors"):
        (out / name).unlink()
    (out / ".staging" / "final").mkdir(parents=True)
    (out / ".staging" / "final" / "model.safetensors").write_bytes(b"half")
    finish = _train(data, tiny_ckpt, out)
    assert finish.returncode == 0, finish.stderr[-3000:]
    assert "finished its final save" in finish.stdout and "nothing trained" in finish.stdout
    assert _sha(out / "model.safetensors") == final and (out / "config.json").is_file()
    assert (out / "TRAINING_COMPLETE").is_file() and not (out / ".staging").exists()
    assert (out / "train_losses.jsonl").read_text() == losses
    from transformers import Qwen3VLForConditionalGeneration

    Qwen3VLForConditionalGeneration.from_pretrained(out)  # the finished final model loads

    # a ZeRO-3 run asked to continue a checkpoint written without DeepSpeed
    zero = tmp_path / "zero"
    shutil.copytree(out, zero)
    (zero / "TRAINING_COMPLETE").unlink()
    refused = _train(data, tiny_ckpt, zero, "trainer.max_steps=4", "deepspeed=zero3")
    lines = [ln for ln in refused.stderr.splitlines() if ln.strip() and "Setting accelerator" not in ln]
    assert refused.returncode == 2 and len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "written without DeepSpeed" in lines[0] and "deepspeed=none" in lines[0] and "init_from=" in lines[0]
    assert (zero / "train_losses.jsonl").read_text() == losses

    assert {**_tree(data), **_tree(Path(tiny_ckpt))} == inputs_before
