"""Run the streaming model over the reference videos and write a predictions file the judge can read.

The engine is `streaming_vlm.inference.inference.streaming_inference` (the CLI's Python API: same engine, stream
template and cache as `python -m streaming_vlm.inference.inference`), imported lazily on the first call.
`load_streaming_inference()` wraps it as `config -> [{"start", "end", "text", ...}, ...]`: the model and processor
are loaded once (per `model_path`) and reused for every video, nothing is printed per second, and the job keys
below are mapped onto `StreamingConfig` (`video_start`/`video_end` -> `start`/`end` when the job has them; a whole
game streams over `--set start=/end=` instead; `title` is not a StreamingConfig key and is not used by the engine).

One job per reference unit:
- Inf-Streams: one job per game video, over the whole video (infinite mode).
- LiveSports-3K-CC: one job per event, over [start, end] with the event's title and pre-event commentary.

The config passed to the engine is `{**overrides, "video_path", "video_start", "video_end", "previous_text", "title"}`
(video_start/video_end are None for a whole game). The rows written are the public per-second format
`{"video", "start", "end", "text"}` (+ "event_id" for LiveSports), i.e. what `predictions.load_outputs` reads.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from streaming_vlm.errors import UserError
from streaming_vlm.eval.jsonl import write_rows
from streaming_vlm.eval.livesports import event_row_from_hf

InferenceFn = Callable[[dict[str, Any]], Sequence[Mapping[str, Any]]]


JOB_KEYS = ("video_start", "video_end", "title")  # job fields that are not StreamingConfig keys


def load_streaming_inference() -> InferenceFn:
    """`config -> segments` over `streaming_inference`, loading each `model_path` once."""
    try:
        from streaming_vlm.inference.inference import streaming_inference
    except ImportError as err:
        raise UserError(
            "'generate' needs streaming_vlm.inference.inference.streaming_inference, which cannot be imported "
            f"({err})"
        ) from None
    loaded: dict[tuple, tuple] = {}

    def infer(job_config: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
        from streaming_vlm.inference.config import StreamingConfig
        from streaming_vlm.model.loading import load_model, load_processor, resolve_device

        config = {k: v for k, v in job_config.items() if k not in JOB_KEYS}
        # a job's own span (a LiveSports event) wins; a whole game streams over --set start/end when given
        if job_config.get("video_start") is not None:
            config["start"] = float(job_config["video_start"])
        if job_config.get("video_end") is not None:
            config["end"] = job_config["video_end"]
        config.setdefault("progress", False)
        # the rows are the output: no cues on stdout, no VTT/JSON files per video
        config.update(output_path=os.devnull, emit_json=None, interactive=False)
        cfg = StreamingConfig.from_any(config)  # unknown keys / bad values: one line, before any weights load
        if not cfg.model_path:
            raise UserError("generate needs a model: --model_path DIR (or --set model_path=DIR)")
        key = (cfg.model_path, cfg.attn_implementation, cfg.dtype, cfg.device)
        if key not in loaded:
            device = resolve_device(cfg.device)
            processor = load_processor(cfg.model_path)
            model = load_model(cfg.model_path, attn_implementation=cfg.attn_implementation, dtype=cfg.dtype,
                               device=device)
            loaded[key] = (model, processor)
        model, processor = loaded[key]
        return streaming_inference(cfg, model=model, processor=processor)["segments"]

    return infer


def resolve_video(video: str, video_root: str | os.PathLike | None) -> str:
    """`video_root/video`; a name without a suffix (a LiveSports video id) also tries `.mp4`."""
    path = Path(video_root) / video if video_root else Path(video)
    if not path.exists() and not path.suffix and path.with_suffix(".mp4").exists():
        path = path.with_suffix(".mp4")
    return str(path)


def generation_jobs(reference_rows: Iterable[Mapping[str, Any]], protocol: str) -> list[dict[str, Any]]:
    """What to run: [{"video", "event_id", "video_start", "video_end", "previous_text", "title"}]."""
    jobs, seen = [], set()
    for number, row in enumerate(reference_rows, start=1):
        if protocol == "livesports":
            event = event_row_from_hf(row, f"LiveSports row {number}") if "event_asr_text" in row else row
            jobs.append(
                {
                    "video": event["video"],
                    "event_id": event["event_id"],
                    "video_start": float(event["start"]),
                    "video_end": float(event["end"]),
                    "previous_text": event.get("preasr", ""),
                    "title": event.get("title", ""),
                }
            )
        elif row.get("video") not in seen:  # a game split over several rows is still one stream
            seen.add(row.get("video"))
            jobs.append(
                {
                    "video": row.get("video"),
                    "event_id": None,
                    "video_start": None,
                    "video_end": None,
                    "previous_text": "",
                    "title": str(row.get("title") or ""),
                }
            )
    return jobs


def generate_predictions(
    jobs: Sequence[Mapping[str, Any]],
    out_path: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    video_root: str | os.PathLike | None = None,
    inference: InferenceFn | None = None,
) -> int:
    """Run the engine on every job and write prediction rows to `out_path`. Returns the number of rows."""
    inference = inference or load_streaming_inference()
    rows = []
    for job in jobs:
        config = {
            **(overrides or {}),
            "video_path": resolve_video(job["video"], video_root),
            "video_start": job["video_start"],
            "video_end": job["video_end"],
            "previous_text": job["previous_text"],
            "title": job["title"],
        }
        t0 = time.perf_counter()
        segments = inference(config)
        for seg in segments:
            row = {"video": job["video"], "start": seg["start"], "end": seg["end"], "text": seg.get("text", "")}
            if job["event_id"] is not None:
                row["event_id"] = job["event_id"]
            rows.append(row)
        spoken = sum(1 for seg in segments if str(seg.get("text", "")).strip())
        label = job["video"] if job["event_id"] is None else f"{job['video']} event {job['event_id']}"
        print(f"generated {label}: {len(segments)} rows ({spoken} with commentary) in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    write_rows(out_path, rows)
    return len(rows)
