"""Checkpoint layout, atomic publication and resume discovery.

Layout of a run's `output_dir`:

    checkpoint-20/            complete checkpoints only (model, optimizer, scheduler, RNG, trainer state, our state)
    checkpoint-40/
    .staging/checkpoint-60/   a checkpoint being written; never read by resume, wiped at the next start
    config.json, model.safetensors, processor files ...   the final model, written last (config.json moved in last)
    TRAINING_COMPLETE         written after the final model

A checkpoint is written in full under `.staging/`, a `COMPLETE` marker (holding the step) is fsynced inside it, and
only then is the directory renamed into place. Rename within one filesystem is atomic, so a `checkpoint-N/` that
exists in `output_dir` is whole, whatever instant the process was killed at. Resume also re-checks the marker and
the trainer state, so a directory copied in by hand without them is ignored rather than trusted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

STAGING = ".staging"
COMPLETE = "COMPLETE"
TRAINING_COMPLETE = "TRAINING_COMPLETE"
STATE_FILE = "streaming_state.json"  # our own extra state (bad-sample counters) inside each checkpoint
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


def _fsync_dir(path: str | os.PathLike) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_step(path: str | os.PathLike) -> int | None:
    m = _CKPT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def is_complete(path: str | os.PathLike) -> bool:
    """A published checkpoint: marker with the matching step, and a parseable trainer state."""
    path = Path(path)
    step = checkpoint_step(path)
    if step is None or not path.is_dir():
        return False
    try:
        marker = json.loads((path / COMPLETE).read_text())
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return marker.get("step") == step and state.get("global_step") == step


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if checkpoint_step(p) is not None and is_complete(p)]
    return sorted(found, key=lambda p: checkpoint_step(p))


def newest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def clear_staging(output_dir: str | os.PathLike) -> None:
    """Remove half-written checkpoints left by a killed run (call on the main process, before training)."""
    staging = Path(output_dir) / STAGING
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)


def publish(staged: str | os.PathLike, output_dir: str | os.PathLike, step: int, extra_state: dict | None = None) -> Path:
    """Mark a fully written staging checkpoint complete and rename it into `output_dir` (main process only)."""
    staged, output_dir = Path(staged), Path(output_dir)
    if extra_state is not None:
        write_json_atomic(staged / STATE_FILE, extra_state)
    write_json_atomic(staged / COMPLETE, {"step": step})
    for p in staged.rglob("*"):  # make the data durable before the rename makes it visible
        if p.is_file():
            try:
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            except OSError:
                pass
    _fsync_dir(staged)
    target = output_dir / staged.name
    trash = None
    if target.exists():  # re-saving a step (e.g. the last step after a resume): swap, then drop the old one
        trash = output_dir / STAGING / f"{staged.name}.old{os.getpid()}"
        os.rename(target, trash)
    os.rename(staged, target)
    _fsync_dir(output_dir)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return target


def rotate(output_dir: str | os.PathLike, keep: int | None) -> None:
    """Keep the newest `keep` complete checkpoints (None or <= 0: keep all)."""
    if not keep or keep <= 0:
        return
    for old in complete_checkpoints(output_dir)[:-keep]:
        # Un-publish first (rename away, atomic), then delete, so a crash mid-delete leaves no partial checkpoint.
        trash = Path(output_dir) / STAGING / f"{old.name}.rotated{os.getpid()}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(old, trash)
        shutil.rmtree(trash, ignore_errors=True)


def read_extra_state(checkpoint: str | os.PathLike) -> dict:
    try:
        return json.loads((Path(checkpoint) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def has_model_weights(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and any((path / w).is_file() for w in WEIGHT_FILES[:2])


def resolve_init_checkpoint(path: str | os.PathLike) -> Path | None:
    """Where stage 2 loads from: a finished run dir / HF model dir, else its newest complete checkpoint."""
    path = Path(path)
    if not path.is_dir():
        return None
    if has_model_weights(path):
        return path
    if has_model_weights(path / "merged"):  # a LoRA run saved with model.lora.merge_on_save
        return path / "merged"
    ckpt = newest_checkpoint(path)
    if ckpt is not None and has_model_weights(ckpt):
        return ckpt
    return None
