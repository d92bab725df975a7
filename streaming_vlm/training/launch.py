"""Everything `train.py` does before Hydra parses the command line.

- `+experiment=X` and `experiment=X` both select an experiment (the defaults list declares `experiment: null`).
- The `deepspeed` launcher appends `--local_rank=N` to the script's arguments; `@hydra.main` rejects it. It is
  removed here and exported as `LOCAL_RANK` (torchrun already sets the env var).
- Config-group choices on the command line (`experiment=nope`, `model=...`) are checked against `configs/` so a
  typo is one clear line instead of Hydra's multi-line report.
- SLURM tasks started by submitit (`hydra/launcher=slurm`, one task per GPU) get the torch.distributed env vars
  (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK) from the job environment.
- Ranks other than 0 write no Hydra output files (they would all write the same ones); a dry run writes none.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from streaming_vlm.errors import UserError

_LOCAL_RANK_RE = re.compile(r"^--local[_-]rank(?:=(\d+))?$")
# Groups whose options are files under configs/<group>/ (hydra/* groups may come from plugins, so they are skipped).
_CHECKED_GROUPS = ("model", "data", "trainer", "eval", "callbacks", "experiment", "deepspeed")


def strip_local_rank(argv: list[str]) -> list[str]:
    """Remove `--local_rank=N` / `--local_rank N` / `--local-rank=N`; export LOCAL_RANK."""
    out, i = [], 0
    while i < len(argv):
        m = _LOCAL_RANK_RE.match(argv[i])
        if m:
            value = m.group(1)
            if value is None and i + 1 < len(argv) and argv[i + 1].isdigit():
                value = argv[i + 1]
                i += 1
            if value is not None:
                os.environ["LOCAL_RANK"] = value
            i += 1
            continue
        out.append(argv[i])
        i += 1
    return out


def group_options(config_dir: str | os.PathLike, group: str) -> list[str]:
    d = Path(config_dir) / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def check_group_choices(argv: list[str], config_dir: str | os.PathLike) -> None:
    """`group=option` / `+group=option` / `override`-style args must name an existing option file."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in _CHECKED_GROUPS:
            continue
        if key == "experiment" and value in ("null", ""):
            continue
        options = group_options(config_dir, key)
        for choice in value.strip("[]").split(","):  # multirun sweeps: experiment=a,b; lists: callbacks=[a,b]
            if choice not in options:
                raise UserError(f"unknown {key} {choice!r}; choose one of: {', '.join(options)} "
                                f"(files in {Path(config_dir) / key}/)")


def global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit() and (var == "RANK" or _under_submitit()):
            return int(os.environ[var])
    return 0


def _under_submitit() -> bool:
    return bool(os.environ.get("SUBMITIT_EXECUTOR")) and bool(os.environ.get("SLURM_JOB_ID"))


def export_submitit_distributed_env() -> None:
    """One process per GPU under the submitit SLURM launcher: derive the env:// rendezvous from the job."""
    if "RANK" in os.environ or not _under_submitit():
        return
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def normalize_group_adds(argv: list[str]) -> list[str]:
    """`+experiment=x` -> `experiment=x`: the defaults list declares `experiment: null`, so Hydra would otherwise
    reject the `+` form ("Multiple values for experiment"); the README and the seed card use it."""
    out = []
    for arg in argv:
        m = re.match(r"^\+{1,2}(experiment)=(.*)$", arg)
        out.append(f"{m.group(1)}={m.group(2)}" if m else arg)
    return out


def prepare_argv(argv: list[str], config_dir: str | os.PathLike) -> list[str]:
    """Normalise `sys.argv[1:]` for Hydra; raises UserError for unknown group options."""
    argv = normalize_group_adds(strip_local_rank(argv))
    check_group_choices(argv, config_dir)
    if "--multirun" not in argv and "-m" not in argv:
        export_submitit_distributed_env()
    quiet = global_rank() > 0 or any(a in ("dry_run=true", "dry_run=True", "dry_run=1") for a in argv)
    if quiet and not any(a.startswith(("hydra.output_subdir=", "hydra/job_logging=")) for a in argv):
        # other ranks would rewrite rank 0's files; a dry run writes nothing at all (no run dir either)
        argv = argv + ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
        if global_rank() == 0:
            argv.append("hydra.run.dir=.")
    return argv
