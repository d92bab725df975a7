"""LiveSports-3K-CC events as judge segments.

The HF dataset `stdKonjac/LiveSports-3K` (config `LiveSports_3K_CC`, split `test`) has one row per event:
`video_id, event_id, begin, end, event_title, preasr_text, event_asr_text`. Our event rows rename those fields to
the names the Inf-Streams rows use:

    {"video": video_id, "event_id": str(event_id), "start": begin, "end": end,
     "title": event_title, "preasr": preasr_text, "reference": event_asr_text}

`data/livesports.py` writes such rows from the HF dataset; `livesports_segments` accepts either spelling.
Each event is one segment whose reference is the human commentary of that event; the judge prefers the candidate
better aligned with it (semantic alignment first, style as tie-breaker; see `prompts.py`).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from streaming_vlm.errors import UserError
from streaming_vlm.eval.segments import Segment, join_texts

HF_DATASET = "stdKonjac/LiveSports-3K"
HF_CONFIG = "LiveSports_3K_CC"
HF_SPLIT = "test"
HF_FIELDS = ("video_id", "event_id", "begin", "end", "event_title", "preasr_text", "event_asr_text")


def _number(value: Any, field: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserError(f"{where}: '{field}' must be a number of seconds, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise UserError(f"{where}: '{field}' must be a number of seconds, got {value!r}") from None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def event_row_from_hf(row: Mapping[str, Any], where: str = "LiveSports row") -> dict[str, Any]:
    """Map one HF LiveSports-3K-CC row to our event row. Missing required fields are a UserError."""
    missing = [f for f in ("video_id", "event_id", "begin", "end", "event_asr_text") if f not in row]
    if missing:
        raise UserError(f"{where}: missing field(s) {', '.join(missing)} (expected {', '.join(HF_FIELDS)})")
    start, end = _number(row["begin"], "begin", where), _number(row["end"], "end", where)
    if not end > start:
        raise UserError(f"{where}: 'end' ({end:g}) must be after 'begin' ({start:g})")
    return {
        "video": _text(row["video_id"]),
        "event_id": _text(row["event_id"]),
        "start": start,
        "end": end,
        "title": _text(row.get("event_title")),
        "preasr": _text(row.get("preasr_text")),
        "reference": _text(row["event_asr_text"]),
    }


def is_livesports_row(row: Mapping[str, Any]) -> bool:
    return "event_asr_text" in row or ("event_id" in row and "reference" in row)


def livesports_segments(rows: Iterable[Mapping[str, Any]]) -> list[Segment]:
    """One segment per event, in input order. Rows may be HF rows or our event rows."""
    segments, seen = [], set()
    for number, row in enumerate(rows, start=1):
        where = f"LiveSports row {number}"
        if "event_asr_text" in row:
            row = event_row_from_hf(row, where)
        for field in ("video", "event_id", "start", "end", "reference"):
            if field not in row:
                raise UserError(f"{where}: missing field '{field}'")
        video, event_id = _text(row["video"]), _text(row["event_id"])
        start, end = _number(row["start"], "start", where), _number(row["end"], "end", where)
        segment_id = f"{video}#{event_id}"
        if segment_id in seen:
            raise UserError(f"{where}: event {event_id} of video {video} appears twice")
        seen.add(segment_id)
        segments.append(
            Segment(
                id=segment_id,
                video=video,
                start=start,
                end=end,
                reference=join_texts([_text(row["reference"])]),
                title=_text(row.get("title")),
                event_id=event_id,
            )
        )
    return segments
