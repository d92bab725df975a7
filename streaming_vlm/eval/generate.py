"""Hook: run the streaming model over the reference videos and write a predictions file the judge can read.

The engine is `streaming_vlm.inference.inference.streaming_inference(config) -> [{"start", "end", "text"}, ...]`,
written elsewhere in the project. It is imported lazily, on the first call, so the evaluation works (and this
module imports) without it; until it exists `load_streaming_inference` raises a one-line `UserError`.

One job per reference unit:
- Inf-Streams: one job per game video, over the whole video (infinite mode).
- LiveSports-3K-CC: one job per event, over [start, end] with the event's title and pre-event commentary.

The config passed to the engine is `{**overrides, "video_path", "video_start", "video_end", "previous_text", "title"}`
(video_start/video_end are None for a whole game). The rows written are the public per-second format
`{"video", "start", "end", "text"}` (+ "event_id" for LiveSports), i.e. what `predictions.load_outputs` reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from streaming_vlm.errors import UserError
from streaming_vlm.eval.jsonl import write_rows
from streaming_vlm.eval.livesports import event_row_from_hf

InferenceFn = Callable[[dict[str, Any]], Sequence[Mapping[str, Any]]]


def load_streaming_inference() -> InferenceFn:
    try:
        from streaming_vlm.inference.inference import streaming_inference
    except ImportError as err:
        raise UserError(
            "'generate' needs streaming_vlm.inference.inference.streaming_inference, which cannot be imported "
            f"yet ({err})"
        ) from None
    return streaming_inference


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
        for seg in inference(config):
            row = {"video": job["video"], "start": seg["start"], "end": seg["end"], "text": seg.get("text", "")}
            if job["event_id"] is not None:
                row["event_id"] = job["event_id"]
            rows.append(row)
    write_rows(out_path, rows)
    return len(rows)
