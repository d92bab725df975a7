"""A system's outputs (the model's or a baseline's) and the candidate text they give each segment.

Prediction files are JSON lines in one of two public row formats (mixing them in one file is fine):

- per-second outputs, as the streaming engine emits them:  {"video": ..., "start": s, "end": e, "text": ...}
- a whole game at once, like the reference rows:          {"video": ..., "content": [[s, e, text], ...]}

Either row may carry "event_id" (LiveSports): its outputs then belong to that event whatever their times.
A row {"record": "header", ...} (how the file was made, e.g. by `eval baseline`) is metadata: it is kept in
`SystemOutputs.header`, not read as a prediction and not counted as skipped.
Lines that are not JSON or not one of these rows are skipped and counted (`SystemOutputs.skipped_lines`); a file in
which no line is usable is an error.

The candidate of a segment is the concatenation, in time order, of the outputs whose END time falls in
(segment.start, segment.end]. The silence output " ..." (or an empty text) contributes nothing, and the " ..."
placeholder the streaming template appends to every turn is removed. A segment for which the system emitted no
output row at all (not even silence) has no candidate: `candidate_text` returns None and the segment is reported
as missing for that system (see `win_rate.py` for how missing segments count).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from streaming_vlm.errors import UserError
from streaming_vlm.eval.jsonl import read_rows_lenient
from streaming_vlm.eval.segments import Segment, join_texts

SILENCE = "..."


@dataclass(frozen=True)
class Output:
    start: float
    end: float
    text: str
    event_id: str | None = None


@dataclass
class SystemOutputs:
    name: str  # "model" or "baseline", used in messages and reports
    by_video: dict[str, list[Output]] = field(default_factory=dict)  # sorted by end time
    rows: int = 0  # usable rows read
    skipped_lines: list[int] = field(default_factory=list)  # line numbers (or row indices) that were skipped
    skipped_reasons: list[str] = field(default_factory=list)  # the first few reasons, for the report
    source: str = ""  # file path, when read from a file
    header: dict[str, Any] | None = None  # the file's {"record": "header"} row, if it has one

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "videos": len(self.by_video),
            "skipped_lines": len(self.skipped_lines),
            "skipped_examples": self.skipped_reasons,
        }


def clean_output_text(text: str) -> str:
    """Strip the silence placeholder: " ..." alone is silence; a trailing " ..." on spoken text is dropped."""
    text = " ".join(text.split())
    if text == SILENCE:
        return ""
    if text.endswith(" " + SILENCE):
        text = text[: -len(SILENCE) - 1].rstrip()
    return text


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def outputs_in_row(row: Any) -> list[Output]:
    """The outputs one prediction row holds. Raises ValueError with a short reason when the row is not usable."""
    if not isinstance(row, Mapping):
        raise ValueError("not a JSON object")
    video = row.get("video")
    if not isinstance(video, str) or not video:
        raise ValueError("no 'video' string")
    event_id = None if row.get("event_id") is None else str(row["event_id"])
    if "content" in row:
        content = row["content"]
        if not isinstance(content, list):
            raise ValueError("'content' is not a list")
        items = content
    elif all(k in row for k in ("start", "end", "text")):
        items = [[row["start"], row["end"], row["text"]]]
    else:
        raise ValueError("needs 'start', 'end', 'text' or 'content'")
    outputs = []
    for item in items:
        if not (isinstance(item, (list, tuple)) and len(item) == 3):
            raise ValueError("a content item is not [start, end, text]")
        start, end, text = _seconds(item[0]), _seconds(item[1]), item[2]
        if start is None or end is None:
            raise ValueError("'start'/'end' are not numbers")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise ValueError("'text' is not a string")
        outputs.append(Output(start, end, text, event_id))
    return outputs


def outputs_from_rows(rows: Iterable[tuple[int, Any]], name: str, source: str = "") -> SystemOutputs:
    """Build a system's outputs from (line_number, row) pairs, skipping and counting unusable rows."""
    result = SystemOutputs(name=name, source=source)
    for number, row in rows:
        if isinstance(row, Mapping) and row.get("record") == "header":
            result.header = dict(row)
            continue
        try:
            outputs = outputs_in_row(row)
        except ValueError as err:
            result.skipped_lines.append(number)
            if len(result.skipped_reasons) < 5:
                result.skipped_reasons.append(f"line {number}: {err}")
            continue
        result.rows += 1
        video = row["video"]
        result.by_video.setdefault(video, []).extend(outputs)
    for outputs in result.by_video.values():
        outputs.sort(key=lambda o: o.end)  # stable: equal end times keep file order
    return result


def load_outputs(path: str | os.PathLike, name: str) -> SystemOutputs:
    """Read a prediction file. Missing file, empty file, or no usable line at all: UserError."""
    parsed, not_json = read_rows_lenient(path, f"{name} predictions")
    result = outputs_from_rows(parsed, name, source=str(path))
    result.skipped_lines = sorted(result.skipped_lines + not_json)
    result.skipped_reasons = [f"line {n}: not valid JSON" for n in not_json[:5]] + result.skipped_reasons
    result.skipped_reasons = result.skipped_reasons[:5]
    if result.rows == 0:
        if not result.skipped_lines:
            raise UserError(f"{name} predictions file {path} holds no rows")
        raise UserError(
            f"{name} predictions file {path}: none of its {len(result.skipped_lines)} lines is a prediction row "
            f"({result.skipped_reasons[0]}; expected {{video, start, end, text}} or {{video, content}})"
        )
    return result


def outputs_from_segments(
    outputs: Mapping[str, Iterable[Mapping[str, Any]]] | Iterable[Mapping[str, Any]], name: str
) -> SystemOutputs:
    """In-memory outputs, for callers that already hold them (a trainer callback, the `generate` step).

    Accepts either {video: [{"start", "end", "text"}, ...]} (what the streaming engine returns per video) or a list of
    prediction rows as they would appear in a file.
    """
    if isinstance(outputs, Mapping):
        rows = [{**dict(seg), "video": video} for video, segs in outputs.items() for seg in segs]
    else:
        rows = list(outputs)
    return outputs_from_rows(enumerate(rows, start=1), name, source="(in memory)")


def candidate_text(outputs: SystemOutputs, segment: Segment) -> str | None:
    """The system's commentary for a segment; None when it emitted no output row for it (missing)."""
    matched = [
        o
        for o in outputs.by_video.get(segment.video, ())
        if (segment.event_id is not None and o.event_id == segment.event_id)
        or ((segment.event_id is None or o.event_id is None) and segment.start < o.end <= segment.end)
    ]
    if not matched:
        return None
    return join_texts(clean_output_text(o.text) for o in matched)
