"""Frame sources: anything that yields the stream's whole seconds as template `Second`s, in order.

The engine only needs an iterator of `Second`s with absolute timestamps, so a live source (a camera, an RTMP
reader) plugs in by implementing `FrameSource`. `VideoFrameSource` reads a file at a strict `fps` (`--fps 4` gives
4 frames, i.e. two temporal patches, per second): the frames training's decord reader takes, decoded with PyAV on
a read-ahead thread (`video_file.py`).
"""

from __future__ import annotations

import os
from typing import Iterator, Protocol, runtime_checkable

from streaming_vlm.data.stream_template import Second
from streaming_vlm.errors import UserError
from streaming_vlm.inference.video_file import ReadAhead, probe, read_seconds


@runtime_checkable
class FrameSource(Protocol):
    fps: float

    @property
    def duration(self) -> float | None:
        """Seconds of stream this source will yield, or None for a live source."""

    def __iter__(self) -> Iterator[Second]: ...


class VideoFrameSource:
    """A video file at `fps`, from `start` to `end` (default: the end of the file), read `read_ahead` seconds
    ahead of the consumer on a background thread."""

    live = False  # a file's next second is there already: the engine may read it while a reply decodes

    def __init__(self, path, fps: float = 2.0, start: float = 0.0, end: float | None = None, read_ahead: int = 4):
        if fps <= 0:
            raise UserError(f"fps must be > 0, got {fps}")
        self.path, self.fps = str(path), float(fps)
        self.start, self.end, self.read_ahead = float(start), end, read_ahead
        if not os.path.isfile(self.path):
            raise UserError(f"video not found: {self.path}")
        if os.path.getsize(self.path) == 0:
            raise UserError(f"video is empty (0 bytes): {self.path}")
        native, frames = probe(self.path)  # opens the file: a corrupt one fails here, not mid-stream
        self.file_duration = frames / native
        if self.start > 0 and self.start >= self.file_duration:
            raise UserError(f"start {self.start:g} s is past the end of the video ({self.file_duration:.1f} s): {path}")

    @property
    def duration(self) -> float:
        end = self.file_duration if self.end is None else min(self.end, self.file_duration)
        return max(0.0, end - self.start)

    def __iter__(self) -> Iterator[Second]:
        return iter(ReadAhead(read_seconds(self.path, self.fps, self.start, self.end), self.read_ahead))
