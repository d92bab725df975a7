"""The baseline commentator's protocol: what one request to a vision chat model holds (StreamingVLM's GPT baseline).

A video is cut into windows of `window_seconds` on the absolute video clock (0-100, 100-200, ..., the last one ends
with the video). Each window becomes ONE chat-completions request, sent when the previous window of the same video
has been answered, because its answer is part of the next request:

- system: `SYSTEM_PROMPT` (plain-text, present-tense, on-air play-by-play; only what is clearly visible; no invented
  scores or names; 2-6 concise sentences that continue the previous commentary without repeating it);
- user, a text part first: the query, then "Time range: S ~ E s. Frames sampled at F fps (capped).", then
  "Previous commentary (context): ..." when there is any (the last `context_chars` characters of this video's
  earlier answers; for a LiveSports event, its pre-event commentary);
- then the window's frames as `image_url` parts: sampled at `fps` (the first frame at or after each tick, the same
  reader as training and the engine), thinned to at most `max_frames` spread evenly over the window, resized to
  `frame_height` px high (aspect kept) and JPEG-encoded at `jpeg_quality` as base64 data URIs;
- `max_tokens`; temperature is left to the API's default unless given.

The defaults follow the upstream GPT baseline script as REFERENCE.md describes it (100 s windows, 2 fps capped at 60
frames, 360 px, JPEG 85, 400 tokens, API-default temperature). The answer of a window becomes one prediction row
{"video", "start", "end", "text"}: its END time puts it in the judge's segment (start, end].
"""

from __future__ import annotations

import base64
import io
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streaming_vlm.data.video import VideoReader
from streaming_vlm.errors import UserError

SYSTEM_PROMPT = (
    "You are a live sports commentator on air. Write plain text in the present tense, as play-by-play commentary "
    "for the frames you are shown. Describe only what is clearly visible; do not invent scores, player names or "
    "events. Write 2 to 6 concise sentences. Continue from the previous commentary without repeating it."
)
DEFAULT_QUERY = "Provide live commentary for this part of the match."


@dataclass(frozen=True)
class BaselineProtocol:
    window_seconds: float = 100.0
    fps: float = 2.0
    max_frames: int = 60
    frame_height: int = 360
    jpeg_quality: int = 85
    max_tokens: int = 400
    temperature: float | None = None  # None: the API's default
    context_chars: int = 2000  # how much of the earlier commentary is passed as context
    query: str = DEFAULT_QUERY
    system_prompt: str = SYSTEM_PROMPT

    def __post_init__(self):
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UserError(message)

        need(self.window_seconds > 0, f"window length must be > 0 s, got {self.window_seconds}")
        need(self.fps > 0, f"fps must be > 0, got {self.fps}")
        need(self.max_frames >= 1, f"max frames must be >= 1, got {self.max_frames}")
        need(self.frame_height >= 16, f"frame height must be >= 16 px, got {self.frame_height}")
        need(1 <= self.jpeg_quality <= 95, f"JPEG quality must be in [1, 95], got {self.jpeg_quality}")
        need(self.max_tokens >= 1, f"max tokens must be >= 1, got {self.max_tokens}")
        need(self.temperature is None or self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        need(self.context_chars >= 0, f"context characters must be >= 0, got {self.context_chars}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def windows(start: float, end: float, length: float) -> list[tuple[float, float]]:
    """[(s, e)] covering [start, end): cut on the absolute clock at multiples of `length` (the judge's segments)."""
    out, s = [], float(start)
    while s < end:
        boundary = (np.floor(s / length + 1e-9) + 1) * length
        e = min(float(boundary), float(end))
        out.append((s, e))
        s = e
    return out


def thin(count: int, max_frames: int) -> list[int]:
    """Indices of at most `max_frames` of `count` samples, spread evenly from the first to the last."""
    if count <= max_frames:
        return list(range(count))
    return [int(round(i)) for i in np.linspace(0, count - 1, max_frames)]


def window_frames(reader: VideoReader, protocol: BaselineProtocol, start: float, end: float) -> np.ndarray:
    """The frames one window sends: its `fps` ticks thinned to `max_frames`; only those are decoded."""
    ticks = reader.indices_between(start, end)
    return reader.frames_at([ticks[i] for i in thin(len(ticks), protocol.max_frames)]).frames


def jpeg_data_uri(frame: np.ndarray, height: int, quality: int) -> str:
    from PIL import Image

    image = Image.fromarray(frame)
    width = max(1, round(image.width * height / image.height))
    image = image.resize((width, height), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def context_tail(previous: str, chars: int) -> str:
    previous = " ".join(previous.split())
    return previous[-chars:].lstrip() if chars else ""


def user_text(protocol: BaselineProtocol, start: float, end: float, previous: str) -> str:
    lines = [protocol.query, f"Time range: {start:g} ~ {end:g} s. Frames sampled at {protocol.fps:g} fps (capped)."]
    context = context_tail(previous, protocol.context_chars)
    if context:
        lines.append(f"Previous commentary (context): {context}")
    return "\n".join(lines)


def request_body(
    protocol: BaselineProtocol, model: str, frames: np.ndarray, start: float, end: float, previous: str
) -> dict[str, Any]:
    """The chat-completions body for one window; `frames` are the window's chosen frames (`window_frames`)."""
    images = [
        {"type": "image_url", "image_url": {"url": jpeg_data_uri(frame, protocol.frame_height, protocol.jpeg_quality)}}
        for frame in frames
    ]
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": protocol.system_prompt},
            {"role": "user", "content": [{"type": "text", "text": user_text(protocol, start, end, previous)}] + images},
        ],
        "max_tokens": protocol.max_tokens,
    }
    if protocol.temperature is not None:
        body["temperature"] = protocol.temperature
    return body
