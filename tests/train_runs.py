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


def zero3_runs(data, ckpt, eval_games, tmp):
    """The session's ZeRO-3 runs (conftest.py `zero3_runs`): the reference run's training (same data, steps, batch
    and checkpoints) on 2 CPU ranks, with the win-rate callback; then a copy resumed from checkpoint-4. Returns
    {"first": (output dir, completed process), "resumed": (output dir, completed process, checkpoint)}."""
    import os
    import shutil

    reference = f"callbacks.win_rate.reference={eval_games / 'eval_inf.jsonl'}"
    first = tmp / "z3"
    zero3 = ["deepspeed=zero3", "callbacks=win_rate", reference]
    deepspeed = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port",
                 str(29500 + os.getpid() % 1000)]
    gather = [f"callbacks.win_rate.{kv}" for kv in ("every_n_steps=4", "minutes=0.2", "segment_seconds=6",
                                                    "min_words=3", "inference.max_new_tokens=6")]
    r1 = train(common_args(data, ckpt, first) + zero3 + gather, launcher=deepspeed)

    # the resume: in a copy (the first run's files stay as it left them), its win-rate files removed so that the
    # lockstep run makes its own baseline; one 3 s stream, evaluated at the end
    resumed = tmp / "z3_resumed"
    shutil.copytree(first, resumed)
    (resumed / "win_rate.json").unlink()
    shutil.rmtree(resumed / "win_rate")
    ckpt4 = resumed / "checkpoint-4"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(30500 + os.getpid() % 1000)]
    lockstep = [f"callbacks.win_rate.{kv}" for kv in ("minutes=0.05", "max_streams=1", "segment_seconds=3",
                                                      "min_words=1", "inference.max_new_tokens=3",
                                                      "zero3_generation=lockstep")]
    r2 = train(common_args(data, ckpt, resumed) + zero3 + lockstep + [f"resume={ckpt4}"], launcher=torchrun)
    return {"first": (first, r1), "resumed": (resumed, r2, ckpt4)}
