"""The unit a judge compares: a `Segment` of one video with its human reference commentary.

Inf-Streams-Eval (StreamingVLM paper): each game's reference commentary, rows
`{"video", "title", "content": [[start_s, end_s, text], ...], "preasr"}`, is cut into fixed windows of
`segment_seconds` (100 s) on the absolute video clock: (0, 100], (100, 200], ... A reference item belongs to the
window in which it ENDS (items ending at or before 0 s are in none), the same (start, end] rule used for system
outputs (see `predictions.candidate_text`) and for training words (`StreamRecord.words_between`). Windows with
fewer than `min_words` (200) reference words are dropped: there is too little human commentary in them to judge
against. Several rows with the same video are merged (a game split into halves stays one game).

LiveSports-3K-CC events become segments too (`livesports.py`): one per event, reference = `event_asr_text`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from streaming_vlm.errors import UserError

DEFAULT_SEGMENT_SECONDS = 100.0
DEFAULT_MIN_WORDS = 200


@dataclass(frozen=True)
class Segment:
    id: str  # unique within an evaluation: "video#start-end" (Inf-Streams) or "video#event_id" (LiveSports)
    video: str
    start: float  # exclusive: outputs must END after it
    end: float  # inclusive
    reference: str  # the human commentary the judge compares against
    title: str = ""
    event_id: str | None = None  # LiveSports: outputs tagged with this event id belong here whatever their time

    @property
    def reference_words(self) -> int:
        return count_words(self.reference)


def count_words(text: str) -> int:
    return len(text.split())


def join_texts(texts: Iterable[str]) -> str:
    """Join text pieces with single spaces, whatever spacing each piece carried."""
    return " ".join(" ".join(texts).split())


def format_seconds(t: float) -> str:
    return f"{t:g}"


def _content_items(row: dict[str, Any], where: str) -> list[tuple[float, float, str]]:
    content = row.get("content")
    if not isinstance(content, list):
        raise UserError(f"{where}: 'content' must be a list of [start, end, text]")
    items = []
    for i, item in enumerate(content):
        ok = isinstance(item, (list, tuple)) and len(item) == 3
        if ok:
            s, e, text = item
            ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (s, e)) and isinstance(text, str)
        if not ok:
            raise UserError(f"{where}: content item {i} is not [start, end, text]: {str(item)[:80]}")
        items.append((float(s), float(e), text))
    return items


def window_index(t: float, length: float) -> int:
    """Index k of the window (k*length, (k+1)*length] that contains time t (exact (s, e] comparisons)."""
    k = math.ceil(t / length) - 1
    while k * length >= t:
        k -= 1
    while (k + 1) * length < t:
        k += 1
    return k


def inf_streams_segments(
    game_rows: Iterable[dict[str, Any]],
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    min_words: int = DEFAULT_MIN_WORDS,
) -> list[Segment]:
    """Cut reference game rows into `segment_seconds` windows; keep those with at least `min_words` words."""
    if not segment_seconds > 0:
        raise UserError(f"segment length must be positive, got {segment_seconds}")
    if min_words < 0:
        raise UserError(f"minimum word count must be >= 0, got {min_words}")
    items_by_video: dict[str, list[tuple[float, float, str]]] = {}
    titles: dict[str, str] = {}
    for number, row in enumerate(game_rows, start=1):
        video = row.get("video")
        if not isinstance(video, str) or not video:
            raise UserError(f"reference row {number}: missing 'video' (expected Inf-Streams rows with video/content)")
        items_by_video.setdefault(video, []).extend(_content_items(row, f"reference row {number} ({video})"))
        titles.setdefault(video, str(row.get("title") or ""))

    segments = []
    for video in sorted(items_by_video):
        windows: dict[int, list[tuple[float, str]]] = {}
        for _, end, text in items_by_video[video]:
            if end <= 0:  # ends before the video starts: in no window
                continue
            windows.setdefault(window_index(end, segment_seconds), []).append((end, text))
        for k in sorted(windows):
            start, stop = k * segment_seconds, (k + 1) * segment_seconds
            pieces = [text for _, text in sorted(windows[k], key=lambda p: p[0])]
            reference = join_texts(pieces)
            if count_words(reference) < min_words:
                continue
            segments.append(
                Segment(
                    id=f"{video}#{format_seconds(start)}-{format_seconds(stop)}",
                    video=video,
                    start=start,
                    end=stop,
                    reference=reference,
                    title=titles[video],
                )
            )
    return segments
