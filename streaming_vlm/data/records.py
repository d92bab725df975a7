"""The one internal record every data source maps to: a video, a time span, and timed words.

Times are absolute seconds in the source video. A word is `(start, end, text)`; it belongs to the second in which
it ENDS (see `stream_template`). `previous` is commentary said before `start` that the source already carries
(LiveCC's `previous` field, LiveSports' `preasr_text`); chunkers may build it from earlier words instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Word = tuple[float, float, str]


@dataclass
class StreamRecord:
    video: str  # absolute or root-resolved path to the video file
    start: float  # span start, absolute video seconds
    end: float  # span end, absolute video seconds
    words: list[Word] = field(default_factory=list)  # timed words inside [start, end], sorted by end time
    previous: str = ""  # commentary before `start`, as given by the source
    title: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # source-specific extras (ids, line number, event log path)

    @property
    def duration(self) -> float:
        return self.end - self.start

    def words_between(self, t0: float, t1: float) -> list[Word]:
        """Words whose end time falls in (t0, t1]; the same rule the template uses to assign words to seconds."""
        return [w for w in self.words if t0 < w[1] <= t1]
