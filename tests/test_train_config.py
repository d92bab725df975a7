"""train.py's command line and config tree: both experiment syntaxes, overrides, launchers' arguments, the recipe
values, batch arithmetic, and bad input as one line + exit 2 (no traceback).

The configs are composed in-process with Hydra's compose API after train.py's own argv normalisation
(`launch.prepare_argv`), and run through the Hydra task body (`run.main_task`, a dry run: nothing is imported or
trained). Two subprocesses remain, where the process boundary is what is tested: train.py's dry run with a
launcher's `--local_rank` and the world size from the environment, and a bad experiment name as one stderr line with
exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streaming_vlm.errors import UserError
from streaming_vlm.training import checkpoints
from streaming_vlm.training.config import batch_arithmetic, resolve_deepspeed
from streaming_vlm.training.launch import normalize_group_adds, prepare_argv, strip_local_rank
from in_process import compose_args, train_task  # tests/in_process.py

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
EXPERIMENTS = ("stage1_2b", "stage1_4b", "stage2_2b", "stage2_4b", "smoke_stage1", "smoke_stage2")


def run_train(args, env=None, cwd=ROOT, timeout=120):
    full_env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        full_env.pop(k, None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def train_in_process(monkeypatch, capsys):
    """train.py's task on composed args, in this process: (exit code, stdout, stderr). WORLD_SIZE as a launcher
    would set it; LOCAL_RANK as `--local_rank` exports it (both restored afterwards)."""
    def run(args, world_size=None):
        for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS", "SUBMITIT_EXECUTOR"):
            monkeypatch.setenv(k, "")  # recorded, so what the task exports (LOCAL_RANK) is removed afterwards
            monkeypatch.delenv(k)
        if world_size:
            monkeypatch.setenv("WORLD_SIZE", str(world_size))
        capsys.readouterr()
        code = train_task(args)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    """Empty files where the real experiments expect their data (dry runs only check that they exist)."""
    root = tmp_path_factory.mktemp("fake_data")
    for sub, name in (("inf", "train_s12w24_with_seeks.jsonl"), ("inf", "fg/train_fg_with_seeks.jsonl"),
                      ("lwx", "train_livecc_with_seeks.jsonl")):
        (root / sub / name).parent.mkdir(parents=True, exist_ok=True)
        (root / sub / name).write_text("")
    stage1 = root / "stage1_out"  # a finished stage-1 run: config + weights
    stage1.mkdir()
    (stage1 / "config.json").write_text("{}")
    (stage1 / "model.safetensors").write_text("")
    return root


def data_args(fake_data, stage: int) -> list[str]:
    args = [f"data.root={fake_data / 'inf'}"]
    if stage == 1:
        args.append(f"extra_data.live_whisperx.root={fake_data / 'lwx'}")
    else:
        args.append(f"init_from={fake_data / 'stage1_out'}")
    return args


def dry_config(out: str) -> str:
    return out.split("\nconfig:\n", 1)[1]


# ---- both experiment syntaxes, overrides, recipe ------------------------------------------------------------------
@pytest.mark.parametrize("form", ["experiment=stage1_2b", "+experiment=stage1_2b"])
def test_both_experiment_syntaxes(form, fake_data, tmp_path, train_in_process):
    code, out, err = train_in_process([form, "dry_run=true", f"output_dir={tmp_path}/o", *data_args(fake_data, 1)],
                                      world_size=8)
    assert code == 0, err
    assert "run_name: stage1_2b" in out
    assert "global batch 512 = 1/device x grad-accum 64 x 8" in out
    assert not (tmp_path / "o").exists(), "a dry run writes nothing"


def test_stage1_recipe_values(fake_data, tmp_path, train_in_process):
    code, out, err = train_in_process(["experiment=stage1_2b", "dry_run=true", f"output_dir={tmp_path}/o",
                                       *data_args(fake_data, 1)], world_size=8)
    assert code == 0, err
    cfg = yaml.safe_load(dry_config(out))
    t = cfg["trainer"]
    assert (t["learning_rate"], t["lr_scheduler_type"], t["warmup_ratio"]) == (1e-5, "cosine", 0.03)
    assert t["optim"].startswith("adamw") and t["num_train_epochs"] == 1
    assert (t["global_batch_size"], t["per_device_train_batch_size"]) == (512, 1)
    assert t["bf16"] is True and t["gradient_checkpointing"] == "auto"  # layers recomputed as memory needs
    assert cfg["deepspeed"]["config"] == "auto" and "ZeRO-3" in out  # 8 processes: ZeRO-3
    assert cfg["model"]["freeze_vision"] is True and cfg["model"]["lora"]["enabled"] is False
    assert cfg["model"]["name_or_path"] == "Qwen/Qwen3-VL-2B-Instruct"
    assert (cfg["data"]["window"], cfg["data"]["stride"], cfg["data"]["fps"]) == (24, 12, 2)
    assert (cfg["data"]["text_sink"], cfg["data"]["text_sliding_window"]) == (512, 512)
    assert cfg["data"]["stage"] == "window" and "live_whisperx" in cfg["extra_data"]  # released pre-cut windows
    assert cfg["data"]["train_file"] == "train_s12w24_with_seeks.jsonl" and cfg["data"]["repeat"] == 2
    assert cfg["extra_data"]["live_whisperx"]["train_file"] == "train_livecc_with_seeks.jsonl"
    assert cfg["eval"]["heldout"]["every_steps"] == 100 and cfg["data"]["eval_file"].startswith("valid_s12w24")
    ds = json.loads((CONFIGS / "deepspeed" / "zero3.json").read_text())["zero_optimization"]
    assert ds["stage"] == 3 and ds["overlap_comm"] and ds["contiguous_gradients"]
    assert ds["stage3_gather_16bit_weights_on_model_save"] is True


def test_loader_workers_auto_use_the_nodes_cpus(fake_data, tmp_path, train_in_process, monkeypatch):
    """`data.num_workers: auto` (the recipe's default): this node's CPUs shared by its training processes, less one
    for each process itself; a number is taken as it is; anything else is one line."""
    cpus = len(os.sched_getaffinity(0))
    args = ["experiment=stage1_2b", "dry_run=true", f"output_dir={tmp_path}/o", *data_args(fake_data, 1)]
    for local in (1, 2):
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
        code, out, err = train_in_process(args, world_size=local)
        assert code == 0, err
        expected = max(0, cpus // local - 1)
        assert f"loader workers {expected} (auto: {cpus} CPUs / {local} process" in out, out
        assert yaml.safe_load(dry_config(out))["data"]["num_workers"] == "auto"
    code, out, err = train_in_process([*args, "data.num_workers=3"], world_size=2)
    assert code == 0 and "loader workers 3 |" in out, err
    code, out, err = train_in_process([*args, "data.num_workers=many"], world_size=2)
    assert code != 0 and "num_workers must be an integer or auto, got 'many'" in err, err


@pytest.mark.parametrize("size", ["2b", "4b"])
def test_stage2_initialises_from_stage1_dir(size, fake_data, tmp_path, train_in_process):
    code, out, err = train_in_process([f"experiment=stage2_{size}", "dry_run=true", f"output_dir={tmp_path}/o",
                                       *data_args(fake_data, 2)], world_size=8)
    assert code == 0, err
    assert f"model {fake_data / 'stage1_out'}" in out  # weights come from init_from, not the hub id
    assert "stage: clip" in out and f"Qwen3-VL-{size.upper()}-Instruct" in out


def test_any_key_overridable(fake_data, tmp_path, train_in_process):
    code, out, err = train_in_process(["experiment=stage1_4b", "dry_run=true", f"output_dir={tmp_path}/o",
                                       "trainer.learning_rate=3e-5", "data.window=16", "model.lora.enabled=true",
                                       "seed=7", "deepspeed=zero2", *data_args(fake_data, 1)], world_size=16)
    assert code == 0, err
    assert "learning_rate: 3.0e-05" in out and "window: 16" in out and "seed: 7" in out
    assert "ZeRO-2" in out and "grad-accum 32 x 16" in out


def test_train_py_dry_run_with_launcher_arguments(fake_data, tmp_path):
    """The script itself (a subprocess): the deepspeed launcher's --local_rank=N is taken out before Hydra and
    exported as LOCAL_RANK, `+experiment=` is accepted, the world size comes from the environment, exit code 0."""
    r = run_train(["--local_rank=3", "+experiment=stage1_4b", "dry_run=true", f"output_dir={tmp_path}/o",
                   "trainer.learning_rate=3e-5", *data_args(fake_data, 1)], env={"WORLD_SIZE": "16"})
    assert r.returncode == 0, r.stderr
    assert "LOCAL_RANK=3" in r.stdout and "WORLD_SIZE=16" in r.stdout
    assert "run_name: stage1_4b" in r.stdout and "learning_rate: 3.0e-05" in r.stdout
    assert "grad-accum 32 x 16" in r.stdout and "ZeRO-3" in r.stdout
    assert not (tmp_path / "o").exists(), "a dry run writes nothing"


def test_argv_helpers(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "")  # recorded, so the LOCAL_RANK strip_local_rank exports is removed afterwards
    monkeypatch.delenv("LOCAL_RANK")
    assert strip_local_rank(["--local_rank=2", "a=1"]) == ["a=1"] and os.environ["LOCAL_RANK"] == "2"
    assert strip_local_rank(["--local-rank", "5", "b=2"]) == ["b=2"] and os.environ["LOCAL_RANK"] == "5"
    assert normalize_group_adds(["+experiment=x", "++experiment=y", "+foo=1"]) == ["experiment=x", "experiment=y",
                                                                                 "+foo=1"]
    with pytest.raises(UserError, match="unknown model 'qwen9'"):
        prepare_argv(["model=qwen9"], CONFIGS)


def test_every_experiment_composes():
    for name in EXPERIMENTS:
        cfg = compose_args([f"experiment={name}"])
        assert cfg.run_name == name
        assert cfg.trainer.per_device_train_batch_size >= 1
    tiny = compose_args(["+experiment=smoke_stage1"])
    assert tiny.model.build_if_missing == "tiny" and tiny.trainer.use_cpu is True


# ---- batch arithmetic ---------------------------------------------------------------------------------------------
def test_batch_arithmetic():
    assert batch_arithmetic(512, 1, None, 8, 3) == (64, 512)
    assert batch_arithmetic(512, 2, None, 16, 3) == (16, 512)
    assert batch_arithmetic(None, 1, 4, 2, None) == (4, 8)
    with pytest.raises(UserError, match="not a multiple"):
        batch_arithmetic(512, 1, None, 3, 3)
    with pytest.raises(UserError, match="gradient_accumulation_steps 8"):
        batch_arithmetic(512, 1, 8, 8, 3)
    assert resolve_deepspeed("zero3")[1] == 3 and resolve_deepspeed("zero2.json")[1] == 2
    assert resolve_deepspeed(None) == (None, None)


# ---- bad input: one line, exit 2, no traceback --------------------------------------------------------------------
def assert_one_line_error(result, *needles):
    code, out, err = result
    assert code == 2, (code, out[-2000:], err[-2000:])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_unknown_experiment(tmp_path, train_in_process):
    r = run_train(["experiment=stage3_7b", f"output_dir={tmp_path}"])  # the script: exit 2, one stderr line
    assert_one_line_error((r.returncode, r.stdout, r.stderr), "unknown experiment", "stage3_7b", "stage1_2b")
    assert_one_line_error(train_in_process(["+experiment=nope", f"output_dir={tmp_path}"]),
                          "unknown experiment 'nope'")


def test_bad_missing_data_file(tmp_path, train_in_process):
    r = train_in_process(["experiment=smoke_stage1", f"data.root={tmp_path}/nowhere", "data.generate=null",
                          f"output_dir={tmp_path}/o"])
    assert_one_line_error(r, "data file not found", "nowhere")
    r = train_in_process(["experiment=stage1_2b", f"data.root={tmp_path}", f"output_dir={tmp_path}/o"])
    assert_one_line_error(r, "data file not found", "train_s12w24_with_seeks.jsonl")


def test_bad_stage2_init_without_checkpoint(fake_data, tmp_path, train_in_process):
    empty = tmp_path / "stage1_killed_early"
    (empty / "checkpoint-20").mkdir(parents=True)  # a checkpoint dir without COMPLETE: not a checkpoint
    r = train_in_process(["experiment=stage2_2b", f"init_from={empty}", f"data.root={fake_data / 'inf'}",
                          f"output_dir={tmp_path}/o"])
    assert_one_line_error(r, "init_from", "holds no model")
    r = train_in_process(["experiment=smoke_stage2", f"init_from={tmp_path}/missing", f"output_dir={tmp_path}/o"])
    assert_one_line_error(r, "init_from", "does not exist")


def test_bad_zero3_batch_arithmetic(fake_data, tmp_path, train_in_process):
    r = train_in_process(["experiment=stage1_2b", *data_args(fake_data, 1), f"output_dir={tmp_path}/o"],
                         world_size=3)
    assert_one_line_error(r, "DeepSpeed ZeRO-3", "global_batch_size=512", "world size (3)")
    r = train_in_process(["experiment=stage1_2b", *data_args(fake_data, 1), "trainer.global_batch_size=500",
                          f"output_dir={tmp_path}/o"], world_size=8)
    assert_one_line_error(r, "impossible batch arithmetic", "500")


# ---- checkpoint discovery -----------------------------------------------------------------------------------------
def _fake_ckpt(root: Path, step: int, complete: bool = True) -> Path:
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        (d / checkpoints.COMPLETE).write_text(json.dumps({"step": step}))
    return d


def test_newest_complete_checkpoint_is_picked(tmp_path):
    _fake_ckpt(tmp_path, 20)
    _fake_ckpt(tmp_path, 40)
    _fake_ckpt(tmp_path, 60, complete=False)  # no marker: copied by hand / foreign: never trusted
    (tmp_path / checkpoints.STAGING / "checkpoint-80").mkdir(parents=True)  # half-written by a killed run
    bad = _fake_ckpt(tmp_path, 100)
    (bad / "trainer_state.json").write_text("{\"global_st")  # truncated state
    assert checkpoints.newest_checkpoint(tmp_path).name == "checkpoint-40"
    checkpoints.clear_staging(tmp_path)
    assert not (tmp_path / checkpoints.STAGING).exists()
    checkpoints.rotate(tmp_path, keep=1)
    assert [p.name for p in checkpoints.complete_checkpoints(tmp_path)] == ["checkpoint-40"]


def test_publish_is_one_rename(tmp_path):
    staged = tmp_path / checkpoints.STAGING / "checkpoint-5"
    staged.mkdir(parents=True)
    (staged / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
    assert checkpoints.newest_checkpoint(tmp_path) is None
    checkpoints.publish(staged, tmp_path, 5, extra_state={"bad_samples_total": {"corrupt_video": 2}})
    assert checkpoints.newest_checkpoint(tmp_path).name == "checkpoint-5" and not staged.exists()
    assert checkpoints.read_extra_state(tmp_path / "checkpoint-5")["bad_samples_total"] == {"corrupt_video": 2}


# ---- wandb mode, eval callback hook -------------------------------------------------------------------------------
def test_wandb_offline_without_key_or_network(monkeypatch, tmp_path):
    """auto: online only with an API key and a server that answers (WANDB_BASE_URL, here a loopback listener)."""
    import socket

    from omegaconf import OmegaConf

    from streaming_vlm.training import tracking

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    try:
        assert tracking.resolve_mode("auto") == "offline"  # a server, but no key
        monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
        assert tracking.resolve_mode("auto") == "online"
    finally:
        server.close()
    assert tracking.resolve_mode("auto") == "offline"  # a key, but nothing listens any more
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment wins (tests, CI)
    assert tracking.resolve_mode("online") == "disabled"
    cfg = OmegaConf.create({"mode": "auto", "project": "p", "entity": None, "group": None, "tags": []})
    assert tracking.setup(cfg, "auto", str(tmp_path), "run")[0] == []
    with pytest.raises(UserError, match="wandb.mode"):
        monkeypatch.delenv("WANDB_MODE")
        tracking.resolve_mode("sometimes")


class _Probe:
    def __init__(self, every: int = 1):
        self.every, self.bound = every, None

    def bind(self, trainer, processor):
        self.bound = (trainer, processor)


def test_eval_callbacks_are_built_from_config():
    from omegaconf import OmegaConf

    from streaming_vlm.training.callbacks import instantiate_callbacks

    cfg = OmegaConf.create({"probe": {"_target_": f"{__name__}._Probe", "every": 5}})
    (cb,) = instantiate_callbacks(cfg, trainer="T", processor="P")
    assert isinstance(cb, _Probe) and cb.every == 5 and cb.bound == ("T", "P")
    assert instantiate_callbacks(OmegaConf.create({})) == []
