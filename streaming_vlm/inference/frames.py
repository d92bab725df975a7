"""Frame sources: anything that yields the stream's whole seconds as template `Second`s, in order.

The engine only needs an iterator of `Second`s with absolute timestamps, so a live source (a camera, an RTMP
reader) plugs in by implementing `FrameSource`. Two sources ship:

- `VideoFrameSource`: a file, read with decord at a strict `fps` (the default; `--fps 4` gives 4 frames, i.e. two
  temporal patches, per second);
- `SyntheticFrameSource`: random frames of a given size, for benchmarks and tests that need no file.
"""

from __future__ import annotations

import math
from typing import Iterator, Protocol, runtime_checkable

import numpy as np

from streaming_vlm.data.stream_template import Second
from streaming_vlm.data.video import VideoError, VideoReader
from streaming_vlm.errors import UserError


@runtime_checkable
class FrameSource(Protocol):
    fps: float

    @property
    def duration(self) -> float | None:
        """Seconds of stream this source will yield, or None for a live source."""

    def __iter__(self) -> Iterator[Second]: ...


class VideoFrameSource:
    """A video file read with decord at `fps`, from `start` to `end` (default: the end of the file)."""

    def __init__(self, path, fps: float = 2.0, start: float = 0.0, end: float | None = None, block: int = 16):
        if fps <= 0:
            raise UserError(f"fps must be > 0, got {fps}")
        self.fps = float(fps)
        self.start, self.end, self.block = float(start), end, block
        self.reader = VideoReader(path, fps=self.fps)
        try:
            self.file_duration = self.reader.duration  # opens the file: missing/corrupt fails here, not mid-stream
        except VideoError as err:
            raise UserError(str(err)) from None

    @property
    def duration(self) -> float:
        end = self.file_duration if self.end is None else min(self.end, self.file_duration)
        return max(0.0, end - self.start)

    def __iter__(self) -> Iterator[Second]:
        try:
            yield from self.reader.iter_seconds(self.start, self.end, block=self.block)
        except VideoError as err:
            raise UserError(str(err)) from None


class SyntheticFrameSource:
    """`seconds` seconds of random uint8 frames (height × width) at `fps`, with absolute times from `start`."""

    def __init__(self, seconds: float, fps: float = 2.0, height: int = 448, width: int = 448, start: float = 0.0,
                 seed: int = 0):
        if fps <= 0:
            raise UserError(f"fps must be > 0, got {fps}")
        self.seconds, self.fps, self.height, self.width = float(seconds), float(fps), height, width
        self.start = float(start)
        self.rng = np.random.default_rng(seed)

    @property
    def duration(self) -> float:
        return self.seconds

    def __iter__(self) -> Iterator[Second]:
        first = math.ceil(round(self.start * self.fps, 6))
        for s in range(int(math.floor(self.start)), int(math.ceil(self.start + self.seconds))):
            ticks = range(max(first, math.ceil(round(s * self.fps, 6))), math.ceil(round((s + 1) * self.fps, 6)))
            times = [k / self.fps for k in ticks]
            frames = self.rng.integers(0, 256, size=(len(times), self.height, self.width, 3), dtype=np.uint8)
            yield Second(float(s), float(s + 1), frames, times)


def open_source(path, fps: float = 2.0, start: float = 0.0, end: float | None = None, **live) -> FrameSource:
    """What --video_path names: a file (`VideoFrameSource`), or a URL, a V4L2 device or `-` (stdin), read live
    (`live_source.LiveFrameSource`, which takes the `live` options: max_lag, stall_timeout)."""
    from streaming_vlm.inference.live_source import LiveFrameSource, is_live

    if is_live(path):
        return LiveFrameSource(str(path), fps, start=start, end=end, **live)
    return VideoFrameSource(path, fps, start=start, end=end)
