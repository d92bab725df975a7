"""SLURM for real: a one-node cluster (munged + slurmctld + slurmd, tests/slurm_cluster.py) runs the launch paths.

- the stage-1 script (`SLURM=1 MODEL_SIZE=tiny`) submits scripts/slurm/train.sbatch: 2 CPU ranks (derived from the
  CPUs SLURM granted, no GPUS_PER_NODE) train under ZeRO-3, the job ends COMPLETED, the model loads; the stage-2
  script then submits a run initialised from it;
- preemption: USR1 to the batch script mid-run (what `--signal=B:USR1@300` delivers) -> the script's trap requeues
  the job -> it restarts, resumes from the newest complete checkpoint and ends with the uninterrupted run's weights;
- the Hydra submitit launcher submits to the same cluster; USR2 (submitit's timeout signal) -> submitit requeues
  it as timed out -> it resumes and finishes with the same weights;
- a bad override fails the job fast, with the error in its log, and it is not requeued.

SLURM holds a requeued job for a fixed two minutes before it may start again (EligibleTime); the tests lift that
hold with `scontrol update StartTime=now`, an admin action that leaves the requeue path itself untouched.
Runs are shared: the stage-1 job is the uninterrupted reference of both requeue tests.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from streaming_vlm.training import checkpoints
from tests.slurm_cluster import SlurmCluster, free_port, unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
_REASON = unavailable_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]
JOB_TIMEOUT = 420


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def slurm():
    """The cluster for the session. A SIGTERM to the test run (e.g. `timeout`) becomes KeyboardInterrupt, so pytest
    still tears the cluster down; if the run dies anyway, the daemons die with it (see SlurmCluster)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with SlurmCluster(cpus=2) as cluster:
            yield cluster
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    from data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("slurm_synth") / "data"
    generate_dataset(out, train_games=2, eval_games=1, duration=60, eval_duration=30, clips=4, seed=3)
    return out


@pytest.fixture(scope="module")
def env(slurm):
    """What a user's shell would hold when submitting: the cluster's SLURM_CONF, this venv's torchrun."""
    e = dict(slurm.env)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS", "GPUS_PER_NODE"):
        e.pop(k, None)
    e.update(TORCHRUN=str(Path(sys.executable).parent / "torchrun"), RDZV_PORT=str(free_port()),
             WANDB_MODE="disabled", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
             PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return e


def zero3_args(data, ckpt, steps=3):
    """2 ranks x 1 sample a step under ZeRO-3, a checkpoint at step 2, the final model at `steps`."""
    return [f"data.root={data}", "data.generate=null", f"model.name_or_path={ckpt}", "eval=none", "deepspeed=zero3",
            f"trainer.max_steps={steps}", "trainer.save_steps=2", "trainer.global_batch_size=2"]


def submitted_id(stdout: str) -> str:
    m = re.search(r"Submitted batch job (\d+)", stdout)
    assert m, stdout
    return m.group(1)


def sbatch(env, log: Path, args: list[str], sbatch_opts=("--gpus-per-node=0", "--cpus-per-task=2")) -> str:
    r = subprocess.run(["sbatch", *sbatch_opts, f"--output={log}", "scripts/slurm/train.sbatch", *args], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return submitted_id(r.stdout)


def wait_for(predicate, what: str, timeout: float = JOB_TIMEOUT, poll: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def release_requeued(slurm: SlurmCluster, job_id: str) -> None:
    """Wait until the requeued job is held for its EligibleTime, then let it start now."""
    wait_for(lambda: slurm.job(job_id).get("JobState") == "PENDING", f"job {job_id} requeued (PENDING)", 120)
    slurm.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])


def load_state(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    x, y = load_state(a), load_state(b)
    assert x.keys() == y.keys()
    differ = [k for k in x if not torch.equal(x[k], y[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def job_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# ---- sbatch through the stage-1 script: the shared uninterrupted reference run ------------------------------------
@pytest.fixture(scope="module")
def stage1(slurm, env, synth_data, tiny_ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage1")
    out, log = tmp / "run", tmp / "job.out"
    e = {**env, "SLURM": "1", "MODEL_SIZE": "tiny", "GPUS_PER_NODE": "0", "MODEL_PATH": str(tiny_ckpt),
         "DATA_ROOT": str(synth_data), "OUTPUT_DIR": str(out), "SBATCH_ARGS": f"--cpus-per-task 2 --output {log}"}
    extra = [a for a in zero3_args(synth_data, tiny_ckpt) if not a.startswith(("data.root", "model.name_or_path"))]
    start = time.time()
    r = subprocess.run(["bash", "scripts/sft_stage_1.sh", *extra], cwd=ROOT, env=e, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    job_id = submitted_id(r.stdout)
    info = slurm.wait_job(job_id, JOB_TIMEOUT)
    return {"id": job_id, "info": info, "out": out, "log": job_log(log), "seconds": time.time() - start}


def test_stage1_script_sbatch_trains_zero3_on_two_cpu_ranks_and_model_loads(stage1):
    from transformers import Qwen3VLForConditionalGeneration

    info, out, log = stage1["info"], stage1["out"], stage1["log"]
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, log[-3000:])
    assert info["Restarts"] == "0" and info["JobName"] == "sft-stage1-tiny"
    assert info["Command"].endswith("scripts/slurm/train.sbatch")
    # no GPU granted, no GPUS_PER_NODE: one rank per CPU of the task
    assert "1 x 2 CPU ranks (no GPU granted: one rank per task CPU)" in log
    assert "world size 2 | global batch 2 = 1/device x grad-accum 1 x 2 | ZeRO-3" in log, log[-3000:]
    assert (out / checkpoints.TRAINING_COMPLETE).exists() and checkpoints.is_complete(out / "checkpoint-2")
    model = Qwen3VLForConditionalGeneration.from_pretrained(out)  # gathered from the ZeRO-3 partitions
    assert model.config.text_config.hidden_size == 128
    print(f"stage-1 job: {stage1['seconds']:.0f}s")


def test_stage2_script_submits_and_initialises_from_stage1(slurm, env, stage1, synth_data, tmp_path):
    out, log = tmp_path / "run", tmp_path / "job.out"
    e = {**env, "SLURM": "1", "MODEL_SIZE": "tiny", "GPUS_PER_NODE": "0", "INIT_FROM": str(stage1["out"]),
         "DATA_ROOT": str(synth_data), "OUTPUT_DIR": str(out), "SBATCH_ARGS": f"--cpus-per-task 1 --output {log}"}
    r = subprocess.run(["bash", "scripts/sft_stage_2.sh", "data.generate=null", "data.min_words=4",
                        "trainer.max_steps=1", "trainer.global_batch_size=1", "trainer.warmup_ratio=0"], cwd=ROOT, env=e,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    info = slurm.wait_job(submitted_id(r.stdout), JOB_TIMEOUT)
    text = job_log(log)
    assert info["JobState"] == "COMPLETED" and info["JobName"] == "sft-stage2-tiny", (info, text[-3000:])
    assert "1 x 1 CPU ranks" in text and f"model {stage1['out']}" in text  # initialised from stage 1's output
    assert (out / checkpoints.TRAINING_COMPLETE).exists()
    before, after = load_state(stage1["out"]), load_state(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # and it trained


# ---- preemption: USR1 to the batch script -> requeue -> exact resume ----------------------------------------------
def test_usr1_requeues_job_which_resumes_to_the_uninterrupted_weights(slurm, env, stage1, synth_data, tiny_ckpt,
                                                                        tmp_path):
    out, log = tmp_path / "run", tmp_path / "job.out"
    job_id = sbatch(env, log, [f"experiment=smoke_stage1", f"output_dir={out}", *zero3_args(synth_data, tiny_ckpt)])
    wait_for(lambda: checkpoints.is_complete(out / "checkpoint-2") or slurm.job(job_id).get("JobState") not in
             ("PENDING", "RUNNING"), "checkpoint-2")
    assert slurm.job(job_id)["JobState"] == "RUNNING", job_log(log)[-3000:]
    assert not (out / checkpoints.TRAINING_COMPLETE).exists()
    slurm.run(["scancel", "--batch", "--signal=USR1", job_id])  # what --signal=B:USR1@300 sends before the limit
    release_requeued(slurm, job_id)
    info = slurm.wait_job(job_id, JOB_TIMEOUT)
    text = job_log(log)  # --open-mode=append: both runs of the job
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", (info, text[-3000:])
    assert text.count("caught USR1: the job will be requeued") == 1
    assert f"resuming from {out / 'checkpoint-2'}" in text
    assert_same_weights(stage1["out"], out)


# ---- Hydra submitit launcher: submit, timeout signal -> requeue -> resume -----------------------------------------
def test_submitit_launcher_submits_and_requeues_on_timeout(slurm, env, stage1, synth_data, tiny_ckpt, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=slurm", "experiment=smoke_stage1", f"output_dir={out}",
           *zero3_args(synth_data, tiny_ckpt), "hydra.launcher.gpus_per_node=0", "hydra.launcher.tasks_per_node=2",
           "hydra.launcher.cpus_per_task=1", "hydra.launcher.partition=test", "hydra.launcher.timeout_min=10",
           "hydra.launcher.signal_delay_s=30", "hydra.launcher.max_num_timeout=3"]
    job_id = None
    with open(tmp_path / "launcher.log", "w") as launcher_log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=launcher_log, stderr=subprocess.STDOUT)
        try:
            job_id = wait_for(lambda: slurm.run(["squeue", "-h", "-n", "smoke_stage1", "-o", "%i"],
                                                check=False).stdout.strip() or proc.poll() is not None,
                              "the submitit job", 120)
            assert proc.poll() is None, (tmp_path / "launcher.log").read_text()
            wait_for(lambda: checkpoints.is_complete(out / "checkpoint-2") or proc.poll() is not None, "checkpoint-2")
            assert proc.poll() is None, (tmp_path / "launcher.log").read_text()
            # submitit's timeout signal (slurm sends it signal_delay_s before the limit) to the job's tasks
            slurm.run(["scancel", "--signal=USR2", job_id])
            release_requeued(slurm, job_id)
            rc = proc.wait(timeout=JOB_TIMEOUT)  # the launcher returns once the job wrote its result
        finally:
            if proc.poll() is None:
                proc.kill()
                if isinstance(job_id, str):
                    slurm.run(["scancel", job_id], check=False)
    launcher = (tmp_path / "launcher.log").read_text()
    assert rc == 0, launcher[-3000:]
    info = slurm.wait_job(job_id, 120)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", info
    logs = "\n".join(p.read_text(errors="replace") for p in (out / "submitit").rglob("*.out"))
    assert "this job is timed-out" in logs and "Requeued job" in logs and "(2 remaining timeouts)" in logs, logs[-3000:]
    assert "resuming from" in logs and "world size 2" in logs
    submission = next((out / "submitit").rglob("*_submission.sh")).read_text()
    for line in ("#SBATCH --requeue", "#SBATCH --signal=USR2@30", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --partition=test", "#SBATCH --time=10", "#SBATCH --job-name=smoke_stage1",
                 "export OMP_NUM_THREADS=1"):
        assert line in submission, (line, submission)
    assert_same_weights(stage1["out"], out)


# ---- a bad override: fails fast, error in the log, no requeue loop ------------------------------------------------
def test_bad_override_fails_fast_with_error_in_log_and_is_not_requeued(slurm, env, synth_data, tiny_ckpt, tmp_path):
    log = tmp_path / "job.out"
    job_id = sbatch(env, log, ["experiment=smoke_stage9", f"output_dir={tmp_path / 'run'}",
                               *zero3_args(synth_data, tiny_ckpt)])
    info = slurm.wait_job(job_id, 300)  # the queue may still be draining the previous test's job
    text = job_log(log)
    assert info["JobState"] == "FAILED" and info["ExitCode"] != "0:0", (info, text)
    assert "error: unknown experiment 'smoke_stage9'" in text, text
    h, m, sec = (int(x) for x in info["RunTime"].split(":"))
    assert h * 3600 + m * 60 + sec < 60, info["RunTime"]  # fails at argument checking, before any model loads
    time.sleep(3)  # long enough for a requeue to show
    info = slurm.job(job_id)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", info
