"""Reading a video file for the stream, off the critical path: `read_seconds(path, fps, start, end)`.

The frames are those decord's `VideoReader` (training's reader, `streaming_vlm/data/video.py`) takes: for each tick
k/fps the first native frame at or after it, native index ceil(k / fps · native fps), stamped index / native fps.
What differs is how they are read, so that reading a second of a 50 fps 1080p file does not hold up the model:

- PyAV decodes with the codec's own threads (frame threading) and converts to RGB only the sampled frames; every
  frame is still decoded (H.264 frames depend on each other), but the colour conversion is paid per sampled frame;
- `ReadAhead` runs the decoding on a background thread, a few seconds ahead, so it overlaps the device's work on
  earlier seconds (PyAV releases the GIL while it decodes and converts).

A file that cannot be opened or decoded is a `UserError` with one line.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator

import numpy as np

from streaming_vlm.data.stream_template import Second
from streaming_vlm.errors import UserError


def _open(path: str):
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as err:
        raise UserError(f"cannot decode video {path}: {str(err).splitlines()[0]}") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"no video stream in {path}")
    return container


def probe(path: str) -> tuple[float, int]:
    """(native fps, number of frames) of the file's first video stream."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        native = float(stream.average_rate or stream.guessed_rate or 0)
        frames = stream.frames or round((container.duration or 0) / 1e6 * native)
    finally:
        container.close()
    if native <= 0 or not frames:
        raise UserError(f"video has no frames: {path}")
    return native, int(frames)


def read_seconds(path: str, fps: float, start: float = 0.0, end: float | None = None) -> Iterator[Second]:
    """Whole seconds [s, s+1) from floor(start) to ceil(end) (default: the end of the file), as `Second`s."""
    import av

    native, n_frames = probe(path)
    duration = n_frames / native
    end = duration if end is None else min(end, duration)
    first_second, last_second = int(math.floor(start)), min(math.ceil(end), math.ceil(duration))
    tick, end_tick = math.ceil(round(first_second * fps, 6)), math.ceil(round(math.ceil(end) * fps, 6))

    def target(k: int) -> int:
        return math.ceil(round(k / fps * native, 6))

    container = _open(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    base = stream.start_time or 0
    frames: list[np.ndarray] = []
    times: list[float] = []
    second = first_second
    try:
        if first_second > 0:
            container.seek(base + int(first_second / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if tick >= end_tick or target(tick) >= n_frames:
                break
            if frame.pts is None:
                continue
            index = round(float((frame.pts - base) * stream.time_base) * native)
            if index < target(tick):
                continue
            image = None
            while tick < end_tick and target(tick) <= index:  # ticks that fall on this frame
                image = frame.to_ndarray(format="rgb24") if image is None else image
                t = index / native
                while t >= second + 1:  # earlier seconds are complete
                    yield _second(second, frames, times, frame.height, frame.width)
                    frames, times, second = [], [], second + 1
                frames.append(image)
                times.append(t)
                tick += 1
    except av.error.FFmpegError as err:
        raise UserError(f"cannot decode {path} near {second} s: {err}") from None
    finally:
        container.close()
    height, width = (frames[0].shape[:2] if frames else (stream.height, stream.width))
    while second < last_second:
        yield _second(second, frames, times, height, width)
        frames, times, second = [], [], second + 1


def _second(s: int, frames: list[np.ndarray], times: list[float], height: int, width: int) -> Second:
    batch = np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)
    return Second(float(s), float(s + 1), batch, list(times))


class ReadAhead:
    """Iterate `items` on a background thread, up to `depth` items ahead of the consumer; an exception there is
    raised in the consumer. Closing the iterator (or dropping it) stops the thread."""

    def __init__(self, items: Iterator, depth: int = 4):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        threading.Thread(target=self._pump, args=(items,), name="video-read-ahead", daemon=True).start()

    def _pump(self, items) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(StopIteration())
        except Exception as err:  # noqa: BLE001 - raised in the consumer
            self._put(err)

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self) -> Iterator:
        try:
            while not isinstance(item := self.queue.get(), StopIteration):
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.stop.set()
