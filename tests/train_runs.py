"""train.py as the user runs it (a subprocess), with the test environment; shared by the end-to-end training tests
and the session's reference run (conftest.py `reference_run`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_env(extra=None):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env.update(extra or {})
    return env


def common_args(data, ckpt, out, experiment="smoke_stage1", steps=6):
    return [f"experiment={experiment}", f"data.root={data}", "data.generate=null", f"model.name_or_path={ckpt}",
            f"output_dir={out}", f"trainer.max_steps={steps}", "trainer.save_steps=2", "trainer.save_total_limit=3",
            "eval=none"]


def reference_args(data, ckpt, out):
    """The session's reference run (conftest.py `reference_run`): 6 steps, global batch 4, checkpoints every 2 steps,
    and the held-out loss on 8 windows of the eval games before and after training (it reads the weights, it does
    not change the training: the resumed and ZeRO-3 runs, without it, reproduce this run's losses)."""
    return [a for a in common_args(data, ckpt, out) if a != "eval=none"] + ["eval=heldout_loss",
                                                                            "eval.heldout.max_samples=8"]


def train(args, timeout=600, launcher=None, env=None):
    cmd = (launcher or [sys.executable]) + [str(ROOT / "train.py"), *args]
    r = subprocess.run(cmd, cwd=ROOT, env=train_env(env), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r
