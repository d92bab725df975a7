"""Writing the commentary as it happens: WebVTT cues and JSON lines, flushed after every second.

WebVTT: `WEBVTT`, a blank line, then one cue per stream second, in order. A silent second is written too, as
`...` (the model's own silence marker), so the cues tile the stream with no gaps and a player shows that the
commentator is listening; the JSON lines carry `""` for it. A cue never ends past the end of the video. An
interactive answer is a two-line cue (`Q: …` / `A: …`) starting where the question was asked; it overlaps the next
second's cue, which WebVTT allows (cue start times stay non-decreasing).

JSON lines: `{"type": "segment", "start", "end", "text"}` per second, `{"type": "answer", "time", "question",
"text"}` per answer, and for a live source `{"type": "skipped", "start", "end", "reason"}` per run of seconds never
processed (reason "behind": dropped to keep real time; "gap": the stream had no frame there). The VTT has no cue
for a skipped second.

A file target is a `PartialOutput` (streaming_vlm/output_files.py): cues go to `<path>.partial`, flushed per cue, and
`close(commit=True)` renames it onto the path at a clean end; `close(commit=False)` (a failed run) keeps the
`.partial` file and leaves an existing output as it was.
"""

from __future__ import annotations

import json
import sys
from typing import IO

from streaming_vlm.output_files import PartialOutput

SILENT_CUE = "..."


def vtt_time(seconds: float) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def cue_text(text: str) -> str:
    """One line of cue payload: no line breaks (a blank line ends a cue), no `-->`, HTML-escaped."""
    text = " ".join(str(text).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("--&gt;", "-&gt;")


class _Writer:
    """A target (None or "-": stdout; a file object; a path: a `PartialOutput`) written and flushed a piece at a
    time; `close(commit)` publishes or keeps a path's `.partial` file."""

    def __init__(self, target: str | IO | None = None):
        if target is None or target == "-":
            self.fh, self.owned = sys.stdout, False
        elif hasattr(target, "write"):
            self.fh, self.owned = target, False
        else:
            self.fh, self.owned = PartialOutput(target), True

    def write(self, text: str) -> None:
        self.fh.write(text)
        self.fh.flush()

    def close(self, commit: bool = True) -> None:
        if self.owned:
            self.fh.commit() if commit else self.fh.keep()


class VttWriter(_Writer):
    def __init__(self, target: str | IO | None, duration: float | None = None):
        super().__init__(target)
        self.duration = duration
        self.last_start = 0.0
        self.write("WEBVTT\n\n")

    def _cue(self, start: float, end: float, lines: list[str]) -> None:
        start = max(start, self.last_start)
        if self.duration is not None and self.duration > start:
            end = min(end, self.duration)
        end = max(end, start + 0.001)
        self.last_start = start
        self.write(f"{vtt_time(start)} --> {vtt_time(end)}\n" + "\n".join(lines) + "\n\n")

    def segment(self, segment: dict) -> None:
        text = cue_text(segment["text"]) or SILENT_CUE
        self._cue(segment["start"], segment["end"], [text])

    def answer(self, answer: dict) -> None:
        t = answer["time"]
        self._cue(t, t + 1.0, [f"Q: {cue_text(answer['question'])}", f"A: {cue_text(answer['text']) or SILENT_CUE}"])


class JsonLinesWriter(_Writer):
    def segment(self, segment: dict) -> None:
        self.write(json.dumps({"type": "segment", "start": segment["start"], "end": segment["end"],
                               "text": segment["text"]}, ensure_ascii=False) + "\n")

    def answer(self, answer: dict) -> None:
        self.write(json.dumps({"type": "answer", "time": answer["time"], "question": answer["question"],
                               "text": answer["text"]}, ensure_ascii=False) + "\n")

    def skipped(self, event: dict) -> None:
        self.write(json.dumps({k: event[k] for k in ("type", "start", "end", "reason")}) + "\n")


class ConsoleWriter(_Writer):
    """Human-readable lines on stdout (when no --output_path is given, and for interactive answers)."""

    def segment(self, segment: dict) -> None:
        text = segment["text"] or SILENT_CUE
        self.write(f"[{vtt_time(segment['start'])} --> {vtt_time(segment['end'])}] {text}\n")

    def answer(self, answer: dict) -> None:
        self.write(f"Q: {answer['question']}\nA: {answer['text'] or SILENT_CUE}\n")

    def skipped(self, event: dict) -> None:
        self.write(f"[{vtt_time(event['start'])} --> {vtt_time(event['end'])}] (skipped: {event['reason']})\n")
