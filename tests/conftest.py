"""Shared fixtures: one tiny checkpoint per test session, built by the real factory."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# `make test` runs on 2 pytest-xdist workers (pyproject.toml's addopts). Each worker, and every process it starts,
# computes on one thread: two workers of torch's default 2 threads on 2 cores oversubscribe them, and OpenMP's
# spin-waiting threads then slow both down several-fold.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from streaming_vlm.model.tiny import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-qwen3vl", size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_processor(tiny_ckpt):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_ckpt)


@pytest.fixture(scope="session")
def hub_like_ckpt(tmp_path_factory):
    """The tiny weights (seed 0) with the hub's Qwen3-VL Instruct chat template behaviour and sampling defaults."""
    from streaming_vlm.model.tiny import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("hub") / "hub-like-qwen3vl", size="tiny", seed=0, hub_like=True)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """Generated synthetic football streams for the end-to-end trainings (4 train games, 1 eval game)."""
    from data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(out, train_games=4, eval_games=1, duration=90, eval_duration=60, clips=8, seed=3)
    return out


def _tree(root):
    import hashlib
    from pathlib import Path

    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def reference_run(synth_data, tiny_ckpt, tmp_path_factory):
    """One uninterrupted single-process train.py run, shared (train_runs.reference_args: 6 steps, global batch 4,
    checkpoints every 2 steps, held-out loss before and after). The learning test reads its held-out loss and
    stage 2 starts from its model; the exact-resume tests compare against it; the finished-run tests re-run its
    command. Returns (output dir, completed process, sha256 of every input file (data, checkpoint) before the run)."""
    from train_runs import reference_args, train

    inputs = {**_tree(synth_data), **_tree(tiny_ckpt)}
    out = tmp_path_factory.mktemp("reference") / "run"
    return out, train(reference_args(synth_data, tiny_ckpt, out)), inputs


@pytest.fixture(scope="session")
def eval_games(tmp_path_factory):
    """Two short held-out games (24 s each, no training games) for the win-rate callback's evaluations."""
    from data.synthetic import generate_dataset

    data = tmp_path_factory.mktemp("wr") / "data"
    generate_dataset(data, train_games=0, eval_games=2, eval_duration=24, clips=0, seed=13)
    return data


@pytest.fixture(scope="session")
def zero3_runs(synth_data, tiny_ckpt, eval_games, tmp_path_factory):
    """The reference run's training on 2 CPU ranks under ZeRO-3, twice (train_runs.zero3_runs):
    - `first`: the deepspeed launcher, with the win-rate callback (gather) on `eval_games`: the baseline at step 0,
      evaluations at step 4 and at the end (step 6);
    - `resumed`: a copy of it with its win-rate files removed, resumed from checkpoint-4 under torchrun with
      lockstep generation (the baseline regenerated from the step-4 model, one evaluation at the end).
    Shared by the ZeRO-3 test (test_train_e2e) and the win-rate callback's ZeRO-3 tests (test_eval_callback): one
    multi-rank training checks the partitioned math, the exact resume and both generation modes."""
    from train_runs import zero3_runs as runs

    return runs(synth_data, tiny_ckpt, eval_games, tmp_path_factory.mktemp("zero3"))


# `make test-fast`: unit modules for the edit-test loop: no training, no long stream; at most the tiny checkpoint.
FAST_MODULES = {"test_mrope", "test_eval_segments", "test_eval_win_rate", "test_eval_offline_judge",
                "test_fidelity_metrics", "test_eval_openai_judge", "test_data_chunks", "test_data_sources",
                "test_cuda_config", "test_inference_rotation"}

# How the 2 workers share the suite: a module's tests run together in one worker (its module fixtures are built
# once), and modules that share a costly session fixture form one group. Groups are handed out in collection
# order, so the longest modules come first and the many short ones fill the gaps at the end. The order decides only
# how long the run takes, never what a test checks.
SHARED_GROUPS = {"test_train_e2e": "reference_run", "test_train_finished": "reference_run",
                 "test_eval_callback": "reference_run"}
LONGEST_FIRST = ["test_demo_commentary", "test_slurm_cluster", "test_train_e2e", "test_train_finished",
                 "test_eval_callback", "test_inference_slot_decode", "test_eval_sharded", "test_hub_like_e2e",
                 "test_inference_long", "test_eval_cli", "test_inference_parity", "test_eval_run", "test_viewer",
                 "test_live_source", "test_hub_offline", "test_inference_cli", "test_vision_pretrain", "test_hub_like"]


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        """xdist's per-module scheduling, with SHARED_GROUPS' modules as one unit and units in collection order.
        (Not `--dist loadgroup`: with pytest 9.2 its xdist_group marks no longer reach the scheduler.)"""

        def _split_scope(self, nodeid):
            return SHARED_GROUPS.get(_module(nodeid), _module(nodeid))

    config.option.loadscopereorder = False  # (by default xdist sorts units by their number of tests)
    return ModuleGroups(config, log)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    for item in items:
        if _module(item.nodeid) in FAST_MODULES:
            item.add_marker(pytest.mark.fast)
    items.sort(key=lambda item: rank.get(_module(item.nodeid), len(rank)))  # stable: files keep their order
