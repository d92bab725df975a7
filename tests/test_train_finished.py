"""A finished training run is left alone (issue 17): re-running the same command with resume=auto says so in one
line and exits 0 without training; a run killed during its final save publishes its last checkpoint as the final
model and trains nothing; resume=auto over a checkpoint written without DeepSpeed, in a ZeRO-3 run, is one line
saying what to pass. The run never modifies its inputs (the checkpoint it starts from, the data).

The finished run is the session's reference run (conftest.py), copied; nothing here trains, so train.py's steps run
in this process (tests/in_process.py)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from train_runs import reference_args  # tests/train_runs.py
from in_process import train_task  # tests/in_process.py

pytestmark = pytest.mark.slow


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {str(p): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_finished_runs_are_left_alone(reference_run, synth_data, tiny_ckpt, tmp_path, capfd, monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    reference, _, inputs_before = reference_run
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    final, losses = _sha(out / "model.safetensors"), (out / "train_losses.jsonl").read_text()
    assert len(losses.splitlines()) == 6

    def run(target, *extra):
        capfd.readouterr()
        code = train_task(reference_args(synth_data, tiny_ckpt, target) + list(extra))
        got = capfd.readouterr()
        return code, got.out, got.err

    code, stdout, stderr = run(out)  # the same command, resume=auto
    assert code == 0, stderr[-3000:]
    assert "training already complete" in stdout and "nothing to do" in stdout
    assert "Traceback" not in stderr
    assert _sha(out / "model.safetensors") == final and (out / "train_losses.jsonl").read_text() == losses

    # what a kill during the final save leaves: no marker, the config not yet moved, a half-staged final model
    for name in ("TRAINING_COMPLETE", "config.json", "model.safetensors"):
        (out / name).unlink()
    (out / ".staging" / "final").mkdir(parents=True)
    (out / ".staging" / "final" / "model.safetensors").write_bytes(b"half")
    code, stdout, stderr = run(out)
    assert code == 0, stderr[-3000:]
    assert "finished its final save" in stdout and "nothing trained" in stdout
    assert _sha(out / "model.safetensors") == final and (out / "config.json").is_file()
    assert (out / "TRAINING_COMPLETE").is_file() and not (out / ".staging").exists()
    assert (out / "train_losses.jsonl").read_text() == losses
    from transformers import Qwen3VLForConditionalGeneration

    Qwen3VLForConditionalGeneration.from_pretrained(out)  # the finished final model loads

    # a ZeRO-3 run asked to continue a checkpoint written without DeepSpeed
    zero = tmp_path / "zero"
    shutil.copytree(out, zero)
    (zero / "TRAINING_COMPLETE").unlink()
    code, stdout, stderr = run(zero, "trainer.max_steps=8", "deepspeed=zero3")
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "written without DeepSpeed" in lines[0] and "deepspeed=none" in lines[0] and "init_from=" in lines[0]
    assert (zero / "train_losses.jsonl").read_text() == losses

    assert {**_tree(synth_data), **_tree(Path(tiny_ckpt))} == inputs_before
