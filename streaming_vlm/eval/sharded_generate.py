"""`eval generate` over many videos: the jobs split over N workers, each finished video on disk at once, resumable.

Layout: next to the output, `<out>.parts/` holds `manifest.json` (the jobs and engine settings this run was started
with) and one `NNNNN.jsonl` per finished job (its index in the job list), each written atomically (temp file +
rename), so a kill loses at most the videos being streamed at that moment. A rerun of the same command skips the
jobs whose part exists; a rerun with other jobs or settings is refused (one line) instead of mixing two runs. When
every part exists they are concatenated in job order into `<out>` (atomically) and the parts folder is removed.

Because parts are merged in job order and each video is streamed by a fresh engine state, the merged file does not
depend on the number of workers or on which worker ran which video (with greedy decoding, temperature 0; sampling
is seeded per run, not per video, so sampled runs differ with the split).

Workers:
- `workers == 1` and at most one device: the jobs run in this process.
- `--workers N` or `--devices 0,1,...`: N processes started with `spawn` (each opens its own decord handles and
  loads the model once); with devices, worker k runs on `cuda:<devices[k]>`. The remaining jobs are dealt round
  robin. If a worker dies, the others finish their jobs, then the run stops with one line saying how many videos
  are kept; the rerun resumes.
- Under torchrun (WORLD_SIZE > 1): every rank takes the missing jobs whose index is rank modulo WORLD_SIZE, on
  `cuda:<LOCAL_RANK>` when CUDA is present; a gloo barrier waits for all ranks, rank 0 merges.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from streaming_vlm.errors import UserError
from streaming_vlm.eval.generate import InferenceFn, job_rows, load_streaming_inference
from streaming_vlm.eval.jsonl import read_rows_lenient, write_rows
from streaming_vlm.output_files import write_atomic

UNTRACKED_SETTINGS = ("device", "progress")  # where a job runs does not change what it is


def parts_dir(out_path: str | os.PathLike) -> Path:
    out = Path(out_path)
    return out.with_name(out.name + ".parts")


def part_path(parts: Path, index: int) -> Path:
    return parts / f"{index:05d}.jsonl"


def _manifest(jobs, overrides, video_root) -> dict[str, Any]:
    settings = {k: v for k, v in (overrides or {}).items() if k not in UNTRACKED_SETTINGS}
    return {"jobs": [dict(job) for job in jobs], "settings": settings,
            "video_root": None if video_root is None else str(video_root)}


def prepare_parts(out_path, jobs, overrides, video_root) -> Path:
    """Create (or check) the parts folder of this run; return it."""
    parts, manifest = parts_dir(out_path), _manifest(jobs, overrides, video_root)
    path = parts / "manifest.json"
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != json.loads(json.dumps(manifest)):
            raise UserError(f"{parts} holds a run with other videos or settings: delete it, or rerun that command")
        return parts
    if not parts.parent.is_dir():
        raise UserError(f"output folder does not exist: {parts.parent}")
    parts.mkdir(exist_ok=True)
    write_atomic(path, json.dumps(manifest, indent=1) + "\n")  # per-process temp name: torchrun ranks may race
    return parts


def missing_jobs(parts: Path, count: int) -> list[int]:
    return [i for i in range(count) if not part_path(parts, i).exists()]


def run_jobs(indices, jobs, overrides, video_root, parts: Path, inference: InferenceFn | None = None) -> None:
    """Stream the given jobs one after another, writing each one's part when it is done."""
    inference = inference or load_streaming_inference()
    for i in indices:
        write_rows(part_path(parts, i), job_rows(jobs[i], inference, overrides, video_root))


def _worker(rank: int, indices, jobs, overrides, video_root, parts: str) -> None:
    """Entry of a spawned worker: bad input is one line on stderr and exit code 2, as in the parent."""
    from streaming_vlm.errors import cli_entry

    @cli_entry
    def main() -> int:
        run_jobs(indices, jobs, overrides, video_root, Path(parts))
        return 0

    sys.exit(main())


def _spawn(todo, jobs, overrides, video_root, parts: Path, workers: int, devices: Sequence[str] | None) -> None:
    context = multiprocessing.get_context("spawn")
    processes = []
    for rank in range(workers):
        share = todo[rank::workers]
        if not share:
            continue
        settings = dict(overrides or {})
        if devices:
            settings["device"] = f"cuda:{devices[rank]}"
        process = context.Process(target=_worker, args=(rank, share, jobs, settings, video_root, str(parts)),
                                  name=f"eval-generate-{rank}")
        process.start()
        where = settings.get("device") or "default device"
        print(f"worker {rank} (pid {process.pid}, {where}): {len(share)} videos", file=sys.stderr, flush=True)
        processes.append((rank, process))
    failed = []
    for rank, process in processes:
        process.join()
        if process.exitcode != 0:
            how = f"signal {-process.exitcode}" if process.exitcode < 0 else f"exit code {process.exitcode}"
            failed.append(f"worker {rank} ({how})")
    if failed:
        done = len(jobs) - len(missing_jobs(parts, len(jobs)))
        raise UserError(f"{', '.join(failed)} failed; {done}/{len(jobs)} videos are kept in {parts}: "
                        "rerun the same command to resume")


def _torchrun_rank() -> tuple[int, int, int] | None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def _merge(out_path, parts: Path, count: int) -> int:
    rows = []
    for i in range(count):
        parsed, bad = read_rows_lenient(part_path(parts, i), "generated part")
        if bad:
            raise UserError(f"{part_path(parts, i)} is damaged (line {bad[0]}): delete it and rerun to redo that video")
        rows.extend(row for _, row in parsed)
    write_rows(out_path, rows)
    shutil.rmtree(parts)
    return len(rows)


def generate_sharded(
    jobs: Sequence[Mapping[str, Any]],
    out_path: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    video_root: str | os.PathLike | None = None,
    *,
    workers: int = 1,
    devices: Sequence[str] | None = None,
    inference: InferenceFn | None = None,
) -> int | None:
    """Run what is missing, merge, return the number of rows written (None on a torchrun rank other than 0)."""
    if workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    if devices:
        workers = len(devices)
    jobs = list(jobs)
    parts = prepare_parts(out_path, jobs, overrides, video_root)
    todo = missing_jobs(parts, len(jobs))
    if len(todo) < len(jobs):
        print(f"resuming: {len(jobs) - len(todo)}/{len(jobs)} videos already generated in {parts}",
              file=sys.stderr, flush=True)
    torchrun = _torchrun_rank()
    if torchrun is not None:
        import torch
        import torch.distributed as dist

        rank, world, local_rank = torchrun
        settings = dict(overrides or {})
        if torch.cuda.is_available() and "device" not in settings:
            settings["device"] = f"cuda:{local_rank}"
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        # dealt by job index, not by position in `todo`: ranks that list the parts at different moments agree
        run_jobs([i for i in todo if i % world == rank], jobs, settings, video_root, parts, inference)
        dist.barrier()
        if rank != 0:
            return None
        missing = missing_jobs(parts, len(jobs))
        if missing:
            raise UserError(f"{len(missing)} videos were not generated: rerun the same command to resume")
        return _merge(out_path, parts, len(jobs))
    if workers == 1:
        settings = dict(overrides or {})
        if devices:
            settings["device"] = f"cuda:{devices[0]}"
        run_jobs(todo, jobs, settings, video_root, parts, inference)
    elif todo:
        _spawn(todo, jobs, overrides, video_root, parts, workers, devices)
    return _merge(out_path, parts, len(jobs))
