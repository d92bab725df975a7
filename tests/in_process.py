"""Entry points run in this process, for tests of their checks and exit codes: a fresh interpreter's imports (Python,
torch, transformers, Hydra) cost seconds a case on a shared CPU. Each suite keeps one real subprocess per entry point
for the process boundary itself.

- `run_module(["-m", module, *args])`: what `python -m module args` runs, the module's (or package's __main__'s)
  `main(argv)`; its exit code.
- `train_task(args)`: train.py's steps, the same public functions in its order: argv normalisation
  (`launch.prepare_argv`), the output-folder check, the config composed by Hydra from configs/, then the Hydra task
  body (`run.main_task`: a UserError is one stderr line and exit code 2).
"""

from __future__ import annotations

import importlib
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


def run_module(argv: list[str]) -> int:
    """`python -m MODULE ARGS` in this process (argv: ["-m", MODULE, *ARGS]): its exit code."""
    assert argv[0] == "-m", argv
    module = importlib.import_module(argv[1])
    if not hasattr(module, "main"):  # a package: `python -m` runs its __main__
        module = importlib.import_module(f"{argv[1]}.__main__")
    try:
        code = module.main([str(a) for a in argv[2:]])
    except SystemExit as exit_:
        code = exit_.code
    return code or 0
