"""train.py's steps in this process, for tests of its checks (no subprocess: the Python, torch and Hydra imports of
a fresh interpreter cost seconds a case on a shared CPU). The same public functions train.py runs, in its order:
argv normalisation (`launch.prepare_argv`), the output-folder check, the config composed by Hydra from configs/,
then the Hydra task body (`run.main_task`: a UserError is one stderr line and exit code 2)."""

from __future__ import annotations

import sys
from pathlib import Path

from streaming_vlm.errors import UserError
from streaming_vlm.training.config import check_output_dir_override
from streaming_vlm.training.launch import prepare_argv
from streaming_vlm.training.run import main_task

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_args(args: list[str]):
    """The config train.py would run with for these command-line arguments."""
    from hydra import compose, initialize_config_dir

    overrides = [a for a in prepare_argv(list(args), CONFIGS) if not a.startswith(("hydra.", "hydra/"))]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name="config", overrides=overrides)


def train_task(args: list[str]) -> int:
    """train.py with `args`, in-process: its exit code (output on this process's stdout/stderr)."""
    try:
        check_output_dir_override(prepare_argv(list(args), CONFIGS))
        main_task(compose_args(args))
        return 0
    except SystemExit as exit_:
        return exit_.code
    except UserError as err:  # before Hydra: train.py prints it the same way
        print(f"error: {err}", file=sys.stderr)
        return 2
