"""Writing the commentary as it happens: WebVTT cues and JSON lines, flushed after every second.

WebVTT: one cue per stream second, a silent one as `...` (the model's silence marker), so cues tile the stream and a
player shows the commentator listening; no cue ends past the video. An answer is a two-line cue (`Q: …` / `A: …`)
from the question's time, overlapping the next second's (WebVTT allows it). JSON lines: `segment` {start, end, text
("" when silent)}, `answer` {time, question, text} and, for a live source, `skipped` {start, end, reason: "behind"
or "gap"} (no VTT cue). A path target is a `PartialOutput` (streaming_vlm/output_files.py): `close(commit=True)`
publishes it at a clean end; `close(commit=False)` keeps the `.partial` file and any existing output.
"""

from __future__ import annotations

import json
import sys

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
    """A target (None or "-": stdout; a path: a `PartialOutput`), flushed a piece at a time."""

    def __init__(self, target: str | None = None):
        if target is None or target == "-":
            self.fh, self.owned = sys.stdout, False
        else:
            self.fh, self.owned = PartialOutput(target), True

    def write(self, text: str) -> None:
        self.fh.write(text)
        self.fh.flush()

    def close(self, commit: bool = True) -> None:
        if self.owned:
            self.fh.commit() if commit else self.fh.keep()


class VttWriter(_Writer):
    def __init__(self, target: str | None, duration: float | None = None):
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
