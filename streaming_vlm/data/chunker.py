"""Records -> training windows: overlapped windows over whole games (stage 1), whole clips (stage 2), and rows
that are already windows (the released `s12w24` files), used as they are.

Stage "stream": a record spanning a whole game is cut into windows of `window` seconds every `stride` seconds
(defaults 24/12, so consecutive windows overlap by 12 s). Windows are
aligned to whole seconds of the video, start at floor(record.start) and end no later than ceil(record.end); a record
shorter than one window gives one window over its whole span. A window is kept when at least `min_words`
(default 2 x window) words END inside it, (t0, t1].

Stage "clip": the record is one window over its whole span, [floor(start), ceil(end)]: no overlap, no re-cutting.

Stage "window": the rows were cut before release (upstream's `train_s12w24_with_seeks.jsonl`: 24 s windows every
12 s, the commentary before each in `previous`). Each row is one sample over its whole span, exactly as "clip", and
is never cut again; whole-game files keep stage "stream". A pre-cut row and the same 24 s cut from its whole game
give the same tokens (tests/test_data_precut.py).

Previous text: the record's own `previous`, then every word that ends at or before the window's start, truncated to
its first `text_sink` and last `text_sliding_window` TOKENS (`stream_template.truncate_tokens`). Only the first and
last max(sink, window) words are tokenized: Qwen's pre-tokenizer never joins two space-separated words into one
token and every word is at least one token, so the result equals truncating the whole text.

Times are absolute video seconds throughout; a window starting at 1012 s is encoded as `Time=1012.0-1013.0s` and
`<1012.2 seconds>`, never restarted near 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streaming_vlm.data.bad_samples import EMPTY_COMMENTARY, WORDS_OUTSIDE_SPAN, BadSample
from streaming_vlm.data.records import StreamRecord
from streaming_vlm.data.stream_template import truncate_tokens

STAGES = ("stream", "clip", "window")
SPAN_TOLERANCE = 0.25  # seconds a word's end may stray outside its record's span (rounding in the sources)


@dataclass(frozen=True)
class Chunk:
    """One training sample: record `record` of the source, seconds [start, end) of its video."""

    record: int
    start: int  # absolute video seconds, whole
    end: int
    n_words: int  # words that end in (start, end]


def validate_record(rec: StreamRecord, tolerance: float = SPAN_TOLERANCE) -> None:
    """Raise BadSample for a record with no commentary, or with words ending outside its span."""
    if not rec.words:
        raise BadSample(EMPTY_COMMENTARY, f"{rec.meta.get('where', rec.video)}: no words")
    outside = [w for w in rec.words if w[1] < rec.start - tolerance or w[1] > rec.end + tolerance]
    if outside:
        s, e, w = outside[0]
        raise BadSample(WORDS_OUTSIDE_SPAN, f"{rec.meta.get('where', rec.video)}: {len(outside)} word(s) end "
                                            f"outside the span [{rec.start:g}, {rec.end:g}], e.g. {w!r} at {e:g}")


def span_seconds(rec: StreamRecord) -> tuple[int, int]:
    """The record's span in whole seconds: [floor(start), ceil(end))."""
    t0 = math.floor(rec.start + 1e-6)
    return t0, max(t0 + 1, math.ceil(rec.end - 1e-6))


def count_words(rec: StreamRecord, t0: float, t1: float) -> int:
    return sum(1 for w in rec.words if t0 < w[1] <= t1)


def stream_windows(rec: StreamRecord, window: int = 24, stride: int = 12,
                   min_words: int | None = None) -> list[tuple[int, int, int]]:
    """(t0, t1, n_words) of the overlapped windows of a whole-game record that keep >= min_words words."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1 s, got {window}/{stride}")
    min_words = 2 * window if min_words is None else min_words
    lo, hi = span_seconds(rec)
    starts = range(lo, hi - window + 1, stride) if hi - lo >= window else [lo]
    out = []
    for t0 in starts:
        t1 = min(t0 + window, hi)
        n = count_words(rec, t0, t1)
        if n >= min_words:
            out.append((t0, t1, n))
    return out


def clip_window(rec: StreamRecord) -> tuple[int, int, int]:
    """The whole record as one window (stage 2)."""
    t0, t1 = span_seconds(rec)
    return t0, t1, count_words(rec, t0, t1)


def chunks_for(index: int, rec: StreamRecord, stage: str = "stream", window: int = 24, stride: int = 12,
               min_words: int | None = None) -> list[Chunk]:
    if stage == "stream":
        return [Chunk(index, t0, t1, n) for t0, t1, n in stream_windows(rec, window, stride, min_words)]
    if stage in ("clip", "window"):
        t0, t1, n = clip_window(rec)
        return [Chunk(index, t0, t1, n)] if n >= (1 if min_words is None else min_words) else []
    raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


def second_texts(rec: StreamRecord, t0: int, t1: int) -> dict[int, str]:
    """Words ending in (t0, t1], joined per second: a word ending at e belongs to second ceil(e) - 1."""
    per: dict[int, list[str]] = {}
    for _, e, w in rec.words:
        if t0 < e <= t1:
            per.setdefault(math.ceil(e) - 1, []).append(w)
    return {s: " ".join(ws) for s, ws in per.items()}


def previous_text(rec: StreamRecord, t0: float, tokenizer, text_sink: int = 512,
                  text_sliding_window: int = 512) -> str:
    """The record's `previous` + words ending at or before t0, cut to the first/last tokens (sink/window)."""
    words = rec.previous.split() + [w for _, e, w in rec.words if e <= t0]
    keep = max(text_sink, text_sliding_window)
    if keep <= 0 or not words:
        return ""
    if len(words) > 2 * keep:
        words = words[:keep] + words[-keep:]
    return truncate_tokens(" ".join(words), tokenizer, text_sink, text_sliding_window)
